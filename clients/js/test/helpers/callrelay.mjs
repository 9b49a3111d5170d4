// Runs a real callrelay for the tests: a configuration in a temporary directory, free ports on
// 127.0.0.1, the prebuilt binary (CALLRELAY_BIN, else the workspace's debug build), readiness
// from the admin listener's /readyz, and kill/restart on the same ports so that a client can
// find it again.
import { spawn } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { callNotification, mintAccessToken, postCallNotification } from './twilio.mjs';

const here = dirname(fileURLToPath(import.meta.url));
/** clients/js, whatever the current directory is. */
const kitDir = resolve(here, '..', '..');

export const binary = process.env.CALLRELAY_BIN || resolve(kitDir, '../../target/debug/callrelay');

// Test-only credentials, written into the temporary configuration and nowhere else.
export const ACCOUNT_SID = 'AC0123456789abcdef0123456789abcdef';
const AUTH_TOKEN = 'test-auth-token-for-the-js-kit';
const API_KEY_SID = 'SK0123456789abcdef0123456789abcdef';
const API_KEY_SECRET = 'test-api-key-secret-for-the-js-kit';

/** A port nobody listens on right now (the kernel's choice), on 127.0.0.1. */
export function freePort() {
  return new Promise((ok, fail) => {
    const server = createServer();
    server.unref();
    server.on('error', fail);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address();
      server.close(() => ok(port));
    });
  });
}

export class Callrelay {
  /** Starts callrelay and resolves once it is ready; pings come every `pingIntervalMs`. */
  static async start({ pingIntervalMs = 500, log = process.env.TEST_LOG === '1' } = {}) {
    const relay = new Callrelay();
    relay.dir = await mkdtemp(join(tmpdir(), 'callrelay-js-'));
    relay.port = await freePort();
    relay.adminPort = await freePort();
    relay.log = log;
    relay.config = join(relay.dir, 'callrelay.toml');
    await writeFile(relay.config, [
      '[server]',
      `listen = "127.0.0.1:${relay.port}"`,
      `admin_listen = "127.0.0.1:${relay.adminPort}"`,
      `public_url = "${relay.publicUrl}"`,
      // A SIGTERM'd callrelay closes its sockets with 1001 at once; the grace only bounds it.
      'shutdown_grace_ms = 2000',
      '',
      '[websocket]',
      `ping_interval_ms = ${pingIntervalMs}`,
      '',
      '[[accounts]]',
      `sid = "${ACCOUNT_SID}"`,
      `auth_token = "${AUTH_TOKEN}"`,
      `api_keys = [{ sid = "${API_KEY_SID}", secret = "${API_KEY_SECRET}" }]`,
      '',
    ].join('\n'));
    try {
      await relay.launch();
    } catch (error) {
      await relay.close();
      throw error;
    }
    return relay;
  }

  get publicUrl() { return `http://127.0.0.1:${this.port}`; }
  get wsUrl() { return `ws://127.0.0.1:${this.port}/v1/ws`; }
  get adminUrl() { return `http://127.0.0.1:${this.adminPort}`; }

  /** Spawns the process and waits for /readyz (15 s at most). */
  async launch() {
    if (this.child) throw new Error('callrelay is already running');
    this.output = '';
    const child = spawn(binary, ['serve', '--config', this.config], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, RUST_LOG: process.env.RUST_LOG || 'info' },
    });
    this.child = child;
    // Should the test process end without close() (a crash, a timeout), take callrelay along.
    const orphan = () => child.kill('SIGKILL');
    process.once('exit', orphan);
    child.once('exit', () => process.removeListener('exit', orphan));
    const keep = (chunk) => {
      // The last few KiB of its log, for a failure's message.
      this.output = (this.output + chunk).slice(-8192);
      if (this.log) process.stderr.write(chunk);
    };
    child.stdout.on('data', keep);
    child.stderr.on('data', keep);
    // A binary that cannot be started emits 'error' and no 'exit': either one ends it.
    this.exited = new Promise((ok) => {
      child.once('exit', (code, signal) => ok({ code, signal }));
      child.once('error', (error) => ok({ error: error.message }));
    });
    const deadline = Date.now() + 15_000;
    for (;;) {
      const early = await Promise.race([this.exited, delay(50).then(() => null)]);
      if (early) {
        this.child = null;
        throw new Error(`callrelay (${binary}) ended before it was ready: ${JSON.stringify(early)}` +
          `${early.error ? ' (set CALLRELAY_BIN to the callrelay binary)' : ''}\n${this.output}`);
      }
      try {
        const r = await fetch(`${this.adminUrl}/readyz`, { signal: AbortSignal.timeout(1000) });
        if (r.status === 200) return;
      } catch { /* not listening yet */ }
      if (Date.now() > deadline) {
        await this.kill('SIGKILL');
        throw new Error(`callrelay was not ready within 15 s\n${this.output}`);
      }
    }
  }

  /** Sends `signal` and waits for the process to end. */
  async kill(signal = 'SIGTERM') {
    const child = this.child;
    if (!child) return;
    child.kill(signal);
    const ended = await Promise.race([this.exited, delay(10_000).then(() => null)]);
    if (!ended) {
      child.kill('SIGKILL');
      await this.exited;
    }
    this.child = null;
  }

  async restart() {
    await this.launch();
  }

  /** Stops the process and removes the temporary directory. */
  async close() {
    await this.kill('SIGKILL');
    await rm(this.dir, { recursive: true, force: true });
  }

  token(identity, options = {}) {
    return mintAccessToken({ accountSid: ACCOUNT_SID, apiKeySid: API_KEY_SID, apiKeySecret: API_KEY_SECRET, identity, ...options });
  }

  notification(to, overrides = {}) {
    return callNotification({ accountSid: ACCOUNT_SID, to, ...overrides });
  }

  /** Posts `body` (a string, sent as is, or an object, serialised) as Twilio would. */
  post(body) {
    const text = typeof body === 'string' ? body : JSON.stringify(body);
    return postCallNotification({ publicUrl: this.publicUrl, authToken: AUTH_TOKEN, body: text });
  }

  /** The value of one sample of the admin listener's /metrics, 0 when absent. */
  async metric(name, labels = {}) {
    const text = await (await fetch(`${this.adminUrl}/metrics`, { signal: AbortSignal.timeout(5000) })).text();
    return sampleValue(text, name, labels);
  }
}

/** Reads `name{labels…} value` from Prometheus text; labels not named may be anything. */
export function sampleValue(text, name, labels = {}) {
  let total = 0;
  let found = false;
  for (const line of text.split('\n')) {
    const m = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries([...(m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)].map((l) => [l[1], l[2]]));
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) {
      total += Number(m[3]);
      found = true;
    }
  }
  return found ? total : 0;
}

export function delay(ms) {
  return new Promise((ok) => setTimeout(ok, ms));
}
