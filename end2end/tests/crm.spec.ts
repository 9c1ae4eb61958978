import { test, expect, Browser, Page } from "@playwright/test";
import { startApp, AppServer } from "../support/servers";
import { settled, trackEventSources } from "../support/board";
import { comment, crmTab, openThread, signIn, writeComment } from "../support/crm";

/** Records every SSE event the page's code receives (name, data, id), in `window.__sse`. */
async function recordEvents(page: Page) {
  await page.addInitScript(() => {
    const log: { type: string; data: string; id: string }[] = [];
    (window as any).__sse = log;
    const add = EventSource.prototype.addEventListener;
    EventSource.prototype.addEventListener = function (this: EventSource, type: string, listener: any, opts?: any) {
      const wrapped = (e: MessageEvent) => {
        log.push({ type, data: String(e.data), id: e.lastEventId });
        return typeof listener === "function" ? listener.call(this, e) : listener.handleEvent(e);
      };
      return add.call(this, type, wrapped as any, opts);
    } as any;
  });
}

const received = (page: Page) =>
  page.evaluate(() => (window as any).__sse as { type: string; data: string; id: string }[]);

async function signedIn(browser: Browser, server: AppServer, name: string) {
  const page = await (await browser.newContext()).newPage();
  await recordEvents(page);
  const errors: string[] = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(`${server.url}/crm`);
  await signIn(page, name);
  await expect(page.getByTestId("status")).toHaveAttribute("data-status", "live");
  return { page, errors };
}


test("two users of one team see each other's comments live; the other team is refused", async ({ browser }) => {
  const server = await startApp();
  try {
    const bob = await signedIn(browser, server, "bob");
    const carol = await signedIn(browser, server, "carol");
    const dave = await signedIn(browser, server, "dave");
    await openThread(bob.page, 1);
    await openThread(carol.page, 1);

    // Dave (Globex) is not offered Acme's thread (asserted once his list has rendered), and the
    // stream endpoint refuses its topic.
    await expect(dave.page.getByTestId("thread-3")).toBeVisible();
    await expect(dave.page.getByTestId("thread-1")).toHaveCount(0);
    const status = await dave.page.evaluate(async () => (await fetch("/events?topic=comment_thread:1")).status);
    expect(status).toBe(403);
    await openThread(dave.page, 3);

    // Bob writes, Carol sees it; Carol replies, Bob sees it and is notified (he owns the thread).
    await bob.page.getByTestId("new-comment").fill("renewal is on track");
    await bob.page.getByTestId("send").click();
    await expect(comment(carol.page, "renewal is on track")).toBeVisible({ timeout: 5_000 });
    await carol.page.getByTestId("new-comment").fill("great, I will call them");
    await carol.page.getByTestId("send").click();
    await expect(comment(bob.page, "great, I will call them")).toBeVisible({ timeout: 5_000 });
    await expect(bob.page.getByTestId("notification")).toHaveText("carol replied in your thread “Acme renewal”", {
      timeout: 5_000,
    });
    await expect(carol.page.getByTestId("notification")).toHaveCount(0);

    // Edit and delete travel too.
    const mine = comment(carol.page, "great, I will call them").getByTestId("comment-text");
    await mine.fill("great, I called them");
    await mine.press("Enter");
    await expect(comment(bob.page, "great, I called them")).toBeVisible({ timeout: 5_000 });
    await comment(bob.page, "renewal is on track").getByTestId("delete-comment").click();
    await expect(comment(carol.page, "renewal is on track")).toHaveCount(0, { timeout: 5_000 });

    // Dave writes in his own thread: his stream works and the recorder sees what reaches it.
    await dave.page.getByTestId("new-comment").fill("globex check-in");
    await dave.page.getByTestId("send").click();
    await expect(comment(dave.page, "globex check-in")).toBeVisible({ timeout: 5_000 });
    await expect.poll(async () => (await received(dave.page)).filter((e) => e.type === "comment:created").length).toBe(1);

    // Dave never saw any of Acme's: no event of thread 1 reached his page's code at all (not
    // merely not rendered), and his page shows only his own thread's comment.
    const daves = await received(dave.page);
    const acme = daves.filter((e) => e.type.startsWith("comment:") && JSON.parse(e.data).thread !== 3);
    expect(acme, JSON.stringify(daves)).toEqual([]);
    expect(daves.filter((e) => e.type.startsWith("notification:"))).toEqual([]);
    // The recorder does see Acme's events on Bob's page, so the empty list above means something.
    const bobs = await received(bob.page);
    expect(bobs.filter((e) => e.type.startsWith("comment:") && JSON.parse(e.data).thread === 1).length).toBeGreaterThanOrEqual(4);
    await expect(dave.page.getByTestId("comment")).toHaveCount(1);
    await expect(dave.page.getByTestId("notification")).toHaveCount(0);
    for (const p of [bob, carol, dave]) expect(p.errors).toEqual([]);
  } finally {
    await server.stop();
  }
});

test("a sign-in clicked before the page has hydrated still signs in", async ({ browser }) => {
  const server = await startApp();
  try {
    const page = await (await browser.newContext()).newPage();
    // Hold the WASM bundle back: the server-rendered page is there, its code is not.
    let release!: () => void;
    const held = new Promise<void>((resolve) => (release = resolve));
    await page.route(/\.wasm$/, async (route) => {
      await held;
      await route.continue();
    });
    await page.goto(`${server.url}/crm`);
    await page.getByTestId("sign-in-bob").click();
    // The browser posted the form to the server function itself, which answered with the
    // session cookie and a redirect back to the page, rendered signed in.
    await expect(page.getByTestId("whoami")).toHaveText("bob");
    expect(new URL(page.url()).pathname).toBe("/crm");
    release();
    await expect(page.getByTestId("status")).toHaveAttribute("data-status", "live", { timeout: 10_000 });
  } finally {
    await server.stop();
  }
});

test("a topic signal switched at run time: the page's stream follows the picked thread, nothing more is fetched", async ({
  browser,
}) => {
  const server = await startApp();
  try {
    const carol = await signedIn(browser, server, "carol");
    // Bob's page: its EventSources are tracked from the start, and its data requests counted.
    const context = await browser.newContext();
    await trackEventSources(context);
    const { page, data } = await crmTab(context, server, 1, "bob");
    await openThread(carol.page, 1);
    await openThread(carol.page, 2);
    const openStreams = () =>
      page.evaluate(() =>
        ((window as any).__eventSources as EventSource[]).filter((s) => s.readyState !== 2).map((s) => s.url),
      );

    // What one comment on the followed thread makes the page fetch.
    await settled(data);
    const before = data.started.length;
    await writeComment(carol.page, "on thread 2 while bob reads 1");
    await openThread(carol.page, 1);
    await writeComment(carol.page, "first on thread 1");
    await expect(comment(page, "first on thread 1")).toBeVisible({ timeout: 5_000 });
    await settled(data);
    const perEvent = data.started.slice(before);
    expect(perEvent.length, "the followed thread's event made the page refetch").toBeGreaterThan(0);

    // Bob picks thread 2: one stream is open, now for thread 2's topic and not thread 1's.
    await openThread(page, 2);
    await expect(comment(page, "on thread 2 while bob reads 1")).toBeVisible();
    await expect.poll(openStreams).toHaveLength(1);
    const [url] = await openStreams();
    expect(decodeURIComponent(url)).toContain("comment_thread:2");
    expect(decodeURIComponent(url)).not.toContain("comment_thread:1");

    // A comment on thread 1 now makes Bob's page fetch nothing; one on thread 2 makes it fetch
    // what one event does, and shows.
    await settled(data);
    const afterSwitch = data.started.length;
    await writeComment(carol.page, "second on thread 1");
    await openThread(carol.page, 2);
    await writeComment(carol.page, "on thread 2 while bob reads it");
    await expect(comment(page, "on thread 2 while bob reads it")).toBeVisible({ timeout: 5_000 });
    await settled(data);
    expect(data.started.slice(afterSwitch), "thread 1's event fetched nothing, thread 2's one refetch").toEqual(
      perEvent,
    );
    await expect(comment(page, "second on thread 1")).toHaveCount(0);
    expect(await openStreams()).toHaveLength(1);
  } finally {
    await server.stop();
  }
});
