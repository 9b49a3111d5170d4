// Drives examples/web in headless Chromium against a real callrelay: the page connects with
// @callrelay/client (clients/js/dist) under a strict Content-Security-Policy, a signed call
// notification is posted, and the page must show the caller and the call SID, as text.
//
//   node tests/browser/web_example.mjs        (from the repository root)
//
// Needs clients/js built (`cd clients/js && npm ci && npm run build`) and
// `npm ci --prefix tests/browser` (playwright-core).
// Environment:
//   CALLRELAY_BIN  the callrelay binary (default target/debug/callrelay)
//   CHROMIUM       browser executable (default /usr/bin/chromium)
//
// Exit 0 after saving target/web-example/incoming-call.png; exit 1 with a message on stderr
// if anything expected does not happen within 15 s.
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, stat } from 'node:fs/promises';
import { createServer } from 'node:http';
import { dirname, extname, join, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Callrelay } from '../../clients/js/test/helpers/callrelay.mjs';

const TIMEOUT_MS = 15_000;
const root = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const screenshot = join(root, 'target', 'web-example', 'incoming-call.png');
const IDENTITY = 'web-bob';

class Failure extends Error {}

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
};

/**
 * Serves examples/web and clients/js/dist from the repository root (the page imports the kit
 * by its relative path), plus GET /token: the app backend's token endpoint, minting an Access
 * Token for IDENTITY. Every answer carries a CSP without 'unsafe-inline': the page must run
 * under it.
 */
function staticServer(relay) {
  const served = [join(root, 'examples', 'web'), join(root, 'clients', 'js', 'dist')];
  const csp = [
    "default-src 'none'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self'",
    `connect-src 'self' ws://127.0.0.1:${relay.port}`,
    "base-uri 'none'",
    "form-action 'none'",
    "frame-ancestors 'none'",
  ].join('; ');
  const server = createServer(async (req, res) => {
    const url = new URL(req.url, 'http://localhost');
    res.setHeader('Content-Security-Policy', csp);
    res.setHeader('X-Content-Type-Options', 'nosniff');
    res.setHeader('Cache-Control', 'no-store');
    if (url.pathname === '/token') {
      res.setHeader('Content-Type', 'application/json');
      res.end(JSON.stringify({ identity: IDENTITY, token: relay.token(IDENTITY) }));
      return;
    }
    let file = resolve(root, `.${decodeURIComponent(url.pathname)}`);
    if (url.pathname.endsWith('/')) file = join(file, 'index.html');
    const allowed = served.some((dir) => file === dir || file.startsWith(dir + sep));
    const info = allowed ? await stat(file).catch(() => null) : null;
    if (!info?.isFile()) {
      res.statusCode = 404;
      res.end('not found');
      return;
    }
    res.setHeader('Content-Type', TYPES[extname(file)] ?? 'application/octet-stream');
    createReadStream(file).pipe(res);
  });
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok(server)));
}

async function main(state) {
  if (!existsSync(join(root, 'clients', 'js', 'dist', 'index.js'))) {
    throw new Failure('clients/js/dist/index.js is missing: run `npm ci && npm run build` in clients/js first');
  }
  let chromium;
  try {
    ({ chromium } = await import('playwright-core'));
  } catch {
    throw new Failure('playwright-core is missing: run `npm ci --prefix tests/browser` first');
  }
  state.relay = await Callrelay.start();
  state.server = await staticServer(state.relay);
  const origin = `http://127.0.0.1:${state.server.address().port}`;

  state.browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox'],
    timeout: 30_000,
  });
  const page = await (await state.browser.newContext({ viewport: { width: 1000, height: 900 } })).newPage();
  page.setDefaultTimeout(TIMEOUT_MS);
  const errors = [];
  page.on('console', (msg) => {
    // Anything the page or the browser reports as an error counts, CSP violations included;
    // the missing favicon is the browser's own request.
    if (msg.type() === 'error' && !(msg.location().url || '').endsWith('/favicon.ico')) {
      errors.push(`console: ${msg.text()}`);
    }
  });
  page.on('pageerror', (err) => errors.push(`pageerror: ${err.message}`));

  const response = await page.goto(`${origin}/examples/web/`, { waitUntil: 'load' });
  if (!response?.ok()) throw new Failure(`GET /examples/web/ answered ${response ? response.status() : 'nothing'}`);
  await page.waitForSelector('html[data-ready="true"]', { state: 'attached' })
    .catch(() => { throw new Failure(`app.js never ran (not served, a failed import, or blocked by the CSP?) ${errors.join('; ')}`); });

  const deviceId = await page.inputValue('#device-id');
  if (!/^web-[0-9a-f]{16}$/.test(deviceId)) throw new Failure(`unexpected generated device id ${JSON.stringify(deviceId)}`);
  await page.fill('#url', state.relay.publicUrl);
  await page.fill('#token-endpoint', '/token');
  await page.click('#connect');
  await page.waitForSelector('#state[data-state="open"]')
    .catch(async () => { throw new Failure(`never connected; state ${await page.textContent('#state')}, log: ${await page.textContent('#log')}`); });

  // The caller's data is shown as text: markup in it must stay text.
  const notification = state.relay.notification(IDENTITY, {
    twi_from: 'client:alice',
    twi_params: new URLSearchParams({ subject: '<img src=x id=injected>' }).toString(),
  });
  const answer = await state.relay.post(notification);
  if (answer.status !== 200) throw new Failure(`the webhook answered ${answer.status} ${answer.text}, not 200`);

  const card = `li[data-testid="call"][data-call-sid="${notification.twi_call_sid}"]`;
  await page.waitForSelector(card)
    .catch(() => { throw new Failure(`the call ${notification.twi_call_sid} never appeared on the page`); });
  const shown = await page.evaluate((sel) => {
    const li = document.querySelector(sel);
    const read = (col) => li.querySelector(`[data-col="${col}"]`).textContent;
    return { from: read('from'), to: read('to'), callSid: read('call-sid'), type: read('type'), params: read('params'),
      injected: document.getElementById('injected') !== null, state: document.getElementById('state').textContent };
  }, card);
  const expect = (what, got, want) => {
    if (got !== want) throw new Failure(`the page shows ${what} ${JSON.stringify(got)}, expected ${JSON.stringify(want)}`);
  };
  expect('the caller', shown.from, 'client:alice');
  expect('the callee', shown.to, `client:${IDENTITY}`);
  expect('the call SID', shown.callSid, notification.twi_call_sid);
  expect('the type', shown.type, 'twilio.voice.call');
  expect('the parameters', shown.params, 'subject=<img src=x id=injected>');
  if (shown.injected) throw new Failure('payload markup became an element: the page wrote HTML, not text');

  await mkdir(dirname(screenshot), { recursive: true });
  await page.screenshot({ path: screenshot, fullPage: true });

  // The device id is the same on the next visit: callrelay sees one device, not one per reload.
  await page.reload({ waitUntil: 'load' });
  await page.waitForSelector('html[data-ready="true"]', { state: 'attached' });
  expect('the device id after a reload', await page.inputValue('#device-id'), deviceId);

  if (errors.length) throw new Failure(`the page reported errors:\n  ${errors.join('\n  ')}`);
  console.log(`ok: the page showed ${shown.from} calling (${shown.callSid}); screenshot ${screenshot}`);
}

const state = {};
let failed = false;
try {
  await main(state);
} catch (error) {
  failed = true;
  console.error(`web example: ${error instanceof Failure ? error.message : error.stack ?? error}`);
} finally {
  await state.browser?.close().catch(() => {});
  await new Promise((ok) => (state.server ? state.server.close(ok) : ok()));
  await state.relay?.close().catch(() => {});
}
process.exit(failed ? 1 : 0);
