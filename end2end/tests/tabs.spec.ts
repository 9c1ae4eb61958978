import { test, expect, Page, BrowserContext } from "@playwright/test";
import { startApp, AppServer } from "../support/servers";
import { createTask, holdsStream, openStreams, row, settled, trackEventSources } from "../support/board";
import { comment, crmTab, openThread, signIn, writeComment } from "../support/crm";

// One stream per browser: the tabs of one browser profile share one EventSource (a leader tab
// elected with Web Locks holds it and fans frames out over a BroadcastChannel). With a stream per
// tab, HTTP/1.1's six connections per origin are all held at six tabs and every fetch waits.



async function openTabs(context: BrowserContext, server: AppServer, n: number): Promise<Page[]> {
  const pages: Page[] = [];
  for (let i = 0; i < n; i++) {
    const page = await context.newPage();
    await page.goto(server.url);
    pages.push(page);
  }
  for (const page of pages) {
    await expect(page.getByTestId("status")).toHaveAttribute("data-status", "live", { timeout: 10_000 });
  }
  return pages;
}

test("eight tabs of one browser share one stream, all stay live, and writes do not hang", async ({ browser }) => {
  const server = await startApp();
  try {
    const context = await browser.newContext();
    const tabs = await openTabs(context, server, 8);
    await expect.poll(() => openStreams(server), { timeout: 10_000 }).toBe(1);

    const fromRest = `made through REST ${Date.now()}`;
    await createTask(server, fromRest);
    for (const tab of tabs) await expect(row(tab, fromRest)).toBeVisible({ timeout: 10_000 });

    // A write from the eighth tab goes through (with a stream per tab it would wait forever).
    const fromTab = `added in tab 8 ${Date.now()}`;
    await tabs[7].getByTestId("new-title").fill(fromTab);
    await tabs[7].getByTestId("add").click();
    for (const tab of tabs) await expect(row(tab, fromTab)).toBeVisible({ timeout: 10_000 });
    expect(await openStreams(server)).toBe(1);

    // Another browser profile is another browser: its own stream.
    const other = await (await browser.newContext()).newPage();
    await other.goto(server.url);
    await expect(other.getByTestId("status")).toHaveAttribute("data-status", "live", { timeout: 10_000 });
    await expect.poll(() => openStreams(server), { timeout: 10_000 }).toBe(2);
  } finally {
    await server.stop();
  }
});

test("when the leading tab closes another takes the stream over, and a change made meanwhile shows", async ({
  browser,
}) => {
  const server = await startApp();
  try {
    const context = await browser.newContext();
    await trackEventSources(context);
    const tabs = await openTabs(context, server, 3);
    await expect.poll(() => openStreams(server), { timeout: 10_000 }).toBe(1);
    const holders: Page[] = [];
    for (const tab of tabs) if (await holdsStream(tab)) holders.push(tab);
    expect(holders.length, "exactly one tab holds the stream").toBe(1);
    const rest = tabs.filter((t) => t !== holders[0]);

    const closed = Date.now();
    await holders[0].close();
    const duringHandOver = `made during the hand-over ${Date.now()}`;
    await createTask(server, duringHandOver);
    await expect
      .poll(async () => (await Promise.all(rest.map(holdsStream))).filter(Boolean).length, { timeout: 10_000 })
      .toBe(1);
    const handOverMs = Date.now() - closed;
    for (const tab of rest) {
      await expect(row(tab, duringHandOver)).toBeVisible({ timeout: 10_000 });
      await expect(tab.getByTestId("status")).toHaveAttribute("data-status", "live");
    }
    await expect.poll(() => openStreams(server), { timeout: 10_000 }).toBe(1);
    console.log(`hand-over: a remaining tab held the stream ${handOverMs} ms after the leader closed`);
  } finally {
    await server.stop();
  }
});

test("a browser without Web Locks keeps a stream per tab, and it works", async ({ browser }) => {
  const server = await startApp();
  try {
    const context = await browser.newContext();
    await context.addInitScript(() => {
      delete (Navigator.prototype as any).locks;
    });
    const tabs = await openTabs(context, server, 2);
    await expect.poll(() => openStreams(server), { timeout: 10_000 }).toBe(2);
    const title = `seen without sharing ${Date.now()}`;
    await createTask(server, title);
    for (const tab of tabs) await expect(row(tab, title)).toBeVisible({ timeout: 10_000 });
  } finally {
    await server.stop();
  }
});

test("two tabs on different topics: each refetches only for its own, and the one left takes the stream over with its own topic", async ({
  browser,
}) => {
  const server = await startApp();
  try {
    // Carol writes from her own browser.
    const carol = await (await browser.newContext()).newPage();
    await carol.goto(`${server.url}/crm`);
    await signIn(carol, "carol");
    await openThread(carol, 1);

    // Bob's browser: two tabs, one on thread 1 and one on thread 2, sharing one stream.
    const context = await browser.newContext();
    await trackEventSources(context);
    const { page: one, data: oneData } = await crmTab(context, server, 1, "bob");
    const { page: two, data: twoData } = await crmTab(context, server, 2);
    await expect.poll(() => openStreams(server), { timeout: 10_000 }).toBe(2); // bob's and carol's

    // A comment on thread 1: tab one refetches, tab two fetches nothing; then one on thread 2:
    // tab two fetches what one event makes a tab fetch, and nothing more.
    for (const tab of [one, two]) await settled(tab === one ? oneData : twoData);
    const [oneBefore, twoBefore] = [oneData.started.length, twoData.started.length];
    await writeComment(carol, "for thread 1");
    await expect(comment(one, "for thread 1")).toBeVisible({ timeout: 5_000 });
    await settled(oneData);
    const perEvent = oneData.started.slice(oneBefore);
    expect(perEvent.length, "tab one refetched for its thread").toBeGreaterThan(0);
    await openThread(carol, 2);
    await writeComment(carol, "for thread 2");
    await expect(comment(two, "for thread 2")).toBeVisible({ timeout: 5_000 });
    await settled(twoData);
    await settled(oneData);
    expect(twoData.started.slice(twoBefore), "tab two: one refetch, for thread 2's event only").toEqual(perEvent);
    expect(oneData.started.slice(oneBefore), "tab one: one refetch, for thread 1's event only").toEqual(perEvent);

    // The tab holding the stream closes; a comment meanwhile on the other tab's thread shows there.
    const holder = (await holdsStream(one)) ? one : two;
    const left = holder === one ? two : one;
    const leftThread = left === one ? 1 : 2;
    await holder.close();
    await openThread(carol, leftThread);
    await writeComment(carol, `during the hand-over, thread ${leftThread}`);
    await expect(comment(left, `during the hand-over, thread ${leftThread}`)).toBeVisible({ timeout: 10_000 });
    await expect.poll(() => holdsStream(left), { timeout: 10_000 }).toBe(true);
    const urls = await left.evaluate(() =>
      ((window as any).__eventSources as EventSource[]).filter((s) => s.readyState !== 2).map((s) => s.url),
    );
    expect(urls.length).toBe(1);
    expect(decodeURIComponent(urls[0])).toContain(`comment_thread:${leftThread}`);
    expect(decodeURIComponent(urls[0])).not.toContain(`comment_thread:${3 - leftThread}`);
  } finally {
    await server.stop();
  }
});
