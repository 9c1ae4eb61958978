import { test, expect, Request } from "@playwright/test";
import { startApp } from "../support/servers";
import { createTask, renameTask } from "../support/board";

// The refetch after a notification, as the browser makes it (`use_live_json`, the board's task
// detail panel): a burst of changes is covered by a few coalesced refetches, not one each; every
// refetch an event triggered names that event in `Last-Event-ID`; and the answer is never older
// than the last change, read through the server's response cache, across two instances.
test("a burst of changes costs a few coalesced refetches, each naming its event, and ends on the last change", async ({ browser }) => {
  const redisUrl = process.env.E2E_REDIS_URL;
  expect(redisUrl, "global setup starts redis-server").toBeTruthy();
  // The page reads from one instance; the changes are made through the other.
  const reader = await startApp({ redisUrl });
  const writer = await startApp({ redisUrl });
  try {
    const { id } = await createTask(writer, "burst 0");
    const page = await (await browser.newContext()).newPage();
    await page.goto(reader.url);
    await expect(page.getByTestId("status")).toHaveAttribute("data-status", "live");
    await page.locator(`li[data-testid="task"][data-id="${id}"]`).getByTestId("open").click();
    const detail = page.getByTestId("detail");
    await expect(detail.getByTestId("detail-title")).toHaveText("burst 0");
    await expect(page.getByTestId("status")).toHaveAttribute("data-status", "live");

    const refetches: Request[] = [];
    page.on("request", (r) => {
      if (new URL(r.url()).pathname === `/api/tasks/${id}`) refetches.push(r);
    });
    // A loaded server: each refetch takes 300 ms, so later events arrive while one is in flight.
    await page.route(`**/api/tasks/${id}`, async (route) => {
      await new Promise((r) => setTimeout(r, 300));
      await route.continue();
    });
    // Thirty changes, one after another as fast as they go: events arrive one by one while the
    // page's refetch of an earlier one is in flight.
    const burst = 30;
    for (let i = 1; i <= burst; i++) {
      await renameTask(writer, id, `burst ${i}`);
    }
    const last = `burst ${burst}`;
    await expect(detail.getByTestId("detail-title")).toHaveText(last, { timeout: 10_000 });
    // Nothing more is on its way: the count is final.
    await page.waitForTimeout(1_000);
    const ids = await Promise.all(refetches.map((r) => r.headerValue("last-event-id")));
    console.log(`${burst} changes, ${refetches.length} refetches`);
    expect(refetches.length, "at least the change's own refetch").toBeGreaterThanOrEqual(1);
    // One in flight when the burst starts, and ONE after it for everything that came meanwhile
    // (a third if the burst outlasts the first refetch).
    expect(refetches.length, "coalesced: one refetch in flight, one after it").toBeLessThanOrEqual(3);
    for (const cursor of ids) {
      expect(cursor, "each refetch names the event that triggered it").toMatch(/^[0-9a-f]{12}-[0-9a-f]+-[0-9a-f]+-[0-9a-f]+$/);
    }
  } finally {
    await reader.stop();
    await writer.stop();
  }
});
