import { test, expect, Page } from "@playwright/test";
import { startApp } from "../support/servers";
import { createTask, row } from "../support/board";

// No echo: the tab that made a change has it from its write's answer, and the event of its own
// write does not refetch its list; its sibling tab (same browser, another origin) and another
// browser refetch once.

/** Counts the page's refetches of the board list (the `list_tasks` server function). */
function countListReads(page: Page): () => number {
  let n = 0;
  page.on("request", (r) => {
    if (new URL(r.url()).pathname.startsWith("/api/list_tasks")) n++;
  });
  return () => n;
}

async function live(page: Page, url: string) {
  await page.goto(url);
  await expect(page.getByTestId("status")).toHaveAttribute("data-status", "live", { timeout: 10_000 });
}

test("the writer tab does not refetch for its own change; its sibling tab and another browser do, once", async ({ browser }) => {
  const server = await startApp();
  try {
    const browserA = await browser.newContext();
    const [writer, sibling] = [await browserA.newPage(), await browserA.newPage()];
    const other = await (await browser.newContext()).newPage();
    for (const page of [writer, sibling, other]) await live(page, server.url);
    const reads = new Map([writer, sibling, other].map((p) => [p, countListReads(p)]));
    const readsOf = (p: Page) => reads.get(p)!();

    // 1. A task added in the writer tab shows there at once, from the write's answer.
    const mine = `mine ${Date.now()}`;
    await writer.getByTestId("new-title").fill(mine);
    await writer.getByTestId("add").click();
    for (const page of [writer, sibling, other]) await expect(row(page, mine)).toBeVisible({ timeout: 10_000 });

    // 2. A change from outside follows on the same stream: once the writer shows it, the
    //    writer has handled its own event too (events arrive in order).
    const theirs = `theirs ${Date.now()}`;
    await createTask(server, theirs);
    for (const page of [writer, sibling, other]) await expect(row(page, theirs)).toBeVisible({ timeout: 10_000 });
    await expect.poll(() => readsOf(sibling), { timeout: 10_000 }).toBeGreaterThanOrEqual(1);

    // The writer read the list once, for the change from outside; the others read it for both
    // changes (a refetch already running may cover two events: at most 2, at least 1).
    expect(readsOf(writer), "the writer tab's refetches").toBe(1);
    for (const page of [sibling, other]) {
      expect(readsOf(page)).toBeGreaterThanOrEqual(1);
      expect(readsOf(page)).toBeLessThanOrEqual(2);
    }

    // 3. A rename in the writer: the others see it, and then a change from outside again.
    const before = new Map([writer, sibling, other].map((p) => [p, readsOf(p)]));
    const renamed = `${mine} renamed`;
    const title = row(writer, mine).getByTestId("title");
    await title.fill(renamed);
    await title.press("Enter");
    for (const page of [writer, sibling, other]) await expect(row(page, renamed)).toBeVisible({ timeout: 10_000 });
    const last = `last ${Date.now()}`;
    await createTask(server, last);
    for (const page of [writer, sibling, other]) await expect(row(page, last)).toBeVisible({ timeout: 10_000 });
    expect(readsOf(writer) - before.get(writer)!, "the writer's rename cost it no read").toBe(1);
    for (const page of [sibling, other]) expect(readsOf(page) - before.get(page)!).toBeGreaterThanOrEqual(1);
  } finally {
    await server.stop();
  }
});
