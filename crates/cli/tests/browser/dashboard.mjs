// Drives the lockstep dashboard in Debian's headless Chromium (playwright-core, no browser of its
// own), against a server that crates/cli/tests/dashboard.rs started and filled with real agents.
// It checks what the page shows, pauses an agent through the page with the admin token, and
// measures (Performance API) applying one live update of 1,000 agents. On success it prints one
// JSON line; on failure it says what was missing and exits 1. Screenshots go to SHOTS_DIR.
//
// Environment: DASHBOARD_URL (http://host:port), ADMIN_TOKEN, SHOTS_DIR, PAUSE_AGENT, SYNC_ID,
// MISSING_AGENT, AUDITED (an audit entry's actor made before the page opened), BIG_NAMESPACE,
// BIG_AGENTS.
import { chromium } from "playwright-core";
import { mkdtempSync, mkdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const env = name => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};
const base = env("DASHBOARD_URL");
const shots = env("SHOTS_DIR");
const pauseAgent = env("PAUSE_AGENT");
const bigAgents = Number(env("BIG_AGENTS"));
// Waits derive from the server's update period (500 ms): generous for a busy 2-core machine.
const WAIT = 30_000;

mkdirSync(shots, { recursive: true });
const profile = mkdtempSync(join(tmpdir(), "lockstep-chromium-"));
const context = await chromium.launchPersistentContext(profile, {
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  headless: true,
  viewport: { width: 1400, height: 1000 },
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync"],
});
const result = { screenshots: [] };
const shot = async (page, name, fullPage = true) => {
  const path = join(shots, name);
  await page.screenshot({ path, fullPage, timeout: 60_000 });
  result.screenshots.push(path);
};
let page;
try {
  page = context.pages()[0] ?? await context.newPage();
  const errors = [];
  page.on("pageerror", e => errors.push(String(e)));
  const external = [];
  page.on("request", r => { if (!r.url().startsWith(base)) external.push(r.url()); });

  // What the page shows: the agents with their state field, the waiting sync point and who is
  // missing, the audit log.
  await page.goto(`${base}/dashboard?fields=pnl`);
  const row = page.locator(`#agents-body tr[data-agent="${pauseAgent}"]`);
  await row.waitFor({ timeout: WAIT });
  result.agent_rows = await page.locator("#agents-body tr").count();
  result.agent_row = (await row.innerText()).replace(/\s+/g, " ");
  await page.locator("#sync-body", { hasText: env("SYNC_ID") }).waitFor({ timeout: WAIT });
  result.sync_row = (await page.locator("#sync-body tr", { hasText: env("SYNC_ID") }).innerText()).replace(/\s+/g, " ");
  if (!result.sync_row.includes(env("MISSING_AGENT"))) throw new Error(`the sync point's row names no missing ${env("MISSING_AGENT")}: ${result.sync_row}`);
  await page.locator("#audit-body", { hasText: env("AUDITED") }).waitFor({ timeout: WAIT });
  result.live = await page.locator("#live").innerText();
  await shot(page, "dashboard-overview.png");

  // Filter: only the matching agent is left.
  await page.fill("#filter", pauseAgent);
  result.filtered_rows = await page.locator("#agents-body tr").count();
  await page.fill("#filter", "");

  // An operator action without the token is refused and says what to do...
  await row.locator('button[data-act="pause"]').click();
  await page.locator("#notice.error").waitFor({ timeout: WAIT });
  result.refused_notice = await page.locator("#notice").innerText();
  // ...and with it, carried out; the live update then shows the agent paused.
  await page.fill("#token", env("ADMIN_TOKEN"));
  await page.fill("#actor", "browser-test");
  await row.locator('button[data-act="pause"]').click();
  await page.locator("#notice.ok").waitFor({ timeout: WAIT });
  result.done_notice = await page.locator("#notice").innerText();
  await page.locator(`#agents-body tr[data-agent="${pauseAgent}"] button[data-act="resume"]`).waitFor({ timeout: WAIT });
  result.paused_row = (await row.innerText()).replace(/\s+/g, " ");
  await page.locator("#audit-body tr", { hasText: "browser-test" }).waitFor({ timeout: WAIT });
  result.audit_row = (await page.locator("#audit-body tr", { hasText: "browser-test" }).first().innerText()).replace(/\s+/g, " ");
  await shot(page, "dashboard-paused.png");

  // 1,000 agents: the time the page takes to apply one live update of all of them, measured by
  // the page itself around each update (performance.measure "lockstep-apply"), over the first
  // five full updates after the grid first showed them all.
  await page.goto(`${base}/dashboard?namespace=${env("BIG_NAMESPACE")}&fields=pnl`);
  await page.waitForFunction(n => window.lockstep.snapshot && window.lockstep.snapshot.agents.length >= n, bigAgents, { timeout: WAIT });
  const seen = await page.evaluate(() => window.lockstep.applied.length);
  await page.waitForFunction(k => window.lockstep.applied.length >= k + 5, seen, { timeout: WAIT });
  const measured = await page.evaluate(n => ({
    applied: window.lockstep.applied.filter(a => a.agents >= n).map(a => a.ms),
    measures: performance.getEntriesByName("lockstep-apply").length,
    rows: document.querySelectorAll("#agents-body tr").length,
  }), bigAgents);
  result.big_rows = measured.rows;
  result.first_render_ms = measured.applied[0];
  result.apply_ms = measured.applied.slice(-5);
  result.performance_measures = measured.measures;
  // The worst case besides: an update in which every agent's row changed (the last snapshot with
  // each agent's queue and state field altered), applied the same way, measured the same way.
  result.all_changed_ms = await page.evaluate(() => {
    const s = structuredClone(window.lockstep.snapshot);
    s.seq += 1;
    for (const a of s.agents) { a.queue += 7; a.fields = a.fields.map(v => `${v}+`); }
    return window.lockstep.apply(s);
  });
  await shot(page, "dashboard-1000-agents.png", false);

  result.page_errors = errors;
  result.external_requests = external;
  console.log(JSON.stringify(result));
} catch (e) {
  if (page) await shot(page, "dashboard-failure.png").catch(() => {});
  console.error(`dashboard browser test: ${e.message}\nscreenshots: ${result.screenshots.join(", ")}`);
  process.exitCode = 1;
} finally {
  await context.close();
  rmSync(profile, { recursive: true, force: true });
}
