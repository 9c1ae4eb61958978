import { test, expect, Page, Route } from "@playwright/test";
import { startApp, AppServer } from "../support/servers";
import { createTask, liveBoard, renameTask, row, settled, watchDataRequests } from "../support/board";

// Writes as part of the hook (`OwnChanges` on the board): the writer shows its change at once
// and never flickers or ends on older data, whatever order the write's answer, its refetches
// and other tabs' changes arrive in; a failed write is rolled back and says why; a write whose
// answer was lost is sent again with its idempotency key and happens once. Answers are delayed,
// failed and dropped with Playwright's request interception.

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Records, every 10 ms in the page, the titles its board shows (the rows' `data-title`s). */
async function sampleTitles(page: Page) {
  await page.evaluate(() => {
    const w = window as unknown as { __titles: string[][] };
    w.__titles = [];
    setInterval(() => {
      const rows = Array.from(document.querySelectorAll('li[data-testid="task"]'));
      w.__titles.push(rows.map((r) => r.getAttribute("data-title") ?? ""));
    }, 10);
  });
  return async () => page.evaluate(() => (window as unknown as { __titles: string[][] }).__titles);
}

/** Counts, in the page, the `event` frames its own EventSource on `topic` gets. */
async function countEvents(page: Page, server: AppServer, event: string) {
  await page.evaluate(
    ([url, event]) => {
      const w = window as unknown as { __events: string[] };
      w.__events = [];
      const source = new EventSource(url);
      source.addEventListener(event, (e) => w.__events.push((e as MessageEvent).data));
      return new Promise((resolve) => source.addEventListener("open", resolve));
    },
    [`${server.url}/events?topic=tasks`, event],
  );
  return async () => page.evaluate(() => (window as unknown as { __events: string[] }).__events);
}

test("the writer shows its change at once, before the answer; a sibling tab and another browser show it once", async ({ browser }) => {
  const server = await startApp();
  try {
    const mine = await browser.newContext();
    const writer = await liveBoard(mine, server);
    const sibling = await liveBoard(mine, server);
    const other = await liveBoard(await browser.newContext(), server);
    for (const p of [writer, sibling, other]) await settled(p.data);
    const reads = (p: { data: { started: string[] } }) => p.data.started.filter((r) => r.includes("list_tasks")).length;
    const before = [writer, sibling, other].map(reads);

    // The answer is held back 1 s.
    let answered = false;
    await writer.page.route("**/api/create_task*", async (route) => {
      const response = await route.fetch();
      await sleep(1000);
      await route.fulfill({ response });
      answered = true;
    });
    const titles = await sampleTitles(writer.page);
    const title = `at once ${Date.now()}`;
    await writer.page.getByTestId("new-title").fill(title);
    await writer.page.getByTestId("add").click();
    await expect(row(writer.page, title)).toBeVisible({ timeout: 500 });
    expect(answered, "shown before its answer came").toBe(false);
    await expect(writer.page.getByTestId("saving")).toBeVisible();
    await expect(writer.page.getByTestId("saving")).toBeHidden({ timeout: 5_000 });
    expect(answered).toBe(true);
    // Under its stored id now, from the answer.
    const id = await row(writer.page, title).getAttribute("data-id");
    const stored = (await (await fetch(`${server.url}/api/tasks`)).json()) as { id: number; title: string }[];
    expect(stored.filter((t) => t.title === title).map((t) => String(t.id))).toEqual([id]);

    for (const p of [sibling, other]) await expect(row(p.page, title)).toHaveCount(1, { timeout: 5_000 });
    await sleep(300);
    for (const p of [writer, sibling, other]) await settled(p.data);
    const after = [writer, sibling, other].map(reads);
    expect(after[0] - before[0], "the writer read nothing for its own change").toBe(0);
    expect(after[1] - before[1], "the sibling tab refetched once").toBe(1);
    expect(after[2] - before[2], "another browser refetched once").toBe(1);
    // Never twice, never gone once shown.
    const samples = (await titles()).map((s) => s.filter((t) => t === title).length);
    const first = samples.indexOf(1);
    expect(first).toBeGreaterThanOrEqual(0);
    expect(samples.slice(first).every((n) => n === 1), `samples: ${samples.join("")}`).toBe(true);
  } finally {
    await server.stop();
  }
});

test("an answer held back while another tab changes the same task: the writer ends on the newest, never older after newer", async ({ browser }) => {
  const server = await startApp();
  try {
    const task = await createTask(server, `race ${Date.now()}`);
    const writer = await liveBoard(await browser.newContext(), server);
    await expect(row(writer.page, task.title)).toBeVisible();
    await settled(writer.data);
    const newest = `${task.title} theirs`;
    // The writer's rename is made on the server, then someone else renames the task, and only
    // then, 1 s later, does the writer get its answer.
    let newestBeforeAnswer = false;
    await writer.page.route("**/api/rename_task*", async (route) => {
      const response = await route.fetch();
      await renameTask(server, task.id, newest);
      // The newer change comes on the stream at once: the page holds it, and shows it, while
      // its own answer is still held back.
      const until = Date.now() + 1000;
      while (!newestBeforeAnswer && Date.now() < until) {
        newestBeforeAnswer = (await row(writer.page, newest).count()) === 1;
        await sleep(20);
      }
      await sleep(Math.max(0, until - Date.now()));
      await route.fulfill({ response });
    });
    const titles = await sampleTitles(writer.page);
    const input = writer.page.locator(`li[data-testid="task"][data-id="${task.id}"]`).getByTestId("title");
    const mine = `${task.title} mine`;
    await input.fill(mine);
    await input.press("Enter");
    await expect(writer.page.getByTestId("saving")).toBeVisible();
    await expect(writer.page.getByTestId("saving")).toBeHidden({ timeout: 5_000 });
    expect(newestBeforeAnswer, "the newer change showed before the writer's answer came").toBe(true);
    await sleep(300);
    await expect(row(writer.page, newest)).toHaveCount(1);
    await expect(row(writer.page, mine)).toHaveCount(0);
    const seen = (await titles()).map((s) => s.find((t) => t.startsWith(task.title)));
    const firstNewest = seen.indexOf(newest);
    expect(firstNewest, `the newest title shows: ${[...new Set(seen)].join(" | ")}`).toBeGreaterThanOrEqual(0);
    expect(seen.slice(firstNewest).every((t) => t === newest), `after the newest: ${[...new Set(seen.slice(firstNewest))].join(" | ")}`).toBe(true);
    expect(seen.slice(0, firstNewest).includes(mine), "its own change showed at once before").toBe(true);
  } finally {
    await server.stop();
  }
});

test("a failing write is rolled back and says why; nothing was published", async ({ browser }) => {
  const server = await startApp();
  try {
    const writer = await liveBoard(await browser.newContext(), server);
    const other = await liveBoard(await browser.newContext(), server);
    for (const p of [writer, other]) await settled(p.data);
    const otherReads = () => other.data.started.filter((r) => r.includes("list_tasks")).length;
    const before = otherReads();

    // 1. The server (or a proxy) fails it: 500.
    await writer.page.route("**/api/create_task*", (route: Route) =>
      route.fulfill({ status: 500, contentType: "application/json", body: '{"error":"internal","message":"the disk is full"}' }),
    );
    const title = `fails ${Date.now()}`;
    const titles = await sampleTitles(writer.page);
    await writer.page.getByTestId("new-title").fill(title);
    await writer.page.getByTestId("add").click();
    await expect(writer.page.getByTestId("write-error")).toHaveText("the disk is full", { timeout: 5_000 });
    await expect(writer.page.getByTestId("write-error")).toHaveAttribute("data-code", "internal");
    await expect(row(writer.page, title)).toHaveCount(0);
    expect((await titles()).some((s) => s.includes(title)), "it showed at once, before the failure").toBe(true);
    await writer.page.unroute("**/api/create_task*");

    // 2. The server refuses it (a title of 201 characters: 422): rolled back, nothing
    //    published, so no other page refetches.
    const long = "x".repeat(201);
    await writer.page.getByTestId("new-title").evaluate((el, v) => {
      (el as HTMLInputElement).removeAttribute("maxlength");
    }, null);
    await writer.page.getByTestId("new-title").fill(long);
    await writer.page.getByTestId("add").click();
    await expect(writer.page.getByTestId("write-error")).toHaveAttribute("data-code", "invalid_title", { timeout: 5_000 });
    await expect(row(writer.page, long)).toHaveCount(0);
    await sleep(500);
    await settled(other.data);
    expect(otherReads(), "no event: no other page refetched").toBe(before);
    const stored = (await (await fetch(`${server.url}/api/tasks`)).json()) as { title: string }[];
    expect(stored.some((t) => t.title === title || t.title === long)).toBe(false);
  } finally {
    await server.stop();
  }
});

test("a write whose answer is lost is sent again with its key: one task, one event, the first answer", async ({ browser }) => {
  const server = await startApp();
  try {
    const writer = await liveBoard(await browser.newContext(), server);
    const watcher = await liveBoard(await browser.newContext(), server);
    const created = await countEvents(watcher.page, server, "task:created");
    const attempts: { key: string | null; replayed: string | null }[] = [];
    await writer.page.route("**/api/create_task*", async (route) => {
      const key = route.request().headers()["idempotency-key"] ?? null;
      const response = await route.fetch();
      attempts.push({ key, replayed: response.headers()["idempotent-replayed"] ?? null });
      // The first answer is lost on the way back (the write was made).
      if (attempts.length === 1) await route.abort("connectionreset");
      else await route.fulfill({ response });
    });
    const title = `once ${Date.now()}`;
    await writer.page.getByTestId("new-title").fill(title);
    await writer.page.getByTestId("add").click();
    await expect(row(writer.page, title)).toHaveCount(1, { timeout: 500 });
    await expect(writer.page.getByTestId("saving")).toBeHidden({ timeout: 10_000 });
    expect(attempts.length, "sent again after the lost answer").toBe(2);
    expect(attempts[0].key, "with an idempotency key").toMatch(/^[A-Za-z0-9]{32}$/);
    expect(attempts[1].key, "the same key").toBe(attempts[0].key);
    expect(attempts.map((a) => a.replayed)).toEqual([null, "true"]);
    await expect(writer.page.getByTestId("write-error")).toHaveCount(0);

    // A marker after it: once the watcher has it, every event before it has come.
    const marker = await createTask(server, `marker ${Date.now()}`);
    await expect.poll(async () => (await created()).length, { timeout: 10_000 }).toBe(2);
    const events = await created();
    expect(events[1]).toBe(JSON.stringify({ id: marker.id }));
    const stored = (await (await fetch(`${server.url}/api/tasks`)).json()) as { id: number; title: string }[];
    const ours = stored.filter((t) => t.title === title);
    expect(ours.length, "one task").toBe(1);
    expect(events[0]).toBe(JSON.stringify({ id: ours[0].id }));
    await expect(row(watcher.page, title)).toHaveCount(1);
    await expect(row(writer.page, title)).toHaveAttribute("data-id", String(ours[0].id));
  } finally {
    await server.stop();
  }
});
