import { test, expect, Page } from "@playwright/test";
import { startApp, startRedis, freePort, AppServer } from "../support/servers";
import { createTask, row, settled, watchDataRequests, watchNavigations } from "../support/board";

// Gap-free delivery in a real browser: the server-rendered page hands its stream the cursor
// taken before its data was read, and a reconnect resumes from the last cursor, so the page
// catches up on what it missed and refetches nothing when it missed nothing.

const status = (page: Page) => page.getByTestId("status");


test("a page whose stream opens late still shows a change made after it was rendered", async ({ browser }) => {
  const server = await startApp();
  try {
    const page = await (await browser.newContext()).newPage();
    const navigations = watchNavigations(page);
    // Hold the stream request back until the change below has been made.
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    const streamUrls: string[] = [];
    await page.route(/\/events\?/, async (route) => {
      streamUrls.push(route.request().url());
      await held;
      await route.continue();
    });
    await page.goto(server.url);
    await expect.poll(() => streamUrls.length, { timeout: 10_000 }).toBe(1); // hydrated, stream asked
    const title = `made while the stream was held ${Date.now()}`;
    await createTask(server, title);
    await expect(row(page, title)).toHaveCount(0); // not rendered: the page was rendered before
    release();
    await expect(status(page)).toHaveAttribute("data-status", "live");
    await expect(row(page, title)).toBeVisible({ timeout: 5_000 });
    // It opened from the cursor the server rendered into the page.
    expect(new URL(streamUrls[0]).searchParams.get("last_event_id")).toMatch(/^[0-9a-f]{12}-/);
    expect(navigations()).toBe(1);
  } finally {
    await server.stop();
  }
});

test("after restarts on Redis the board catches up, and a reconnect that missed nothing fetches nothing", async ({
  browser,
}) => {
  const redisUrl = process.env.E2E_REDIS_URL;
  expect(redisUrl, "global setup starts redis-server").toBeTruthy();
  const port = await freePort();
  let a = await startApp({ redisUrl, port });
  const b = await startApp({ redisUrl });
  try {
    const page = await (await browser.newContext()).newPage();
    const data = watchDataRequests(page);
    const navigations = watchNavigations(page);
    await page.goto(a.url);
    await expect(status(page)).toHaveAttribute("data-status", "live");
    await settled(data);
    const beforeKnown = data.started.length;
    const known = `before the restarts ${Date.now()}`;
    await createTask(b, known);
    await expect(row(page, known)).toBeVisible({ timeout: 5_000 });
    await settled(data);
    // What one event makes the page fetch.
    const perEvent = data.started.slice(beforeKnown);
    expect(perEvent.length, "the event made the board refetch").toBeGreaterThan(0);

    // Restart A with nothing changed meanwhile: the tab goes offline, comes back live, and
    // makes no request (the server replays nothing, the hook refetches nothing). Then one more
    // event: the page must fetch exactly what one event makes it fetch, and nothing for the
    // reconnect (a refetch it started then would be counted here, however late).
    const atRestart = data.started.length;
    await a.stop();
    await expect(status(page)).toHaveAttribute("data-status", "offline", { timeout: 5_000 });
    a = await startApp({ redisUrl, port });
    await expect(status(page)).toHaveAttribute("data-status", "live", { timeout: 10_000 });
    const probe = `after the reconnect ${Date.now()}`;
    await createTask(b, probe);
    await expect(row(page, probe)).toBeVisible({ timeout: 5_000 });
    await settled(data);
    expect(data.started.slice(atRestart), "nothing fetched for a reconnect that missed nothing").toEqual(perEvent);

    // Restart A again, and change a task on B while A is down: the tab shows it on return.
    await a.stop();
    await expect(status(page)).toHaveAttribute("data-status", "offline", { timeout: 5_000 });
    const missed = `made while the tab was away ${Date.now()}`;
    await createTask(b, missed);
    a = await startApp({ redisUrl, port });
    await expect(status(page)).toHaveAttribute("data-status", "live", { timeout: 10_000 });
    await expect(row(page, missed)).toBeVisible({ timeout: 5_000 });
    await expect(row(page, known)).toBeVisible();
    expect(navigations(), "the tab never reloaded").toBe(1);
  } finally {
    await a.stop();
    await b.stop();
  }
});

test("a resync from the server makes the board refetch (embedded broker restarted)", async ({ browser }) => {
  const port = await freePort();
  let server = await startApp({ port });
  try {
    const page = await (await browser.newContext()).newPage();
    const navigations = watchNavigations(page);
    await page.goto(server.url);
    await expect(status(page)).toHaveAttribute("data-status", "live");
    const title = `held by the old process ${Date.now()}`;
    await createTask(server, title);
    await expect(row(page, title)).toBeVisible({ timeout: 5_000 });
    // The embedded broker and store live in the process: a new process has neither the task
    // nor the log the tab's cursor points into, so it answers the reconnect with a resync, and
    // the board refetches (and the task is gone).
    await server.stop();
    await expect(status(page)).toHaveAttribute("data-status", "offline", { timeout: 5_000 });
    server = await startApp({ port });
    await expect(status(page)).toHaveAttribute("data-status", "live", { timeout: 10_000 });
    await expect(row(page, title)).toHaveCount(0, { timeout: 5_000 });
    expect(navigations()).toBe(1);
  } finally {
    await server.stop();
  }
});

test("Redis restarted (empty) under an open board: the tab resyncs and refetches, then goes on live", async ({
  browser,
}) => {
  let redis = await startRedis();
  const server = await startApp({ redisUrl: redis.url });
  try {
    const page = await (await browser.newContext()).newPage();
    const navigations = watchNavigations(page);
    await page.goto(server.url);
    await expect(status(page)).toHaveAttribute("data-status", "live");
    const before = `stored in the old redis ${Date.now()}`;
    await createTask(server, before);
    await expect(row(page, before)).toBeVisible({ timeout: 5_000 });

    // Redis goes away and comes back empty (no persistence): the tasks and the event log are gone.
    await redis.stop();
    const refused = await fetch(`${server.url}/api/tasks`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ title: "while redis is down" }),
    });
    expect(refused.status).toBe(503);
    redis = await startRedis(redis.port);
    // The server catches up, finds the log gone, and sends a resync: the board refetches and the
    // task that only the old Redis held disappears, without a reload.
    await expect(row(page, before)).toHaveCount(0, { timeout: 15_000 });
    await expect(status(page)).toHaveAttribute("data-status", "live");
    const after = `stored in the new redis ${Date.now()}`;
    await createTask(server, after);
    await expect(row(page, after)).toBeVisible({ timeout: 5_000 });
    expect(navigations()).toBe(1);
  } finally {
    await server.stop();
    await redis.stop();
  }
});
