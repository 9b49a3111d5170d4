// Drives callrelay's /console in headless Chromium and prints ONE JSON line describing what the
// page shows. Used by the Rust integration test (tests/it/console.rs); runnable by hand against
// a live callrelay.
//
//   node tests/browser/console.mjs
//
// Environment:
//   CONSOLE_URL   required, e.g. http://127.0.0.1:9090/console
//   ADMIN_KEY     required, the admin key typed into the page
//   ACCOUNT_SID   required, AC…
//   CALL_SID      call to look up; its trace is read (optional)
//   IDENTITY      identity to look up (bindings, sockets, recent calls), then "Send test
//                 notification" to it (optional)
//   ROOM_SID      room to look up; the ledger is read and "Download CSV" is clicked (optional)
//   EXPECT_TARGETS  the call trace counts as complete once it shows this many target rows (default 1);
//                 until then, and while the call answers 404, the lookup is repeated (15 s at most)
//   SKIP_TEST_NOTIFICATION  set to 1 to not send the test notification
//   SCREENSHOT    PNG path for the call trace; "-identity" / "-room" before the extension for the others
//   CHROMIUM      browser executable (default /usr/bin/chromium)
//
// Exit 0 with the JSON line on stdout; exit 1 with a message on stderr if something expected
// never appears within 15 s (or the page shows a problem where data was expected).
import { chromium } from 'playwright-core';
import { readFile } from 'node:fs/promises';

const TIMEOUT_MS = 15_000;
const env = process.env;

class Failure extends Error {}

function need(name) {
  if (!env[name]) throw new Failure(`${name} is not set`);
  return env[name];
}

function shotPath(suffix) {
  if (!env.SCREENSHOT) return null;
  if (!suffix) return env.SCREENSHOT;
  const m = env.SCREENSHOT.match(/^(.*?)(\.[^./]*)?$/);
  return `${m[1]}-${suffix}${m[2] || ''}`;
}

async function main(state) {
  const url = need('CONSOLE_URL');
  const key = need('ADMIN_KEY');
  const account = need('ACCOUNT_SID');
  const expectTargets = Number(env.EXPECT_TARGETS || 1);

  state.browser = await chromium.launch({
    executablePath: env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox'],
    timeout: 30_000,
  });
  const context = await state.browser.newContext({ viewport: { width: 1280, height: 900 }, acceptDownloads: true });
  const page = await context.newPage();
  state.page = page;
  page.setDefaultTimeout(TIMEOUT_MS);

  const errors = state.errors;
  page.on('console', (msg) => {
    if (msg.type() !== 'error') return;
    const where = msg.location().url || '';
    // HTTP error statuses of the API are answers the page shows (the call lookup retries on 404);
    // a missing favicon is the browser's own request. Anything else (CSP violations included) counts.
    if (/^Failed to load resource: the server responded with a status of/.test(msg.text())) {
      const p = where ? new URL(where).pathname : '';
      if (p.startsWith('/v1/') || p === '/favicon.ico') return;
    }
    errors.push(`console: ${msg.text()}${where ? ` (${where})` : ''}`);
  });
  page.on('pageerror', (err) => errors.push(`pageerror: ${err.message}`));
  page.on('requestfailed', (req) => {
    if (new URL(req.url()).pathname === '/favicon.ico') return;
    errors.push(`requestfailed: ${req.method()} ${req.url()}: ${req.failure()?.errorText}`);
  });

  const response = await page.goto(url, { waitUntil: 'load', timeout: TIMEOUT_MS });
  if (!response || !response.ok()) throw new Failure(`GET ${url} answered ${response ? response.status() : 'nothing'}`);
  await page.waitForSelector('html[data-ready="true"]', { state: 'attached' })
    .catch(() => { throw new Failure('console.js never ran (not served, or blocked by the CSP?)'); });
  await page.fill('#key', key);
  await page.fill('#account', account);

  // Look `query` up until `selector` (the view for it) shows and `complete()` holds; retry while the
  // API answers 404 (not recorded yet) or the view is incomplete, fail on any other problem.
  async function lookup(query, selector, complete = async () => true, incomplete = 'shown but incomplete') {
    const deadline = Date.now() + TIMEOUT_MS;
    let last = 'nothing shown';
    for (;;) {
      await page.fill('#query', query);
      await page.click('#lookup');
      let outcome;
      try {
        const handle = await page.waitForFunction((sel) => {
          const error = document.getElementById('error');
          if (!error.hidden) {
            const part = (id) => error.querySelector(`[data-testid="${id}"]`)?.textContent ?? '';
            return { problem: [part('problem-title'), part('problem-detail')].filter(Boolean).join(': '),
              status: error.getAttribute('data-status') };
          }
          const view = document.querySelector(sel);
          return view && !view.hidden && document.getElementById('loading').hidden ? { shown: true } : false;
        }, selector, { timeout: Math.max(deadline - Date.now(), 1), polling: 50 });
        outcome = await handle.jsonValue();
      } catch {
        throw new Failure(`${query}: ${selector} never appeared within 15 s (last: ${last})`);
      }
      if (outcome.shown && await complete()) return;
      last = outcome.shown ? incomplete : `problem shown: ${outcome.problem}`;
      if (outcome.problem && outcome.status !== '404') throw new Failure(`${query}: ${last}`);
      if (Date.now() + 250 >= deadline) throw new Failure(`${query}: still ${last} after 15 s`);
      await page.waitForTimeout(250);
    }
  }

  const out = {
    call_sid: null, call_identity: null, notifications: null, answers: null, targets: null, insights: null,
    identity: null, identity_bindings: null, identity_sockets: null, identity_calls: null, bindings: null,
    test_notification: null, room: null, screenshots: {}, errors,
  };

  if (env.CALL_SID) {
    const sel = `#call-trace[data-call-sid="${env.CALL_SID}"]`;
    await lookup(env.CALL_SID, sel, async () =>
      (await page.locator('#call-trace tr[data-testid="target"]').count()) >= expectTargets,
    `shown with fewer than ${expectTargets} target row(s)`);
    Object.assign(out, await page.evaluate(() => {
      const view = document.getElementById('call-trace');
      const read = (root, col) => {
        const node = root.querySelector(`[data-col="${col}"]`);
        const t = node ? node.textContent.trim() : '';
        return t === '' || t === '—' ? null : t;
      };
      const num = (s) => (s === null ? null : Number.parseFloat(s));
      const notes = [...view.querySelectorAll('[data-testid="notification"]')];
      return {
        call_sid: view.getAttribute('data-call-sid'),
        call_identity: read(view.querySelector('.facts'), 'identity'),
        notifications: notes.length,
        answers: notes.map((n) => ({
          status: num(read(n, 'status')), took_ms: num(read(n, 'took_ms')), replica: read(n, 'replica'),
          delivered: num(read(n, 'delivered')), removed: num(read(n, 'removed')), failed: num(read(n, 'failed')),
          duplicate: n.getAttribute('data-duplicate') === 'true',
        })),
        targets: notes.flatMap((n, i) => [...n.querySelectorAll('tr[data-testid="target"]')].map((row) => ({
          notification: i,
          channel: read(row, 'channel'), outcome: read(row, 'outcome'), attempts: num(read(row, 'attempts')),
          status: num(read(row, 'status')), reason: read(row, 'reason'), apns_id: read(row, 'apns_id'),
          latency_ms: num(read(row, 'latency_ms')),
          app: row.getAttribute('data-app'), binding: row.getAttribute('data-binding'),
          socket: row.getAttribute('data-socket'), replica: row.getAttribute('data-replica'),
        }))),
        insights: view.querySelectorAll('tr[data-testid="insight"]').length,
      };
    }));
    if (shotPath()) {
      await page.screenshot({ path: shotPath(), fullPage: true });
      out.screenshots.call = shotPath();
    }
  }

  if (env.IDENTITY) {
    const identity = env.IDENTITY;
    await lookup(identity, `#identity-view[data-identity="${identity.replace(/["\\]/g, '\\$&')}"]`);
    Object.assign(out, await page.evaluate(() => {
      const view = document.getElementById('identity-view');
      const read = (row, col) => {
        const t = row.querySelector(`[data-col="${col}"]`)?.textContent.trim() ?? '';
        return t === '' || t === '—' ? null : t;
      };
      const rows = (testid) => [...view.querySelectorAll(`tr[data-testid="${testid}"]`)];
      return {
        identity: view.getAttribute('data-identity'),
        identity_bindings: rows('binding').length,
        identity_sockets: rows('socket').length,
        identity_calls: rows('call').length,
        bindings: rows('binding').map((r) => ({
          channel: read(r, 'channel'), app: read(r, 'app'), id: read(r, 'id'), device_id: read(r, 'device_id'),
          token: read(r, 'token'),
        })),
      };
    }));

    if (env.SKIP_TEST_NOTIFICATION !== '1') {
      await page.fill('#test-identity', identity);
      await page.click('#send-test');
      await page.waitForSelector('#test-result[data-state="ok"], #test-result[data-state="problem"]')
        .catch(() => { throw new Failure('the test notification\'s answer never appeared within 15 s'); });
      out.test_notification = await page.evaluate(() => {
        const box = document.getElementById('test-result');
        const read = (col) => {
          const t = box.querySelector(`[data-col="${col}"]`)?.textContent.trim() ?? '';
          return t === '' || t === '—' ? null : t;
        };
        const num = (s) => (s === null ? null : Number(s));
        if (box.getAttribute('data-state') === 'problem') {
          return { problem: {
            status: Number(box.querySelector('[data-status]')?.getAttribute('data-status')),
            title: box.querySelector('[data-testid="problem-title"]')?.textContent ?? null,
            detail: box.querySelector('[data-testid="problem-detail"]')?.textContent ?? null,
          } };
        }
        return {
          call_sid: read('call_sid'), status: num(read('status')), delivered: num(read('delivered')),
          removed: num(read('removed')), failed: num(read('failed')),
          summary: box.querySelector('[data-testid="test-summary"]')?.textContent ?? null,
        };
      });
    }
    if (shotPath('identity')) {
      await page.screenshot({ path: shotPath('identity'), fullPage: true });
      out.screenshots.identity = shotPath('identity');
    }
  }

  if (env.ROOM_SID) {
    await lookup(env.ROOM_SID, `#room-ledger[data-room-sid="${env.ROOM_SID}"]`);
    out.room = await page.evaluate(() => {
      const view = document.getElementById('room-ledger');
      const read = (root, col) => {
        const t = root.querySelector(`[data-col="${col}"]`)?.textContent.trim() ?? '';
        return t === '' || t === '—' ? null : t;
      };
      const billing = document.getElementById('billing');
      return {
        room_sid: view.getAttribute('data-room-sid'), status: read(view, 'status'),
        participants: view.querySelectorAll('tr[data-testid="participant"]').length,
        billing_rule: read(billing, 'rule'),
        billable_seconds: Number(read(billing, 'billable_seconds')),
        billable_minutes: Number(read(billing, 'billable_minutes')),
      };
    });
    const [download] = await Promise.all([page.waitForEvent('download'), page.click('#download-csv')])
      .catch(() => { throw new Failure('"Download CSV" never produced a download within 15 s'); });
    const csv = await readFile(await download.path(), 'utf8');
    const lines = csv.split(/\r?\n/).filter((l) => l !== '');
    out.room.csv = { filename: download.suggestedFilename(), header: lines[0] ?? null, rows: Math.max(lines.length - 1, 0) };
    if (shotPath('room')) {
      await page.screenshot({ path: shotPath('room'), fullPage: true });
      out.screenshots.room = shotPath('room');
    }
  }

  // Give late console messages (a CSP report fired by the last render) a moment to arrive.
  await page.waitForTimeout(100);
  return out;
}

const state = { browser: null, page: null, errors: [] };
const watchdog = setTimeout(() => {
  process.stderr.write('console.mjs: gave up after 120 s\n');
  process.exit(1);
}, 120_000);
let code = 0;
try {
  const out = await main(state);
  process.stdout.write(`${JSON.stringify(out)}\n`);
} catch (e) {
  code = 1;
  process.stderr.write(`console.mjs: ${e instanceof Failure ? e.message : e.stack || e}\n`);
  if (state.page && shotPath('failure')) {
    await state.page.screenshot({ path: shotPath('failure'), fullPage: true }).then(
      () => process.stderr.write(`console.mjs: screenshot of the page: ${shotPath('failure')}\n`), () => {});
  }
  if (state.errors.length) process.stderr.write(`console.mjs: browser errors: ${JSON.stringify(state.errors)}\n`);
} finally {
  if (state.browser) await state.browser.close().catch(() => {});
  clearTimeout(watchdog);
}
process.exit(code);
