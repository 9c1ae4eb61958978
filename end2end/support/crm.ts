import { expect, BrowserContext, Page } from "@playwright/test";
import { AppServer } from "./servers";
import { watchDataRequests } from "./board";

// What the tests do on the CRM page: open a thread, find and write comments.

/** Signs `name` in on a CRM page and waits until it is live. A click before the page has
 * hydrated signs in through the form's post, and the page that comes back is the server's
 * rendering: a thread clicked before it has hydrated too does nothing. Live means hydrated. */
export async function signIn(page: Page, name: string) {
  await page.getByTestId(`sign-in-${name}`).click();
  await expect(page.getByTestId("whoami")).toHaveText(name);
  await expect(page.getByTestId("status")).toHaveAttribute("data-status", "live", { timeout: 10_000 });
}

/** Opens thread `id` on a signed-in CRM page and waits until it is shown and live. */
export async function openThread(page: Page, id: number) {
  await page.getByTestId(`thread-${id}`).click();
  await expect(page.getByTestId("thread")).toHaveAttribute("data-id", String(id));
  await expect(page.getByTestId("status")).toHaveAttribute("data-status", "live");
}

/** A new CRM tab of `context` on thread `thread`, its data requests counted from the start;
 * `name` signs in first (later tabs of the context share the session). */
export async function crmTab(context: BrowserContext, server: AppServer, thread: number, name?: string) {
  const page = await context.newPage();
  const data = watchDataRequests(page);
  await page.goto(`${server.url}/crm`);
  if (name) await signIn(page, name);
  // A tab that shares the session is signed in from its first rendering, but a thread clicked
  // before the page has hydrated does nothing: wait until it is live (hydrated) first. (On a
  // loaded machine the click came first and the thread never opened.)
  else await expect(page.getByTestId("status")).toHaveAttribute("data-status", "live", { timeout: 10_000 });
  await openThread(page, thread);
  return { page, data };
}

/** The comment `text` of the open thread. */
export const comment = (page: Page, text: string) => page.locator(`li[data-testid="comment"][data-text="${text}"]`);

/** Writes `text` in the open thread and waits until the writer's page shows it. */
export async function writeComment(page: Page, text: string) {
  await page.getByTestId("new-comment").fill(text);
  await page.getByTestId("send").click();
  await expect(comment(page, text)).toBeVisible({ timeout: 5_000 });
}
