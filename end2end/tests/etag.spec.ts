import { test, expect, Response } from "@playwright/test";
import { startApp } from "../support/servers";
import { createTask, renameTask } from "../support/board";

// The browser's own HTTP cache and the response cache's ETag: a tab that already holds an
// answer revalidates it, and a notification whose change left the answer as it was costs a
// `304` without a body (no route interception here: Playwright turns the HTTP cache off then).
test("an event that leaves the answer unchanged costs the tab a 304, a real change a 200", async ({ browser }) => {
  const server = await startApp();
  try {
    const { id } = await createTask(server, "cached");
    const page = await (await browser.newContext()).newPage();
    const answers: Response[] = [];
    page.on("response", (r) => {
      if (new URL(r.url()).pathname === `/api/tasks/${id}`) answers.push(r);
    });
    await page.goto(server.url);
    await expect(page.getByTestId("status")).toHaveAttribute("data-status", "live");
    await page.locator(`li[data-testid="task"][data-id="${id}"]`).getByTestId("open").click();
    const detail = page.getByTestId("detail");
    await expect(detail.getByTestId("detail-title")).toHaveText("cached");
    await expect.poll(() => answers.length).toBeGreaterThan(0);
    expect(answers[0].status(), "the first answer is a whole one").toBe(200);
    const etag = await answers[0].headerValue("etag");
    expect(etag).toMatch(/^W\/"[0-9a-f]{16}"$/);
    const notModified = async () => {
      const metrics = await (await fetch(`${server.url}/metrics`)).text();
      const line = metrics.split("\n").find((l) => l.startsWith('sse_cache_requests_total{result="not_modified"}'));
      return line ? Number(line.split(" ").pop()) : 0;
    };
    const notModifiedBefore = await notModified();

    // The same title again: an event, and the same answer.
    const seen = answers.length;
    await renameTask(server, id, "cached");
    await expect(detail.getByTestId("detail-last")).toHaveText("task:updated");
    await expect.poll(() => answers.length).toBeGreaterThan(seen);
    // The browser asked with the tag it held, and the server answered 304 (the page sees the
    // kept body as a 200, so the server's count tells).
    const asked = await Promise.all(answers.slice(seen).map((r) => r.request().headerValue("if-none-match")));
    expect(asked, "revalidated with the tag the tab held").toContain(etag);
    await expect.poll(() => notModified(), "answered 304").toBeGreaterThan(notModifiedBefore);
    await expect(detail.getByTestId("detail-title")).toHaveText("cached");

    // A real change: a whole answer, shown.
    const before = await notModified();
    await renameTask(server, id, "cached and changed");
    await expect(detail.getByTestId("detail-title")).toHaveText("cached and changed", { timeout: 5_000 });
    expect(await notModified(), "a real change is a whole answer, not a 304").toBe(before);
  } finally {
    await server.stop();
  }
});
