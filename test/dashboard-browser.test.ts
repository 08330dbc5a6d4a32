/**
 * The dashboard in a real browser (Debian's Chromium driven by playwright-core): a proxy, two
 * hosts and the records guest; the page asks for the admin token, shows the hosts and the guest,
 * moves the guest when its Migrate button is pressed, and shows the move in the timeline and the
 * guest on its new host without a reload. A screenshot is saved in test-artifacts/.
 * Also: the page's files and /metrics (which needs a token), as an operator's tools see them.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { chromium, type BrowserContext } from 'playwright-core';
import { deploy, startHost, startProxy } from './helpers/cluster.js';
import { ROOT } from './helpers/roam.js';

const CHROMIUM = process.env['ROAM_CHROMIUM'] ?? '/usr/bin/chromium';
const ARTIFACTS = join(ROOT, 'test-artifacts');

/** A fresh profile each time (playwright passes it as --user-data-dir). */
async function launch(t: { after(fn: () => Promise<void> | void): void }): Promise<BrowserContext> {
  const profile = mkdtempSync(join(tmpdir(), 'roam-chromium-'));
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    viewport: { width: 1280, height: 1100 },
    headless: true,
    // This machine's network is closed: nothing in the background may try to reach out.
    args: [
      ...(process.getuid?.() === 0 ? ['--no-sandbox'] : []),
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
      '--disable-sync',
      '--disable-dev-shm-usage',
    ],
  });
  t.after(async () => {
    await browser.close();
    rmSync(profile, { recursive: true, force: true });
  });
  return browser;
}

test('the dashboard and /metrics are served with their headers; /metrics needs a token', async (t) => {
  const proxy = await startProxy(t);
  const base = `http://127.0.0.1:${proxy.apiPort}`;
  const page = await fetch(`${base}/`);
  assert.equal(page.status, 200);
  assert.match(page.headers.get('content-type') ?? '', /text\/html/);
  assert.match(page.headers.get('content-security-policy') ?? '', /script-src 'self'/);
  const html = await page.text();
  assert.match(html, /<script src="app.js"><\/script>/);
  assert.doesNotMatch(html, /https?:\/\//, 'nothing is loaded from elsewhere');
  const script = await fetch(`${base}/app.js`);
  assert.equal(script.status, 200);
  assert.doesNotMatch(await script.text(), new RegExp(proxy.adminToken), 'no secret in the page');

  assert.equal((await fetch(`${base}/metrics`)).status, 401);
  assert.equal((await fetch(`${base}/metrics`, { headers: { authorization: 'Bearer wrong' } })).status, 401);
  const metricsToken = readFileSync(join(proxy.dataDir, 'metrics-token'), 'utf8').trim();
  for (const token of [metricsToken, proxy.adminToken]) {
    const r = await fetch(`${base}/metrics`, { headers: { authorization: `Bearer ${token}` } });
    assert.equal(r.status, 200);
    const text = await r.text();
    assert.match(text, /^roam_hosts\{state="up"\} 0$/m);
    assert.match(text, /^# TYPE roam_migration_pause_seconds histogram$/m);
  }
  // The metrics token reads metrics and nothing else.
  const api = await fetch(`${base}/api/hosts`, { headers: { authorization: `Bearer ${metricsToken}` } });
  assert.equal(api.status, 401);
});

test('in Chromium: the dashboard shows hosts and the guest, moves it from the page, and shows the move live', async (t) => {
  if (!existsSync(CHROMIUM)) {
    t.skip(`no Chromium at ${CHROMIUM}: install Debian's chromium (.ci/run does) or set ROAM_CHROMIUM`);
    return;
  }
  const proxy = await startProxy(t, ['--report-interval', '250']);
  const a = startHost(t, proxy, 'host-a');
  const b = startHost(t, proxy, 'host-b');
  await Promise.all([a.waitFor(/joined the proxy/), b.waitFor(/joined the proxy/)]);
  const made = await deploy(proxy, join(ROOT, 'examples/records.js'), { name: 'records', on: 'host-a' });
  assert.equal(made.status, 201, JSON.stringify(made.body));

  const browser = await launch(t);
  const page = await browser.newPage();
  const problems: string[] = [];
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') problems.push(`console: ${m.text()}`);
  });
  page.on('dialog', (d) => void d.accept());
  const requested: string[] = [];
  page.on('request', (r) => requested.push(r.url()));

  await page.goto(`http://127.0.0.1:${proxy.apiPort}/`);
  await page.fill('#token', 'not-the-token');
  await page.click('#login-form button[type=submit]');
  await page.waitForSelector('#login-error:has-text("refused")');
  problems.length = 0; // the refusal above logs a 401, as it should
  await page.fill('#token', proxy.adminToken);
  await page.click('#login-form button[type=submit]');

  await page.waitForSelector('[data-testid=live]:has-text("live")');
  await page.waitForSelector('#hosts [data-host="host-a"] .badge:has-text("up")');
  await page.waitForSelector('#hosts [data-host="host-b"] .badge:has-text("up")');
  await page.waitForSelector('#hosts [data-host="host-a"] .chart canvas');
  await page.waitForSelector('tr[data-guest="records"] td[data-field="host"]:has-text("host-a")');
  await page.waitForSelector('#topology .guest[data-guest="records"][data-host="host-a"]');
  // A mark that a reload would wipe.
  await page.evaluate('window.roamTestMark = 42');

  await page.selectOption('tr[data-guest="records"] select[data-action="target"]', 'host-b');
  await page.click('tr[data-guest="records"] button[data-action="migrate"]');

  await page.waitForSelector('#timeline li.migration.moved[data-guest="records"]:has-text("host-a → host-b")');
  const entry = await page.textContent('#timeline li.migration.moved[data-guest="records"]');
  assert.match(entry ?? '', /pause [\d.]+ ms · total [\d.]+ (ms|s)/);
  await page.waitForSelector('tr[data-guest="records"] td[data-field="host"]:has-text("host-b")');
  await page.waitForSelector('#topology .guest[data-guest="records"][data-host="host-b"]');
  assert.equal(await page.evaluate<unknown>('window.roamTestMark'), 42, 'the page was not reloaded');

  // The guest glides to its new host: let the transition end before the picture.
  await page.waitForFunction(
    () => (globalThis as unknown as { document: { getAnimations(): unknown[] } }).document.getAnimations().length === 0,
  );
  mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: join(ARTIFACTS, 'dashboard.png'), fullPage: true });

  // The token travels in headers only: never in a URL.
  assert.ok(requested.length > 0);
  for (const url of requested) assert.ok(!url.includes(proxy.adminToken), `the token is in ${url}`);
  assert.deepEqual(problems, []);
  const guests = await proxy.api<Array<{ name: string; hostName: string }>>('GET', '/api/guests');
  assert.equal(guests.body[0]?.hostName, 'host-b');
});
