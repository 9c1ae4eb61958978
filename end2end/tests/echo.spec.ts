import { test, expect, Page } from "@playwright/test";
import { startApp } from "../support/servers";
import { createTask, row } from "../support/board";

// No echo: the tab that made a change has it from its write's answer, and the event of its own
// write does not refetch its list; its sibling tab (same browser, another origin) and another
// browser refetch once.

/** Counts the page's refetches of the board list (the `list_tasks` server function). */
function countListReads(page: Page): () => number {
  let n = 0;
  page.on("request", (r) => {
    if (new URL(r.url()).pathname.startsWith("/api/list_tasks")) n++;
  });
  return () => n;
}

async function live(page: Page, url: string) {
  await page.goto(url);
  await expect(page.getByTestId("status")).toHaveAttribute("data-status", "live", { timeout: 10_000 });
}

test("the writer tab does not refetch for its own change; its sibling tab and another browser do, once", async ({ browser }) => {
  const server = await startApp();
  try {
    const browserA = await browser.newContext();
    const [writer, sibling] = [await browserA.newPage(), await browserA.newPage()];
    const other = await (await browser.newContext()).newPage();
    for (const page of [writer, sibling, other]) await live(page, server.url);
    const reads = new Map([writer, sibling, other].map((p) => [p, countListReads(p)]));
    const readsOf = (p: Page) => reads.get(p)!();

    // 1. A task added in the writer tab shows there at once, from the write's answer.
    const mine = `mine ${Date.now()}`;
    await writer.getByTestId("new-title").fill(mine);
    await writer.getByTestId("add").click();
    for (const page of [writer, sibling, other]) await expect(row(page, mine)).toBeVisible({ timeout: 10_000 });

    // 2. A change from outside follows on the same stream: once the writer shows it, the
    //    writer has handled its own event too (events arrive in order).
    const theirs = `theirs ${Date.now()}`;
    await createTask(server, theirs);
    for (const page of [writer, sibling, other]) await expect(row(page, theirs)).toBeVisible({ timeout: 10_000 });
    await expect.poll(() => readsOf(sibling), { timeout: 10_000 }).toBeGreaterThanOrEqual(1);

    // The writer read the list once, for the change from outside; the others read it for both
    // changes (a refetch already running may cover two events: at most 2, at least 1).
    expect(readsOf(writer), "the writer tab's refetches").toBe(1);
    for (const page of [sibling, other]) {
      expect(readsOf(page)).toBeGreaterThanOrEqual(1);
      expect(readsOf(page)).toBeLessThanOrEqual(2);
    }

    // 3. A rename in the writer: the others see it, and then a change from outside again.
    const before = new Map([writer, sibling, other].map((p) => [p, readsOf(p)]));
    const renamed = `${mine} renamed`;
    const title = row(writer, mine).getByTestId("title");
    await title.fill(renamed);
    await title.press("Enter");
    for (const page of [writer, sibling, other]) await expect(row(page, renamed)).toBeVisible({ timeout: 10_000 });
    const last = `last ${Date.now()}`;
    await createTask(server, last);
    for (const page of [writer, sibling, other]) await expect(row(page, last)).toBeVisible({ timeout: 10_000 });
    expect(readsOf(writer) - before.get(writer)!, "the writer's rename cost it no read").toBe(1);
    for (const page of [sibling, other]) expect(readsOf(page) - before.get(page)!).toBeGreaterThanOrEqual(1);
  } finally {
    await server.stop();
  }
});

test("no one else can make a tab skip their change: an attacker who reads every id and sends any sse-origin", async ({ browser }) => {
  const server = await startApp();
  try {
    const victim = await (await browser.newContext()).newPage();
    await live(victim, server.url);
    // The attacker follows the board's topic in its own browser and keeps every id it reads.
    const attacker = await (await browser.newContext()).newPage();
    await attacker.goto(`${server.url}/health`);
    await attacker.evaluate(
      () =>
        new Promise<void>((opened) => {
          const w = window as unknown as { seen: { name: string; id: string; data: string }[] };
          w.seen = [];
          const es = new EventSource("/events?topic=tasks");
          for (const name of ["task:created", "task:updated"]) {
            es.addEventListener(name, (e) => w.seen.push({ name, id: (e as MessageEvent).lastEventId, data: (e as MessageEvent).data }));
          }
          es.onopen = () => opened();
        }),
    );

    // The victim writes: its event's id is what the attacker reads.
    const mine = `victim ${Date.now()}`;
    await victim.getByTestId("new-title").fill(mine);
    await victim.getByTestId("add").click();
    await expect(row(victim, mine)).toBeVisible({ timeout: 10_000 });
    const created = await attacker.waitForFunction(
      () => (window as unknown as { seen: { name: string; id: string; data: string }[] }).seen.find((e) => e.name === "task:created"),
      undefined,
      { timeout: 10_000 },
    );
    const { id, data } = (await created.jsonValue()) as { id: string; data: string };
    expect(id.split("-").length, `the victim's own write carries an echo tag: ${id}`).toBe(5);
    const task = JSON.parse(data).id as number;

    // Every piece of that id, sent back as the attacker's origin (the fifth is the tag the
    // victim's tab recognises as its own): the victim's board shows every rename.
    for (const [i, origin] of id.split("-").entries()) {
      const title = `renamed by the attacker ${i}`;
      const resp = await fetch(`${server.url}/api/tasks/${task}`, {
        method: "PUT",
        headers: { "content-type": "application/json", "sse-origin": origin },
        body: JSON.stringify({ title }),
      });
      expect(resp.status).toBe(200);
      await expect(row(victim, title), `sse-origin ${origin} hid the change from the victim`).toBeVisible({ timeout: 10_000 });
    }
  } finally {
    await server.stop();
  }
});
