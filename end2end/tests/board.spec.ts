import { test, expect, Page, BrowserContext } from "@playwright/test";
import { startApp, AppServer } from "../support/servers";
import { createTask, watchNavigations } from "../support/board";

/** Collects console errors and page crashes so a test can assert there were none. */
function watchErrors(page: Page): string[] {
  const errors: string[] = [];
  page.on("console", (m) => {
    if (m.type() === "error") errors.push(m.text());
  });
  page.on("pageerror", (e) => errors.push(String(e)));
  return errors;
}

async function openBoard(context: BrowserContext, server: AppServer) {
  const page = await context.newPage();
  const errors = watchErrors(page);
  const navigations = watchNavigations(page);
  await page.goto(server.url);
  // "live" means hydrated and the shared EventSource is open.
  await expect(page.getByTestId("status")).toHaveAttribute("data-status", "live");
  return { page, errors, navigations };
}

const row = (page: Page, title: string) => page.locator(`li[data-testid="task"][data-title="${title}"]`);

test("two windows on two instances sharing Redis see each other's changes without reload", async ({ browser }) => {
  const redisUrl = process.env.E2E_REDIS_URL;
  expect(redisUrl, "global setup starts redis-server").toBeTruthy();
  const a = await startApp({ redisUrl });
  const b = await startApp({ redisUrl });
  try {
    const alice = await openBoard(await browser.newContext(), a);
    const bob = await openBoard(await browser.newContext(), b);
    const title = `buy milk ${Date.now()}`;
    const renamed = `${title} and bread`;

    // Create in one window: the other sees it, no reload.
    await alice.page.getByTestId("new-title").fill(title);
    await alice.page.getByTestId("add").click();
    await expect(row(bob.page, title)).toBeVisible({ timeout: 5_000 });
    await expect(row(alice.page, title)).toBeVisible({ timeout: 5_000 });

    // Rename in the other window.
    const input = row(bob.page, title).getByTestId("title");
    await input.fill(renamed);
    await input.press("Enter");
    await expect(row(alice.page, renamed)).toBeVisible({ timeout: 5_000 });
    await expect(row(alice.page, title)).toHaveCount(0);

    // Toggle done.
    await row(alice.page, renamed).getByTestId("toggle").check();
    await expect(row(bob.page, renamed).getByTestId("toggle")).toBeChecked({ timeout: 5_000 });
    await expect(row(bob.page, renamed)).toHaveClass(/done/);

    // Delete.
    await row(bob.page, renamed).getByTestId("delete").click();
    await expect(row(alice.page, renamed)).toHaveCount(0, { timeout: 5_000 });
    await expect(row(bob.page, renamed)).toHaveCount(0, { timeout: 5_000 });

    // Neither tab reloaded (one navigation each, the first) and nothing logged an error.
    expect(alice.navigations(), "alice's tab never reloaded").toBe(1);
    expect(bob.navigations(), "bob's tab never reloaded").toBe(1);
    expect(alice.errors).toEqual([]);
    expect(bob.errors).toEqual([]);
  } finally {
    await a.stop();
    await b.stop();
  }
});

test("a change made through the REST API appears on the board (embedded broker)", async ({ browser }) => {
  const server = await startApp();
  try {
    const { page, errors } = await openBoard(await browser.newContext(), server);
    const title = `from curl ${Date.now()}`;
    await createTask(server, title);
    await expect(row(page, title)).toBeVisible({ timeout: 5_000 });
    expect(errors).toEqual([]);
  } finally {
    await server.stop();
  }
});

test("the indicator shows live, then offline when the server is gone", async ({ browser }) => {
  const server = await startApp();
  let stopped = false;
  try {
    const { page } = await openBoard(await browser.newContext(), server);
    await expect(page.getByTestId("status")).toHaveText("live");
    await server.stop();
    stopped = true;
    await expect(page.getByTestId("status")).toHaveAttribute("data-status", "offline", { timeout: 5_000 });
    await expect(page.getByTestId("status")).toHaveText("offline");
  } finally {
    if (!stopped) await server.stop();
  }
});
