import { expect, Page } from "@playwright/test";

// What the tests do on the CRM page: open a thread, find and write comments.

/** Opens thread `id` on a signed-in CRM page and waits until it is shown and live. */
export async function openThread(page: Page, id: number) {
  await page.getByTestId(`thread-${id}`).click();
  await expect(page.getByTestId("thread")).toHaveAttribute("data-id", String(id));
  await expect(page.getByTestId("status")).toHaveAttribute("data-status", "live");
}

/** The comment `text` of the open thread. */
export const comment = (page: Page, text: string) => page.locator(`li[data-testid="comment"][data-text="${text}"]`);

/** Writes `text` in the open thread and waits until the writer's page shows it. */
export async function writeComment(page: Page, text: string) {
  await page.getByTestId("new-comment").fill(text);
  await page.getByTestId("send").click();
  await expect(comment(page, text)).toBeVisible({ timeout: 5_000 });
}
