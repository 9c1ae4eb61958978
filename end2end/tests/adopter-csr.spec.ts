import { test, expect, Page } from "@playwright/test";
import * as fs from "node:fs";
import * as http from "node:http";
import * as path from "node:path";
import { freePort, notesBuilt, startNotesApi } from "../support/servers";

// The guide's (docs/guide/src/adopt.md) "CSR frontend on a plain axum API", as scripts/adopter-test.sh built it from the
// page's own lines: a page writes a note, and it shows on that page and on another, with the
// page on the API's origin and on another one.

const note = (page: Page, text: string) => page.locator(`li[data-testid="note"][data-text="${text}"]`);

/** Writes `text` on `writer` (with the hook's write: an idempotency key, the answer's position
 * read, even across origins) and sees it there, from the write, and on `reader`, from its event. */
async function writeAndSee(writer: Page, reader: Page, text: string) {
  const reads: string[] = [];
  const onRequest = (r: { method(): string; url(): string }) => {
    if (r.method() === "GET" && /\/api\/notes\/\d+$/.test(new URL(r.url()).pathname)) reads.push(r.url());
  };
  writer.on("request", onRequest);
  const posted = writer.waitForResponse((r) => r.request().method() === "POST" && r.url().endsWith("/api/notes"));
  await writer.getByTestId("new-note").fill(text);
  await writer.getByTestId("save").click();
  const answer = await posted;
  expect(answer.request().headers()["idempotency-key"], "the write carries its key").toMatch(/^[A-Za-z0-9]{32}$/);
  expect(answer.headers()["sse-position"], "and is answered with its position").toMatch(/^[0-9a-f]{12}-[0-9a-f]+-[0-9a-f]+-0$/);
  await expect(note(writer, text)).toHaveCount(1, { timeout: 5_000 });
  await expect(note(reader, text)).toHaveCount(1, { timeout: 5_000 });
  await expect(writer.getByTestId("save-error")).toHaveText("");
  await new Promise((r) => setTimeout(r, 300));
  writer.off("request", onRequest);
  expect(reads, "the writer reads nothing for its own note").toEqual([]);
}

test("same origin: the API serves the page; a note written on one page shows on it and on another", async ({ browser }) => {
  const api = await startNotesApi({ files: true });
  try {
    const pages = [await (await browser.newContext()).newPage(), await (await browser.newContext()).newPage()];
    for (const page of pages) {
      await page.goto(`${api.url}/index.html`);
      await expect(page.getByTestId("status")).toHaveAttribute("data-status", "live", { timeout: 10_000 });
    }
    await writeAndSee(pages[0], pages[1], "written on the first page");
    await writeAndSee(pages[1], pages[0], "and on the second");
  } finally {
    await api.stop();
  }
});

test("another origin: the page names the API (?api=), which lists the page's origin in CORS_ORIGINS", async ({ browser }) => {
  // The page's own origin: a static file server of the built frontend.
  const port = await freePort();
  const files = http.createServer((req, res) => {
    const name = new URL(req.url ?? "/", "http://x").pathname.replace(/^\/$/, "/index.html");
    const file = path.join(notesBuilt, "dist", path.normalize(name).replace(/^(\.\.[/\\])+/, ""));
    if (!fs.existsSync(file)) return void res.writeHead(404).end();
    const type = file.endsWith(".wasm") ? "application/wasm" : file.endsWith(".js") ? "text/javascript" : "text/html";
    res.writeHead(200, { "content-type": type }).end(fs.readFileSync(file));
  });
  await new Promise<void>((resolve) => files.listen(port, "127.0.0.1", resolve));
  const origin = `http://127.0.0.1:${port}`;
  const api = await startNotesApi({ corsOrigins: origin });
  try {
    const pages = [await (await browser.newContext()).newPage(), await (await browser.newContext()).newPage()];
    const streams: string[] = [];
    pages[0].on("request", (r) => {
      if (r.url().includes("/events")) streams.push(r.url());
    });
    for (const page of pages) {
      await page.goto(`${origin}/?api=${api.url}`);
      await expect(page.getByTestId("status")).toHaveAttribute("data-status", "live", { timeout: 10_000 });
    }
    await writeAndSee(pages[0], pages[1], "across origins");

    // The same page not told where the API is: its stream goes to its own origin, which has no
    // events, and the page says so (as does the console), naming what to check.
    const lost = await (await browser.newContext()).newPage();
    await lost.goto(`${origin}/`);
    await expect(lost.getByTestId("stream-error")).toContainText("is the events path right", { timeout: 10_000 });
    await expect(lost.getByTestId("status")).not.toHaveAttribute("data-status", "live");
    expect(streams.length).toBeGreaterThan(0);
    expect(streams.every((u) => u.startsWith(`${api.url}/events?`)), "the stream is the API's").toBe(true);
  } finally {
    await api.stop();
    await new Promise((resolve) => files.close(resolve));
  }
});
