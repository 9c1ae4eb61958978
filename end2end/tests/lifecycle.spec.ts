import { test, expect, BrowserContext, Page } from "@playwright/test";
import * as net from "node:net";
import { startApp, freePort } from "../support/servers";
import { createTask, holdsStream, liveBoard, openStreams, row, settled, trackEventSources } from "../support/board";
import { comment, openThread, signIn, writeComment } from "../support/crm";

// What browsers do to a page in real life: freeze a background tab (the one holding the shared
// stream, often), and keep a connection open that a proxy or NAT has stopped carrying.


/** Lets the test hide and show the pages of `context` (`window.__setHidden(true)`): headless
 * Chromium never hides a page, so the visibility is played as a browser reports it, the
 * property and its event. */
async function playVisibility(context: BrowserContext) {
  await context.addInitScript(() => {
    let hidden = false;
    Object.defineProperty(Document.prototype, "visibilityState", { get: () => (hidden ? "hidden" : "visible") });
    Object.defineProperty(Document.prototype, "hidden", { get: () => hidden });
    (window as any).__setHidden = (h: boolean) => {
      hidden = h;
      document.dispatchEvent(new Event("visibilitychange"));
    };
  });
}

/** Every value the page's status takes from now on, in `window.__statuses`. */
async function recordStatuses(page: Page) {
  await page.evaluate(() => {
    const el = document.querySelector('[data-testid="status"]')!;
    const seen: string[] = [el.getAttribute("data-status") ?? ""];
    (window as any).__statuses = seen;
    new MutationObserver(() => seen.push(el.getAttribute("data-status") ?? "")).observe(el, { attributes: true });
  });
}


test("a frozen leading tab: the other takes the stream over within 5 s and is not live meanwhile; the old one wakes as a follower and misses nothing", async ({
  browser,
}) => {
  const server = await startApp();
  try {
    const context = await browser.newContext();
    await trackEventSources(context);
    const first = await context.newPage();
    await first.goto(server.url);
    await expect(first.getByTestId("status")).toHaveAttribute("data-status", "live", { timeout: 10_000 });
    const second = await context.newPage();
    await second.goto(server.url);
    await expect(second.getByTestId("status")).toHaveAttribute("data-status", "live", { timeout: 10_000 });
    await expect.poll(() => openStreams(server), { timeout: 10_000 }).toBe(1);
    const [leader, follower] = (await holdsStream(first)) ? [first, second] : [second, first];
    await recordStatuses(follower);

    // Its JavaScript stopped, as a browser freezes a background tab (headless Chromium ignores
    // the lifecycle freeze; the debugger's pause stops the page the same way).
    const cdp = await context.newCDPSession(leader);
    await cdp.send("Debugger.enable");
    await cdp.send("Debugger.pause");
    await expect.poll(() => cdp.send("Runtime.evaluate", { expression: "1", timeout: 200 }).then(() => false, () => true), {
      timeout: 5_000,
    });
    const paused = Date.now();

    const duringFreeze = `made while the leader was frozen ${Date.now()}`;
    await createTask(server, duringFreeze);
    await expect(row(follower, duringFreeze)).toBeVisible({ timeout: 5_000 + 1_000 });
    console.log(`frozen leader: the other tab showed the change ${Date.now() - paused} ms after the pause`);
    await expect(follower.getByTestId("status")).toHaveAttribute("data-status", "live");
    expect(await holdsStream(follower), "the follower took the stream over").toBe(true);
    const statuses: string[] = await follower.evaluate(() => (window as any).__statuses);
    expect(statuses, "it said so while it received nothing").toContain("connecting");

    // The old leader wakes: it finds the lock taken, follows, and shows what came meanwhile.
    await cdp.send("Debugger.resume");
    await cdp.send("Debugger.disable");
    const afterWaking = `made after the leader woke ${Date.now()}`;
    await expect.poll(() => holdsStream(leader), { timeout: 5_000 }).toBe(false);
    // Found from outside: the woken tab's beat made the new leader step down too, and no tab
    // held the stream until the silence watchdog noticed. The new leader keeps it.
    expect(await holdsStream(follower), "the new leader keeps the stream").toBe(true);
    await createTask(server, afterWaking);
    for (const tab of [leader, follower]) {
      await expect(row(tab, duringFreeze)).toBeVisible({ timeout: 5_000 });
      await expect(row(tab, afterWaking)).toBeVisible({ timeout: 1_500 });
      await expect(tab.getByTestId("status")).toHaveAttribute("data-status", "live");
    }
    expect(await holdsStream(follower), "still").toBe(true);
    await expect.poll(() => openStreams(server), { timeout: 10_000 }).toBe(1);
  } finally {
    await server.stop();
  }
});

/** A TCP relay in front of the server that can stop carrying the stream's connections while
 * keeping them open (a proxy or NAT that dropped the flow without telling anyone). Other
 * connections, and streams opened after, are carried as usual. */
async function startRelay(target: number) {
  const port = await freePort();
  const streams = new Set<net.Socket>();
  const all = new Set<net.Socket>();
  let holes = 0;
  const relay = net.createServer((client) => {
    const upstream = net.connect(target, "127.0.0.1");
    all.add(client);
    all.add(upstream);
    let blackholed = false;
    const hole = () => {
      blackholed = true;
    };
    client.on("data", (chunk) => {
      // A kept-alive connection may carry the page's requests first, then the stream's.
      if (chunk.toString("latin1").includes("GET /events")) {
        streams.add(client);
        (client as any).__hole = hole;
      }
      if (!blackholed) upstream.write(chunk);
    });
    upstream.on("data", (chunk) => {
      if (!blackholed) client.write(chunk);
    });
    const close = () => {
      client.destroy();
      upstream.destroy();
      streams.delete(client);
    };
    client.on("error", close);
    upstream.on("error", close);
    client.on("close", close);
    upstream.on("close", close);
  });
  await new Promise<void>((resolve) => relay.listen(port, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${port}`,
    /** Stops carrying every stream connection open now. */
    blackholeStreams() {
      for (const s of streams) {
        (s as any).__hole();
        holes++;
      }
      streams.clear();
      return holes;
    },
    async stop() {
      for (const s of all) s.destroy();
      await new Promise<void>((resolve) => relay.close(() => resolve()));
    },
  };
}

test("a stream that silently stops is reopened within the heartbeat's bound, and the change made meanwhile shows", async ({
  browser,
}) => {
  const server = await startApp({ env: { SSE_HEARTBEAT_SECONDS: "1" } });
  const relay = await startRelay(Number(new URL(server.url).port));
  try {
    const page = await (await browser.newContext()).newPage();
    await trackEventSources(page);
    await page.goto(relay.url);
    await expect(page.getByTestId("status")).toHaveAttribute("data-status", "live", { timeout: 10_000 });
    // Two heartbeats tell the page how often they come.
    await page.waitForTimeout(2_500);
    expect(relay.blackholeStreams(), "the page's stream went through the relay").toBeGreaterThan(0);
    const cut = Date.now();
    const meanwhile = `made while the stream was dead ${Date.now()}`;
    await createTask(server, meanwhile);
    // Two heartbeats and 3 s of slack (5 s), checked every second, then a reopen and a replay.
    await expect(row(page, meanwhile)).toBeVisible({ timeout: 9_000 });
    console.log(`dead stream: the change showed ${Date.now() - cut} ms after the stream stopped`);
    const opened = await page.evaluate(() => ((window as any).__eventSources as EventSource[]).length);
    expect(opened, "a second stream was opened").toBeGreaterThanOrEqual(2);
    await expect(page.getByTestId("status")).toHaveAttribute("data-status", "live");
  } finally {
    await relay.stop();
    await server.stop();
  }
});

test("offline, the refetch a notification starts fails: the list stays, marked stale, and is right within 2 s of the network returning, with no new event", async ({
  browser,
}) => {
  const server = await startApp();
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(server.url);
    await expect(page.getByTestId("status")).toHaveAttribute("data-status", "live", { timeout: 10_000 });
    const before = `there before ${Date.now()}`;
    await createTask(server, before);
    await expect(row(page, before)).toBeVisible({ timeout: 5_000 });

    // Offline: the open stream still brings the notification, its refetch fails.
    await context.setOffline(true);
    const during = `made while offline ${Date.now()}`;
    await createTask(server, during);
    await expect(page.getByTestId("stale")).toBeVisible({ timeout: 5_000 });
    await expect(row(page, before), "the last list stays").toBeVisible();
    await expect(page.locator("p.error"), "no error replaces it").toHaveCount(0);

    await context.setOffline(false);
    const back = Date.now();
    await expect(row(page, during)).toBeVisible({ timeout: 2_000 });
    console.log(`back online: the list was right ${Date.now() - back} ms later`);
    await expect(page.getByTestId("stale")).toHaveCount(0);
  } finally {
    await server.stop();
  }
});

/** A TCP relay in front of the server that passes a stream's response head and then holds its
 * body back until the response ends (a proxy that buffers, ignoring `X-Accel-Buffering`).
 * Other responses pass as they come. */
async function startBufferingProxy(target: number) {
  const port = await freePort();
  const all = new Set<net.Socket>();
  const relay = net.createServer((client) => {
    all.add(client);
    // Each request gets an upstream connection of its own (a client that gives up on a response
    // and sends another request on its connection, as a browser does, must not queue it behind
    // a stream that never ends).
    let upstream: net.Socket | null = null;
    const open = (stream: boolean) => {
      upstream?.destroy();
      const up = net.connect(target, "127.0.0.1");
      all.add(up);
      upstream = up;
      let headDone = false;
      let held: Buffer[] = [];
      up.on("data", (chunk) => {
        if (!stream) return void client.write(chunk);
        if (!headDone) {
          const end = chunk.toString("latin1").indexOf("\r\n\r\n");
          if (end < 0) return void client.write(chunk);
          headDone = true;
          client.write(chunk.subarray(0, end + 4));
          held.push(chunk.subarray(end + 4));
          return;
        }
        held.push(chunk);
      });
      // The held body goes out when the response ends (never, for a stream that stays open).
      const done = () => {
        if (upstream === up && held.length && !client.destroyed) client.write(Buffer.concat(held));
        held = [];
      };
      up.on("end", done);
      up.on("error", () => client.destroy());
      return up;
    };
    client.on("data", (chunk) => {
      const text = chunk.toString("latin1");
      if (/^[A-Z]+ /.test(text) || upstream === null) {
        const line = text.split("\r\n")[0];
        open(line.startsWith("GET /events") && !line.includes("poll="));
      }
      upstream!.write(chunk);
    });
    const close = () => {
      upstream?.destroy();
      client.destroy();
    };
    client.on("error", close);
    client.on("close", close);
  });
  await new Promise<void>((resolve) => relay.listen(port, "127.0.0.1", resolve));
  return {
    url: `http://127.0.0.1:${port}`,
    async stop() {
      for (const s of all) s.destroy();
      await new Promise<void>((resolve) => relay.close(() => resolve()));
    },
  };
}

test("behind a proxy that holds the stream back, the page polls instead, says why, and shows changes", async ({
  browser,
}) => {
  const server = await startApp({ env: { SSE_HEARTBEAT_SECONDS: "1" } });
  const proxy = await startBufferingProxy(Number(new URL(server.url).port));
  try {
    const page = await (await browser.newContext()).newPage();
    const opened = Date.now();
    await page.goto(proxy.url);
    // Two streams that open and say nothing for two heartbeats and 3 s (5 s each, checked every
    // second): then polls.
    await expect(page.getByTestId("stream-error")).toHaveAttribute("data-code", "held_back", { timeout: 16_000 });
    console.log(`held back: the page polled ${Date.now() - opened} ms after it opened`);
    await expect(page.getByTestId("status")).toHaveAttribute("data-status", "live");
    const title = `made behind a buffering proxy ${Date.now()}`;
    const made = Date.now();
    await createTask(server, title);
    await expect(row(page, title)).toBeVisible({ timeout: 5_000 });
    console.log(`through the polls: the change showed ${Date.now() - made} ms after it was made`);
  } finally {
    await proxy.stop();
    await server.stop();
  }
});

test("a page that holds a bearer token sends it with its stream (polls), a refreshed token with the next poll, and stays live", async ({
  browser,
}) => {
  const server = await startApp();
  try {
    const context = await browser.newContext();
    await context.addInitScript(() => {
      if (!localStorage.getItem("sse-authorization")) localStorage.setItem("sse-authorization", "Bearer first-token");
    });
    const page = await context.newPage();
    const sent: { url: string; authorization?: string }[] = [];
    page.on("request", (r) => {
      if (r.url().includes("/events")) sent.push({ url: r.url(), authorization: r.headers()["authorization"] });
    });
    await page.goto(server.url);
    await expect(page.getByTestId("status")).toHaveAttribute("data-status", "live", { timeout: 10_000 });
    const first = `seen with the first token ${Date.now()}`;
    await createTask(server, first);
    await expect(row(page, first)).toBeVisible({ timeout: 5_000 });
    expect(sent.length).toBeGreaterThan(0);
    expect(sent.every((r) => r.url.includes("poll=")), "carried by polls, which can send headers").toBe(true);
    expect(sent.every((r) => r.authorization === "Bearer first-token")).toBe(true);

    // The token is refreshed: the next poll carries the new one, and nothing is missed.
    await page.evaluate(() => localStorage.setItem("sse-authorization", "Bearer second-token"));
    const second = `seen with the second token ${Date.now()}`;
    const before = sent.length;
    await createTask(server, second);
    await expect(row(page, second)).toBeVisible({ timeout: 5_000 });
    await expect.poll(() => sent.slice(before).some((r) => r.authorization === "Bearer second-token")).toBe(true);
  } finally {
    await server.stop();
  }
});

test("a bearer token that expires mid-stream is refused; the page's refreshed token resumes the stream from its cursor, missing nothing", async ({
  browser,
}) => {
  const server = await startApp({ env: { TOKEN_TTL_SECONDS: "6" } });
  try {
    const carol = await (await browser.newContext()).newPage();
    await carol.goto(`${server.url}/crm`);
    await signIn(carol, "carol");
    await openThread(carol, 1);

    const bob = await (await browser.newContext()).newPage();
    await bob.goto(`${server.url}/crm`);
    await signIn(bob, "bob");
    const mint = async () => {
      const answer = await bob.request.post(`${server.url}/api/crm/token`);
      expect(answer.status()).toBe(200);
      return (await answer.json()).token as string;
    };
    const polls: { authorization?: string; cursor?: string; status: number }[] = [];
    bob.on("response", (r) => {
      if (!r.url().includes("/events?") || !r.url().includes("poll=")) return;
      const headers = r.request().headers();
      polls.push({ authorization: headers["authorization"], cursor: headers["last-event-id"], status: r.status() });
    });
    const first = await mint();
    await bob.evaluate((t) => localStorage.setItem("sse-authorization", `Bearer ${t}`), first);
    await bob.reload();
    await expect(bob.getByTestId("whoami")).toHaveText("bob");
    await expect(bob.getByTestId("status")).toHaveAttribute("data-status", "live", { timeout: 10_000 });
    await openThread(bob, 1);
    await writeComment(carol, "before it expires");
    await expect(comment(bob, "before it expires")).toBeVisible({ timeout: 5_000 });

    // The token lasts 6 s. Once the server refuses it, a comment ends the poll in flight and
    // the next one is refused: the stream stops, and its cursor must not move.
    await expect
      .poll(
        async () =>
          (await bob.request.get(`${server.url}/events?topic=comment_thread:1&poll=1`, {
            headers: { authorization: `Bearer ${first}` },
          })).status(),
        { timeout: 15_000 },
      )
      .toBe(403);
    await writeComment(carol, "while it is expired");
    await expect.poll(() => polls.some((p) => p.status === 403 && p.authorization === `Bearer ${first}`), { timeout: 10_000 }).toBe(true);
    await writeComment(carol, "still expired");
    await expect(comment(bob, "still expired")).toHaveCount(0);
    expect(polls.every((p) => p.authorization === `Bearer ${first}`)).toBe(true);

    // The app refreshes its token: the next poll carries it, from the cursor the refused one had.
    const second = await mint();
    await bob.evaluate((t) => localStorage.setItem("sse-authorization", `Bearer ${t}`), second);
    await expect(comment(bob, "still expired")).toBeVisible({ timeout: 6_000 });
    await expect(comment(bob, "while it is expired")).toHaveCount(1);
    await expect(comment(bob, "before it expires")).toHaveCount(1);
    await expect(bob.getByTestId("status")).toHaveAttribute("data-status", "live");
    const refused = polls.filter((p) => p.status === 403).at(-1)!;
    const resumed = polls.find((p) => p.status === 200 && p.authorization === `Bearer ${second}`)!;
    expect(refused.cursor, "the refused poll resumed from a cursor").toBeTruthy();
    expect(resumed.cursor, "the refreshed token resumed where the refused one stopped").toBe(refused.cursor);
  } finally {
    await server.stop();
  }
});

test("a page hidden past pause_when_hidden leaves its stream (the server's connection closes); shown again it resumes from its cursor and shows what came meanwhile", async ({
  browser,
}) => {
  const server = await startApp({ env: { PAUSE_WHEN_HIDDEN_SECONDS: "2" } });
  try {
    const context = await browser.newContext();
    await playVisibility(context);
    await trackEventSources(context);
    const { page, data } = await liveBoard(context, server);
    await createTask(server, "before it hides");
    await expect(row(page, "before it hides")).toBeVisible({ timeout: 5_000 });
    await settled(data);
    expect(await openStreams(server)).toBe(1);

    await page.evaluate(() => (window as any).__setHidden(true));
    await expect.poll(() => openStreams(server), { timeout: 10_000 }).toBe(0);
    expect(await holdsStream(page)).toBe(false);
    await expect(page.getByTestId("status")).not.toHaveAttribute("data-status", "live");
    await createTask(server, "while it is hidden");

    await page.evaluate(() => (window as any).__setHidden(false));
    await expect(row(page, "while it is hidden")).toBeVisible({ timeout: 3_000 });
    await expect(page.getByTestId("status")).toHaveAttribute("data-status", "live");
    expect(await openStreams(server)).toBe(1);
    const urls: string[] = await page.evaluate(() => (window as any).__eventSources.map((es: EventSource) => es.url));
    expect(urls.length, "one stream before the pause, one after").toBe(2);
    expect(urls[1], "resumed from the cursor it left at").toMatch(/last_event_id=[0-9a-f]/);
    expect(urls[1]).not.toBe(urls[0]);
  } finally {
    await server.stop();
  }
});

test("two tabs, one hidden past the pause: the visible one stays live and current, the hidden one fetches nothing meanwhile, and shown again is current and live", async ({
  browser,
}) => {
  const server = await startApp({ env: { PAUSE_WHEN_HIDDEN_SECONDS: "2" } });
  try {
    const context = await browser.newContext();
    await playVisibility(context);
    await trackEventSources(context);
    const { page: first, data: firstData } = await liveBoard(context, server);
    const { page: second, data: secondData } = await liveBoard(context, server);
    await settled(firstData);
    await settled(secondData);

    // Each tab in turn is the hidden one: the one holding the stream, then the other.
    for (const [round, hidden, shown, hiddenData] of [
      [1, first, second, firstData],
      [2, second, first, secondData],
    ] as const) {
      await hidden.evaluate(() => (window as any).__setHidden(true));
      // Past the pause (2 s), the hidden tab has left: a change reaches the visible tab only.
      // A tab reads its visibility at its beats (one a second): it counts the hidden time from
      // the first beat that finds it hidden and leaves at the first beat past the pause, so it
      // has left between 2 and 4 s after it was hidden. (Waiting 3 s raced that: half the runs
      // made the change before the hidden tab had left.)
      await expect.poll(() => hidden.evaluate(() => document.visibilityState)).toBe("hidden");
      await new Promise((r) => setTimeout(r, 4_500));
      const fetched = hiddenData.started.length;
      const title = `while tab ${round === 1 ? "one" : "two"} is hidden ${Date.now()}`;
      await createTask(server, title);
      await expect(row(shown, title)).toBeVisible({ timeout: 5_000 });
      await expect(shown.getByTestId("status")).toHaveAttribute("data-status", "live");
      await new Promise((r) => setTimeout(r, 500));
      expect(hiddenData.started.length, "the hidden tab fetched for a change it does not show").toBe(fetched);

      await hidden.evaluate(() => (window as any).__setHidden(false));
      await expect(row(hidden, title)).toBeVisible({ timeout: 3_000 });
      await expect(hidden.getByTestId("status")).toHaveAttribute("data-status", "live", { timeout: 3_000 });
      await expect(shown.getByTestId("status")).toHaveAttribute("data-status", "live");
      await expect(row(hidden, title)).toHaveCount(1);
      // Live for what comes next too, both of them, past the time a follower hears its leader.
      await new Promise((r) => setTimeout(r, 4_000));
      await expect(hidden.getByTestId("status")).toHaveAttribute("data-status", "live");
      await expect(shown.getByTestId("status")).toHaveAttribute("data-status", "live");
    }
    expect((await holdsStream(first)) !== (await holdsStream(second)), "one stream for the two tabs").toBe(true);
  } finally {
    await server.stop();
  }
});

test("the notifications that came while a page was away all show, in order, when it is back (one answer brings them together)", async ({
  browser,
}) => {
  const server = await startApp({ env: { PAUSE_WHEN_HIDDEN_SECONDS: "2" } });
  try {
    const carol = await (await browser.newContext()).newPage();
    await carol.goto(`${server.url}/crm`);
    await signIn(carol, "carol");
    await openThread(carol, 1);

    const bobContext = await browser.newContext();
    await playVisibility(bobContext);
    const bob = await bobContext.newPage();
    await bob.goto(`${server.url}/crm`);
    await signIn(bob, "bob");
    // Carried by polls (a bearer token), whose one answer brings what was missed at once.
    const token = (await (await bob.request.post(`${server.url}/api/crm/token`)).json()).token as string;
    await bob.evaluate((t) => localStorage.setItem("sse-authorization", `Bearer ${t}`), token);
    await bob.reload();
    await expect(bob.getByTestId("status")).toHaveAttribute("data-status", "live", { timeout: 10_000 });
    const notes = bob.getByTestId("notification");
    await writeComment(carol, "first reply");
    await expect(notes).toHaveCount(1, { timeout: 5_000 });

    await bob.evaluate(() => (window as any).__setHidden(true));
    await new Promise((r) => setTimeout(r, 3_000));
    await writeComment(carol, "second reply");
    await writeComment(carol, "third reply");
    await bob.evaluate(() => (window as any).__setHidden(false));
    await expect(notes).toHaveCount(3, { timeout: 5_000 });
    await new Promise((r) => setTimeout(r, 500));
    await expect(notes).toHaveCount(3);
  } finally {
    await server.stop();
  }
});
