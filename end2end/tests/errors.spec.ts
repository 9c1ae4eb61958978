import { test, expect } from "@playwright/test";
import { startApp } from "../support/servers";

// live.error, as the demo renders it: what the server answered when it refused the stream (its
// status, its JSON code, and its message, which names the topic for a 403), and that it clears
// once the stream is let in.

const streamError = (page: import("@playwright/test").Page) => page.getByTestId("stream-error");

test("a full server: the second browser shows 503 too_many_connections, and goes live once a place frees", async ({
  browser,
}) => {
  const server = await startApp({ env: { SSE_MAX_CONNECTIONS: "1" } });
  try {
    const first = await (await browser.newContext()).newPage();
    await first.goto(server.url);
    await expect(first.getByTestId("status")).toHaveAttribute("data-status", "live");
    await expect(streamError(first)).toHaveCount(0);

    // Another browser (its own profile, so its own stream) finds the only place taken.
    const second = await (await browser.newContext()).newPage();
    await second.goto(server.url);
    await expect(streamError(second)).toHaveAttribute("data-http-status", "503", { timeout: 10_000 });
    await expect(streamError(second)).toHaveAttribute("data-code", "too_many_connections");
    await expect(second.getByTestId("status")).not.toHaveAttribute("data-status", "live");

    // The first browser leaves: the second's retry gets in, and the error clears.
    await first.context().close();
    await expect(second.getByTestId("status")).toHaveAttribute("data-status", "live", { timeout: 15_000 });
    await expect(streamError(second)).toHaveCount(0);
  } finally {
    await server.stop();
  }
});

test("signed out in another tab: the open page shows 403 forbidden naming its topic", async ({ browser }) => {
  const server = await startApp({ env: { AUTH_RECHECK_SECONDS: "1" } });
  try {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${server.url}/crm`);
    await page.getByTestId("sign-in-bob").click();
    await expect(page.getByTestId("whoami")).toHaveText("bob");
    await expect(page.getByTestId("status")).toHaveAttribute("data-status", "live");
    await expect(streamError(page)).toHaveCount(0);

    // Bob signs out in another tab: the session ends on the server, the re-check closes the
    // stream, and its reconnect (without a session now) is refused for bob's own topic.
    const other = await context.newPage();
    await other.goto(`${server.url}/crm`);
    await other.getByTestId("sign-out").click();
    await expect(other.getByTestId("sign-in-bob")).toBeVisible();

    await expect(streamError(page)).toHaveAttribute("data-http-status", "403", { timeout: 10_000 });
    await expect(streamError(page)).toHaveAttribute("data-code", "forbidden");
    await expect(streamError(page)).toContainText('"user:2"');
  } finally {
    await server.stop();
  }
});
