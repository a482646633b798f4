// The trust dashboard in Debian's Chromium, driven by playwright-core (no browser download).
// Run by tests/integration/test_dashboard.py, which starts the system and reacts to the lines
// this script prints on stdout (one step each):
//   baseline <score>   the page shows SERVER trusted: make it misbehave now
//   fell <score> <state>  the page showed its score fall out of `trusted`: stop the traffic
//   screenshot <path>  saved after the operator's quarantine: post the hostile names now
//   done               every check passed
// Environment: DASHBOARD_URL, SERVER, READER_TOKEN, OPERATOR_TOKEN, SCREENSHOT, HOSTILE_SERVER,
// HOSTILE_TEXT, CHROMIUM (default /usr/bin/chromium).
import { mkdtemp, rm } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// playwright-core is pinned in testbed/package.json (installed by `make setup`).
const { chromium } = createRequire(new URL('../../testbed/package.json', import.meta.url))('playwright-core');

const env = process.env;
const SERVER = env.SERVER;
const STEP_MS = 120_000;

function step(line) {
  process.stdout.write(`${line}\n`);
}

function fail(msg) {
  throw new Error(msg);
}

const row = (page, name) => page.locator(`#servers tbody tr[data-server="${name.replace(/["\\]/g, '\\$&')}"]`);

async function rowState(page, name) {
  const r = row(page, name);
  if ((await r.count()) === 0) return null;
  return {
    state: await r.getAttribute('data-state'),
    score: Number((await r.locator('td').nth(2).innerText()).trim()),
  };
}

async function useToken(page, token) {
  if (await page.locator('#token-forget').isVisible()) await page.click('#token-forget');
  await page.fill('#token', token);
  await page.click('#token-use');
  await page.waitForFunction(() => document.getElementById('status').textContent.startsWith('Token accepted'), null, {
    timeout: 15_000,
  });
}

async function main() {
  const userDataDir = await mkdtemp(join(tmpdir(), 'mcp-warden-chromium-'));
  const context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--disable-dev-shm-usage',
    ],
    viewport: { width: 1280, height: 900 },
  });
  const problems = [];
  try {
    const page = context.pages()[0] || (await context.newPage());
    page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
    page.on('console', (m) => {
      // Refused API calls (the reader's 403) are logged as failed loads; policy violations
      // or script errors are not expected at all.
      if (m.type() === 'error' && !/Failed to load resource/.test(m.text())) problems.push(`console: ${m.text()}`);
    });

    // `/` redirects to the page, which carries its security headers.
    const resp = await page.goto(env.DASHBOARD_URL, { waitUntil: 'load' });
    if (!resp || resp.status() !== 200 || !resp.url().endsWith('/dashboard')) fail(`page answer: ${resp && resp.status()} ${resp && resp.url()}`);
    const csp = (await resp.allHeaders())['content-security-policy'] || '';
    if (!csp.includes("script-src 'self'") || csp.includes('unsafe')) fail(`CSP: ${csp}`);
    if (await page.locator('#main').isVisible()) fail('data shown before a token was given');

    // A reader's token: the score while the server is healthy.
    await useToken(page, env.READER_TOKEN);
    await row(page, SERVER).waitFor({ timeout: STEP_MS });
    let seen = null;
    const deadline = Date.now() + STEP_MS;
    while (Date.now() < deadline) {
      seen = await rowState(page, SERVER);
      if (seen && seen.state === 'trusted' && seen.score >= 0.5) break;
      await page.waitForTimeout(250);
    }
    if (!seen || seen.state !== 'trusted') fail(`${SERVER} never showed trusted: ${JSON.stringify(seen)}`);
    const baseline = seen.score;
    step(`baseline ${baseline}`);

    // The page follows its score down while it misbehaves (refreshing on its own).
    await row(page, SERVER).click();
    const scores = [baseline];
    const fallDeadline = Date.now() + STEP_MS;
    while (Date.now() < fallDeadline) {
      seen = await rowState(page, SERVER);
      if (seen && seen.score !== scores[scores.length - 1]) scores.push(seen.score);
      if (seen && seen.state !== 'trusted') break;
      await page.waitForTimeout(250);
    }
    if (!seen || seen.state === 'trusted') fail(`the page never showed ${SERVER} leave trusted: ${scores.join(' ')}`);
    if (!(seen.score < baseline - 0.2)) fail(`score did not fall: ${scores.join(' ')}`);
    step(`fell ${seen.score} ${seen.state}`);
    process.stderr.write(`scores the page showed: ${scores.join(' ')}\n`);

    // The detail: the plot has the history, the state matches the row.
    await page.waitForFunction(
      (name) => document.getElementById('detail-name').textContent === name,
      SERVER,
      { timeout: 15_000 },
    );
    await page.waitForFunction(() => document.querySelectorAll('#plot circle').length >= 3, null, { timeout: 30_000 });

    // A reader may not quarantine: the page says why.
    await page.fill('#reason', 'trying as a reader');
    await page.click('#quarantine');
    await page.waitForFunction(() => document.getElementById('action-result').textContent.includes('Refused (403)'), null, {
      timeout: 15_000,
    });

    // An operator quarantines with a click.
    await useToken(page, env.OPERATOR_TOKEN);
    await page.waitForFunction((name) => document.getElementById('detail-name').textContent === name, SERVER, {
      timeout: 15_000,
    });
    await page.fill('#reason', 'error storm seen on the dashboard; under review');
    await page.click('#quarantine');
    await page.waitForFunction(() => document.getElementById('action-result').textContent.startsWith('Quarantined'), null, {
      timeout: 15_000,
    });
    await page.waitForFunction(
      (name) => {
        const tr = [...document.querySelectorAll('#servers tbody tr')].find((r) => r.dataset.server === name);
        return (
          tr &&
          tr.dataset.state === 'quarantined' &&
          document.getElementById('detail-state').textContent === 'quarantined' &&
          !document.getElementById('detail-quarantine').hidden
        );
      },
      SERVER,
      { timeout: 15_000 },
    );
    const note = await page.locator('#detail-quarantine').innerText();
    if (!note.includes('by ops') || !note.includes('under review')) fail(`quarantine note: ${note}`);
    if (!(await page.locator('#release').isEnabled())) fail('release is not offered for a quarantined server');
    // The held tool change the sidecar reported is approved with a click (same reason field).
    await page.waitForFunction(() => document.querySelector('#held button.approve') !== null, null, { timeout: 15_000 });
    const heldText = await page.locator('#held tbody').innerText();
    if (!heldText.includes(env.HELD_FINGERPRINT) || !heldText.includes('gains a capability')) fail(`held change: ${heldText}`);
    await page.fill('#reason', 'units parameter reviewed');
    await page.click('#held button.approve');
    await page.waitForFunction(() => document.getElementById('approve-result').textContent.startsWith('Approved'), null, {
      timeout: 15_000,
    });
    await page.waitForFunction(() => document.querySelector('#held button.approve') === null, null, { timeout: 15_000 });
    // Let the plot take the quarantined sample before the picture.
    await page.waitForFunction(() => document.querySelector('#plot circle.dot.quarantined') !== null, null, {
      timeout: 15_000,
    });
    await page.screenshot({ path: env.SCREENSHOT, fullPage: true });
    step(`screenshot ${env.SCREENSHOT}`);

    // Server-provided strings are shown as text, never run or parsed as markup.
    const hostile = env.HOSTILE_SERVER;
    await row(page, hostile).waitFor({ timeout: 30_000 });
    const shown = await row(page, hostile).locator('td.name').textContent();
    if (shown !== hostile) fail(`hostile name shown as ${JSON.stringify(shown)}`);
    await row(page, hostile).click();
    await page.waitForFunction(() => document.querySelectorAll('#flags tbody td').length > 1, null, { timeout: 15_000 });
    const flagText = await page.locator('#flags tbody').innerText();
    if (!flagText.includes(env.HOSTILE_TEXT)) fail(`flag description not shown literally: ${flagText}`);
    const injected = await page.evaluate(() => ({
      pwned: window.__pwned === undefined ? null : window.__pwned,
      elements: document.querySelectorAll('main img, main script, main iframe, main b').length,
    }));
    if (injected.pwned !== null || injected.elements !== 0) fail(`markup from the server ran: ${JSON.stringify(injected)}`);

    if (problems.length) fail(`browser problems:\n${problems.join('\n')}`);
    step('done');
  } finally {
    await context.close();
    await rm(userDataDir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`${e.stack || e}\n`);
  process.exit(1);
});
