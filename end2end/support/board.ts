import { expect, Page, BrowserContext } from "@playwright/test";
import { AppServer } from "./servers";

// What the tests do with the task board: find a row, make a task from outside, and watch the
// EventSources a page opens.

/** The board's row of the task titled `title`. */
export const row = (page: Page, title: string) => page.locator(`li[data-testid="task"][data-title="${title}"]`);

/** Creates a task through the REST API, as another client would. */
export async function createTask(server: AppServer, title: string) {
  const resp = await fetch(`${server.url}/api/tasks`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ title }),
  });
  expect(resp.status).toBe(201);
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
