import { test, expect } from "@playwright/test";
import { startApp } from "../support/servers";
import { createTask, watchNavigations } from "../support/board";

// A client-side-rendered Leptos app (examples/csr: leptos-sse-notify with its `csr` feature, no
// server rendering, built by scripts/build-csr.sh and served by the demo under /csr/) follows the
// board's topic and refetches its list when a task is created.

test("a client-side-rendered app follows a topic and refetches", async ({ browser }) => {
  const server = await startApp();
  try {
    const page = await (await browser.newContext()).newPage();
    const errors: string[] = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    const navigations = watchNavigations(page);
    await page.goto(`${server.url}/csr/index.html`);
    await expect(page.getByTestId("status")).toHaveAttribute("data-status", "live", { timeout: 10_000 });
    const title = `seen by the csr app ${Date.now()}`;
    await createTask(server, title);
    await expect(page.locator(`li[data-testid="task"][data-title="${title}"]`)).toBeVisible({ timeout: 5_000 });
    const second = `${title}, again`;
    await createTask(server, second);
    await expect(page.locator(`li[data-testid="task"][data-title="${second}"]`)).toBeVisible({ timeout: 5_000 });
    expect(navigations(), "no reload").toBe(1);
    expect(errors).toEqual([]);
  } finally {
    await server.stop();
  }
});
