import { expect, Page, BrowserContext } from "@playwright/test";
import { AppServer } from "./servers";

// What the tests do with the task board: find a row, make a task from outside, and watch the
// EventSources a page opens.

/** The board's row of the task titled `title`. */
export const row = (page: Page, title: string) => page.locator(`li[data-testid="task"][data-title="${title}"]`);

/** Data requests the page makes (server functions and the REST API, not the stream), and how
 * many of them have finished. */
export function watchDataRequests(page: Page): { started: string[]; finished: () => number } {
  const started: string[] = [];
  let finished = 0;
  const isData = (url: string) => new URL(url).pathname.startsWith("/api/");
  page.on("request", (r) => {
    if (isData(r.url())) started.push(`${r.method()} ${new URL(r.url()).pathname}`);
  });
  const done = (r: { url(): string }) => {
    if (isData(r.url())) finished++;
  };
  page.on("requestfinished", done);
  page.on("requestfailed", done);
  return { started, finished: () => finished };
}

/** A new board page of `context`, its data requests counted from the start, once it is live. */
export async function liveBoard(context: BrowserContext, server: AppServer) {
  const page = await context.newPage();
  const data = watchDataRequests(page);
  await page.goto(server.url);
  await expect(page.getByTestId("status")).toHaveAttribute("data-status", "live", { timeout: 10_000 });
  return { page, data };
}

/** Waits until every data request the page started has finished. */
export async function settled(data: { started: string[]; finished: () => number }) {
  await expect.poll(() => data.finished(), { timeout: 10_000 }).toBe(data.started.length);
}

/** Counts main-frame navigations: a reload would count as a second one. */
export function watchNavigations(page: Page): () => number {
  let n = 0;
  page.on("framenavigated", (f) => {
    if (f === page.mainFrame()) n++;
  });
  return () => n;
}

/** Creates a task through the REST API, as another client would. */
export async function createTask(server: AppServer, title: string): Promise<{ id: number; title: string }> {
  const resp = await fetch(`${server.url}/api/tasks`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ title }),
  });
  expect(resp.status).toBe(201);
  return resp.json();
}

/** Renames task `id` through the REST API (`PUT /api/tasks/{id}`), which publishes
 * `task:updated` (also when the title is the one it had). */
export async function renameTask(server: AppServer, id: number | string, title: string) {
  const resp = await fetch(`${server.url}/api/tasks/${id}`, {
    method: "PUT",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ title }),
  });
  expect(resp.status).toBe(200);
}

/** Records every EventSource the page (or every page of the context) creates, in
 * `window.__eventSources` (the wasm-bindgen glue calls the global constructor at run time). */
export async function trackEventSources(target: Page | BrowserContext) {
  await target.addInitScript(() => {
    const Original = window.EventSource;
    const all: EventSource[] = [];
    (window as any).__eventSources = all;
    (window as any).EventSource = class extends Original {
      constructor(url: string | URL, init?: EventSourceInit) {
        super(url, init);
        all.push(this);
      }
    };
  });
}

/** The server's open streams, from its own metrics (the whole line, so 1 is not 10). */
export async function openStreams(server: AppServer): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith("sse_connections "));
  return Number(line?.split(" ")[1]);
}

export async function holdsStream(page: Page): Promise<boolean> {
  return page.evaluate(() => ((window as any).__eventSources as EventSource[]).some((es) => es.readyState !== 2));
}
