import { test, expect, Page } from "@playwright/test";
import { startApp } from "../support/servers";
import { createTask, renameTask, trackEventSources } from "../support/board";

async function streams(page: Page) {
  return page.evaluate(() =>
    ((window as any).__eventSources as EventSource[]).map((es) => ({
      topics: decodeURIComponent(new URL(es.url).searchParams.get("topic") ?? ""),
      open: es.readyState !== 2,
    })),
  );
}

async function openTopics(page: Page) {
  return (await streams(page)).filter((s) => s.open).map((s) => s.topics);
}

test("all use_sse calls in a tab share one EventSource carrying the union of their topics", async ({ browser }) => {
  const server = await startApp();
  try {
    const page = await (await browser.newContext()).newPage();
    await trackEventSources(page);
    await page.goto(server.url);
    await expect(page.getByTestId("status")).toHaveAttribute("data-status", "live");
    await expect.poll(() => openTopics(page)).toEqual(["tasks"]);

    const { id } = await createTask(server, "followed");
    const row = page.locator(`li[data-testid="task"][data-id="${id}"]`);
    await row.getByTestId("open").click();
    const detail = page.getByTestId("detail");
    await expect(detail.getByTestId("detail-title")).toHaveText("followed");

    // A second component subscribed to task:{id}: still ONE open stream, now for both topics.
    await expect.poll(() => openTopics(page)).toEqual([`task:${id},tasks`]);
    expect((await streams(page)).length).toBe(2); // the first one was closed, not kept open
    await expect(page.getByTestId("status")).toHaveAttribute("data-status", "live");

    // An update from elsewhere reaches the detail panel through its own topic.
    await renameTask(server, id, "followed and renamed");
    await expect(detail.getByTestId("detail-title")).toHaveText("followed and renamed", { timeout: 5_000 });
    await expect(detail.getByTestId("detail-last")).toHaveText("task:updated");

    // Closing the panel drops its topic: the stream is reopened for the smaller set.
    await detail.getByTestId("close-detail").click();
    await expect.poll(() => openTopics(page)).toEqual(["tasks"]);
    expect((await streams(page)).filter((s) => s.open).length).toBe(1);
  } finally {
    await server.stop();
  }
});
