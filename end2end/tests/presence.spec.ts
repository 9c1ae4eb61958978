import { test, expect, Page, BrowserContext } from "@playwright/test";
import { startApp, AppServer } from "../support/servers";
import { crmTab } from "../support/crm";

// Presence: two browsers see each other on the board and in a CRM thread, join and leave; the
// server-rendered page already lists who is there; dave (another team) sees nothing of Acme's
// thread.

const members = (page: Page, testid: string) => page.getByTestId(testid).locator('[data-testid="member"]');

async function names(page: Page, testid: string): Promise<string[]> {
  return (await members(page, testid).evaluateAll((els) => els.map((e) => e.getAttribute("data-name") ?? ""))).sort();
}

/** A signed-in browser (the CRM sign-in) on the board. */
async function onBoard(context: BrowserContext, server: AppServer, name: string): Promise<Page> {
  const { page } = await crmTab(context, server, 1, name);
  await page.goto(server.url);
  await expect(page.getByTestId("status")).toHaveAttribute("data-status", "live", { timeout: 10_000 });
  return page;
}

test("a second tab of a browser shares the first's stream and follows who comes and goes", async ({ browser }) => {
  const server = await startApp();
  try {
    const bobContext = await browser.newContext();
    const first = await onBoard(bobContext, server, "bob");
    await expect.poll(() => names(first, "board-here"), { timeout: 10_000 }).toEqual(["bob"]);
    // The second tab rides the first tab's stream, which already follows the board: the
    // members it shows after its first paint come from the state the leading tab sends it.
    const second = await bobContext.newPage();
    await second.goto(server.url);
    await expect(second.getByTestId("status")).toHaveAttribute("data-status", "live", { timeout: 10_000 });
    const carol = await onBoard(await browser.newContext(), server, "carol");
    for (const page of [first, second, carol]) {
      await expect.poll(() => names(page, "board-here"), { timeout: 10_000 }).toEqual(["bob", "carol"]);
    }
    await carol.close();
    await expect.poll(() => names(second, "board-here"), { timeout: 10_000 }).toEqual(["bob"]);
  } finally {
    await server.stop();
  }
});

test("two browsers see each other on the board and in a thread, and see a closed tab leave", async ({ browser }) => {
  const server = await startApp();
  try {
    const bob = await onBoard(await browser.newContext(), server, "bob");
    await expect.poll(() => names(bob, "board-here"), { timeout: 10_000 }).toEqual(["bob"]);

    const carolContext = await browser.newContext();
    const carol = await onBoard(carolContext, server, "carol");
    await expect.poll(() => names(carol, "board-here"), { timeout: 10_000 }).toEqual(["bob", "carol"]);
    await expect.poll(() => names(bob, "board-here"), { timeout: 10_000 }).toEqual(["bob", "carol"]);

    // The server-rendered page already lists bob (no "nobody" first): read its HTML as sent.
    const html = await (await carolContext.request.get(server.url)).text();
    expect(html).toContain('data-name="bob"');

    // carol closes her tab: bob sees her leave.
    await carol.close();
    await expect.poll(() => names(bob, "board-here"), { timeout: 10_000 }).toEqual(["bob"]);

    // In a CRM thread: bob and carol see each other; dave, of Globex, sees neither.
    const bobThread = await crmTab(await browser.newContext(), server, 1, "bob");
    const carolThread = await crmTab(await browser.newContext(), server, 1, "carol");
    await expect.poll(() => names(bobThread.page, "thread-here"), { timeout: 10_000 }).toEqual(["bob", "carol"]);
    await expect.poll(() => names(carolThread.page, "thread-here"), { timeout: 10_000 }).toEqual(["bob", "carol"]);
    const dave = await (await browser.newContext()).newPage();
    await dave.goto(`${server.url}/crm`);
    await dave.getByTestId("sign-in-dave").click();
    await expect(dave.getByTestId("whoami")).toHaveText("dave");
    await expect(dave.getByTestId("thread-1")).toHaveCount(0); // Acme's threads are not his
    // Asked directly, the stream of Acme's thread is refused him, so no presence either.
    const asked = await dave.evaluate(async () => (await fetch("/events?topic=comment_thread:1")).status);
    expect(asked).toBe(403);
    await dave.getByTestId("thread-3").click();
    await expect.poll(() => names(dave, "thread-here"), { timeout: 10_000 }).toEqual(["dave"]);
    expect(await names(bobThread.page, "thread-here")).toEqual(["bob", "carol"]);
  } finally {
    await server.stop();
  }
});
