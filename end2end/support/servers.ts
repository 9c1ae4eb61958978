import { spawn, ChildProcess } from "node:child_process";
import * as net from "node:net";
import * as path from "node:path";
import * as fs from "node:fs";
import * as os from "node:os";

const root = path.resolve(__dirname, "..", "..");

/** A port free now, below the kernel's ephemeral range: no outgoing connection is ever given
 * it as its source port, so a client reconnecting to it while its server restarts cannot end
 * up connected to itself, and no client socket takes it between this check and the bind. */
export async function freePort(): Promise<number> {
  const [ephemeralStart] = fs.readFileSync("/proc/sys/net/ipv4/ip_local_port_range", "utf8").trim().split(/\s+/).map(Number);
  const low = 20_000;
  const high = Math.max(low + 1_000, ephemeralStart) - 1;
  for (let attempt = 0; attempt < 100; attempt++) {
    const port = low + Math.floor(Math.random() * (high - low));
    const free = await new Promise<boolean>((resolve) => {
      const srv = net.createServer();
      srv.once("error", () => resolve(false));
      srv.listen(port, "127.0.0.1", () => srv.close(() => resolve(true)));
    });
    if (free) return port;
  }
  throw new Error(`no free port in ${low}-${high}`);
}

async function waitFor(what: string, check: () => Promise<boolean>, child: ChildProcess, ms = 30_000) {
  const deadline = Date.now() + ms;
  while (Date.now() < deadline) {
    if (child.exitCode !== null) throw new Error(`${what} exited early with code ${child.exitCode}`);
    if (await check().catch(() => false)) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${what} did not become ready within ${ms} ms`);
}

/** SIGTERM, then wait: a server that has not exited 5 s later is killed and the test fails. */
function stopChild(child: ChildProcess, what = "process"): Promise<void> {
  return new Promise((resolve, reject) => {
    if (child.exitCode !== null || child.signalCode !== null) return resolve();
    const timer = setTimeout(() => {
      child.kill("SIGKILL");
      reject(new Error(`${what} ignored SIGTERM for 5 s and was killed`));
    }, 5_000);
    timer.unref();
    child.once("exit", () => {
      clearTimeout(timer);
      resolve();
    });
    child.kill("SIGTERM");
  });
}

function redisPing(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect(port, "127.0.0.1");
    sock.setTimeout(1000);
    sock.on("connect", () => sock.write("PING\r\n"));
    sock.on("data", (d) => {
      resolve(d.toString().startsWith("+PONG"));
      sock.destroy();
    });
    sock.on("error", () => resolve(false));
    sock.on("timeout", () => {
      resolve(false);
      sock.destroy();
    });
  });
}

export async function startRedis(port?: number) {
  port = port ?? (await freePort());
  // A folder of its own: redis-server loads any snapshot it finds in its folder at start.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), "e2e-redis-"));
  const child = spawn(
    "redis-server",
    ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", dir],
    { stdio: "ignore" },
  );
  await waitFor("redis-server", () => redisPing(port), child);
  return { url: `redis://127.0.0.1:${port}`, port, stop: () => stopChild(child, `redis-server on ${port}`) };
}

export interface AppServer {
  url: string;
  stop: () => Promise<void>;
}

/** Starts the demo binary (built by `cargo leptos build`) on `port` (default: a free one). */
export async function startApp(
  opts: { redisUrl?: string; port?: number; env?: Record<string, string> } = {},
): Promise<AppServer> {
  const bin = path.join(root, "target", "debug", "server");
  if (!fs.existsSync(bin)) throw new Error(`${bin} is missing: run \`cargo leptos build\` first`);
  const port = opts.port ?? (await freePort());
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    LEPTOS_SITE_ADDR: `127.0.0.1:${port}`,
    LEPTOS_SITE_ROOT: "target/site",
    LEPTOS_OUTPUT_NAME: "taskboard",
    RUST_LOG: "warn",
    // One secret for every instance, so a CRM session is valid on all of them.
    SESSION_SECRET: "end-to-end-tests-session-secret-0123456789",
  };
  delete env.REDIS_URL;
  if (opts.redisUrl) env.REDIS_URL = opts.redisUrl;
  Object.assign(env, opts.env ?? {});
  const child = spawn(bin, [], { cwd: root, env, stdio: ["ignore", "inherit", "inherit"] });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(`server on ${url}`, async () => (await fetch(`${url}/health`)).ok, child);
  await checkHydrationAssets(url);
  return { url, stop: () => stopChild(child, `server on ${url}`) };
}

/** Fails clearly when the page asks for WASM the server cannot serve (then nothing hydrates). */
async function checkHydrationAssets(url: string) {
  const html = await (await fetch(url)).text();
  const wasm = html.match(/["'(]([^"'()]*\.wasm)["')]/)?.[1];
  if (!wasm) throw new Error("the page references no .wasm file: hydration scripts missing");
  const resp = await fetch(new URL(wasm, url), { method: "HEAD" });
  if (!resp.ok) {
    throw new Error(
      `the page asks for ${wasm} but the server answers ${resp.status}: ` +
        "target/debug/server was not built by `cargo leptos build` (a plain cargo build differs)",
    );
  }
}

/** Where scripts/adopter-test.sh leaves the CSR + plain axum shape it built from the guide (docs/guide/src/adopt.md):
 * the API's binary and the frontend's files. */
export const notesBuilt = path.join(root, "target", "adopter-csr");

/** Starts the guide's notes API (built by scripts/adopter-test.sh): serving the frontend's
 * files itself (same origin), or alone with `CORS_ORIGINS` naming the page's origin. */
export async function startNotesApi(opts: { files?: boolean; corsOrigins?: string } = {}): Promise<AppServer> {
  const bin = path.join(notesBuilt, "notes-api");
  if (!fs.existsSync(bin)) throw new Error(`${bin} is missing: run scripts/adopter-test.sh first`);
  const port = await freePort();
  const env: NodeJS.ProcessEnv = { ...process.env, NOTES_ADDR: `127.0.0.1:${port}`, RUST_LOG: "warn" };
  delete env.REDIS_URL;
  delete env.CORS_ORIGINS;
  if (opts.files) env.NOTES_FILES = path.join(notesBuilt, "dist");
  if (opts.corsOrigins) env.CORS_ORIGINS = opts.corsOrigins;
  const child = spawn(bin, [], { cwd: root, env, stdio: ["ignore", "inherit", "inherit"] });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(`notes API on ${url}`, async () => (await fetch(`${url}/health`)).ok, child);
  return { url, stop: () => stopChild(child, `notes API on ${url}`) };
}
