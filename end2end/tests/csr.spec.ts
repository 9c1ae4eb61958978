import { test, expect } from "@playwright/test";
import { startApp } from "../support/servers";
import { createTask, renameTask, watchNavigations } from "../support/board";

// A client-side-rendered Leptos app (examples/csr: leptos-sse-notify with its `csr` feature, no
// server rendering, built by scripts/build-csr.sh and served by the demo under /csr/) follows the
// board's topic with `use_live_list`: it loads the list once, then each event refetches only the
// task it names and patches the list (a created task added, a renamed one replaced, a deleted
// one's 404 removing it).

test("a client-side-rendered app keeps its list live item by item", async ({ browser }) => {
  const server = await startApp();
  try {
    const page = await (await browser.newContext()).newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    const navigations = watchNavigations(page);
    const gets: string[] = [];
    page.on("request", (r) => {
      const path = new URL(r.url()).pathname;
      if (path.startsWith("/api/tasks")) gets.push(path);
    });
    await page.goto(`${server.url}/csr/index.html`);
    await expect(page.getByTestId("status")).toHaveAttribute("data-status", "live", { timeout: 10_000 });
    const title = `seen by the csr app ${Date.now()}`;
    await createTask(server, title);
    const added = page.locator(`li[data-testid="task"][data-title="${title}"]`);
    await expect(added).toBeVisible({ timeout: 5_000 });
    const id = await added.getAttribute("data-id");
    const second = `${title}, again`;
    await createTask(server, second);
    await expect(page.locator(`li[data-testid="task"][data-title="${second}"]`)).toBeVisible({ timeout: 5_000 });
    const listLoads = gets.filter((p) => p === "/api/tasks").length;
    expect(listLoads, "the list is loaded when the page opens").toBeGreaterThanOrEqual(1);

    // A rename replaces the task in place; a delete removes it.
    const renamed = `${title}, renamed`;
    await renameTask(server, id!, renamed);
    await expect(page.locator(`li[data-testid="task"][data-id="${id}"]`)).toHaveAttribute("data-title", renamed, { timeout: 5_000 });
    await expect(page.locator(`li[data-testid="task"][data-id="${id}"]`), "replaced, not added").toHaveCount(1);
    const del = await fetch(`${server.url}/api/tasks/${id}`, { method: "DELETE" });
    expect(del.status).toBe(204);
    await expect(page.locator(`li[data-testid="task"][data-id="${id}"]`)).toHaveCount(0, { timeout: 5_000 });
    await expect(page.locator(`li[data-testid="task"][data-title="${second}"]`)).toBeVisible();

    // Four changes, four item fetches, and the list never fetched again.
    expect(gets.filter((p) => p === "/api/tasks").length, "no list refetch after the first load").toBe(listLoads);
    expect(gets.filter((p) => p !== "/api/tasks").length, "one item fetch per change").toBe(4);
    expect(navigations(), "no reload").toBe(1);
    expect(errors).toEqual([]);
  } finally {
    await server.stop();
  }
});
