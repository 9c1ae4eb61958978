import { test, expect } from "@playwright/test";
import { startApp, startRedis, freePort } from "../support/servers";
import { trackEventSources } from "../support/board";
import { openThread, signIn, writeComment } from "../support/crm";

// A page served by one origin following an events endpoint on another (`EVENTS_URL`), with the
// page's cookies (`with_credentials`): the CRM's per-user topic needs the session cookie, so the
// stream is live only if the browser sent it and the other server let this origin in
// (`CORS_ORIGINS`). Both servers share one Redis, so the session and the events are the same.

test("a page on one origin follows an events path on another, with credentials and CORS_ORIGINS", async ({ browser }) => {
  const redis = await startRedis();
  const pagePort = await freePort();
  const pageOrigin = `http://127.0.0.1:${pagePort}`;
  // The events server allows the page's origin; a second one does not.
  const events = await startApp({ redisUrl: redis.url, env: { CORS_ORIGINS: pageOrigin } });
  const closed = await startApp({ redisUrl: redis.url });
  const site = await startApp({ redisUrl: redis.url, port: pagePort, env: { EVENTS_URL: `${events.url}/events` } });
  let siteUp = true;
  try {
    const context = await browser.newContext();
    await trackEventSources(context);
    const bob = await context.newPage();
    await bob.goto(`${site.url}/crm`);
    await bob.getByTestId("sign-in-bob").click();
    await expect(bob.getByTestId("whoami")).toHaveText("bob");
    // Live: the stream is the other server's, and it took bob's session cookie.
    await expect(bob.getByTestId("status")).toHaveAttribute("data-status", "live", { timeout: 10_000 });
    await expect(bob.getByTestId("stream-error")).toHaveCount(0);
    const urls = await bob.evaluate(() => ((window as any).__eventSources as EventSource[]).map((s) => s.url));
    expect(urls.length).toBeGreaterThan(0);
    for (const url of urls) expect(new URL(url).origin).toBe(new URL(events.url).origin);
    expect(await bob.evaluate(() => ((window as any).__eventSources as EventSource[])[0].withCredentials)).toBe(true);

    // Events reach it: Carol comments on bob's thread (on the site's server), bob is notified
    // through the events server.
    await openThread(bob, 1);
    const carol = await (await browser.newContext()).newPage();
    await carol.goto(`${site.url}/crm`);
    await signIn(carol, "carol");
    await openThread(carol, 1);
    await writeComment(carol, "across origins");
    await expect(bob.locator(`li[data-testid="comment"][data-text="across origins"]`)).toBeVisible({ timeout: 5_000 });
    await expect(bob.getByTestId("notification")).toHaveText("carol replied in your thread “Acme renewal”", {
      timeout: 5_000,
    });

    // The control: an events server that does not list the site's origin is refused by the
    // browser (CORS): the page shows the stream's error and never goes live.
    await site.stop();
    siteUp = false;
    const blocked = await startApp({ redisUrl: redis.url, port: pagePort, env: { EVENTS_URL: `${closed.url}/events` } });
    try {
      const page = await (await browser.newContext()).newPage();
      await page.goto(`${blocked.url}/crm`);
      await page.getByTestId("sign-in-bob").click();
      await expect(page.getByTestId("whoami")).toHaveText("bob");
      await expect(page.getByTestId("stream-error")).toBeVisible({ timeout: 10_000 });
      expect(await page.getByTestId("status").getAttribute("data-status")).not.toBe("live");
    } finally {
      await blocked.stop();
    }
  } finally {
    await events.stop();
    await closed.stop();
    if (siteUp) await site.stop();
    await redis.stop();
  }
});
