// Dev-only stand-in for callrelay's admin listener: serves src/http/console/* under /console
// (with a strict Content-Security-Policy) and canned answers for the read API of the console.
// Lets console.mjs and the page be worked on without building callrelay:
//
//   node tests/browser/fake-server.mjs            # prints the console URL, e.g. http://127.0.0.1:PORT/console
//   CONSOLE_URL=… ADMIN_KEY=dev-admin-key ACCOUNT_SID=AC0123456789abcdef0123456789abcdef \
//     CALL_SID=CA00000000000000000000000000000001 IDENTITY=alice ROOM_SID=RM00000000000000000000000000000001 \
//     SCREENSHOT=/tmp/console.png node tests/browser/console.mjs
//
// Environment: PORT (default 0: any free port), FAKE_ADMIN_KEY (default dev-admin-key),
// FAKE_TRACE_DELAY_MS (the call trace answers 404 until this long after start, default 0),
// FAKE_CSP (default "default-src 'self'").
import { createServer } from 'node:http';
import { readFile } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const assets = path.resolve(here, '../../src/http/console');
const KEY = process.env.FAKE_ADMIN_KEY || 'dev-admin-key';
const CSP = process.env.FAKE_CSP || "default-src 'self'";
const TRACE_DELAY_MS = Number(process.env.FAKE_TRACE_DELAY_MS || 0);
const started = Date.now();

const ACCOUNT = 'AC0123456789abcdef0123456789abcdef';
const CALL = 'CA00000000000000000000000000000001';
const ROOM = 'RM00000000000000000000000000000001';
const HOSTILE = '<img src=x onerror=alert(1)>';   // must show up as text, never as markup

function call(callSid, identity) {
  return {
    account_sid: ACCOUNT, call_sid: callSid, identity,
    from: 'client:bob<script>alert(1)</script>', to: `client:${identity}`,
    notifications: [
      {
        message_id: 'msg-7f3a', message_type: 'twilio.voice.call', received_at: '2026-12-07T17:00:00.123Z',
        status: 200, took_ms: 12.3, delivered: 2, removed: 0, failed: 1, duplicate: false, replica: 'node-abc',
        targets: [
          { channel: 'apns', app: 'voip', binding: 'b1', attempts: 1, outcome: 'delivered', status: 200,
            reason: null, apns_id: '6C9E1F12-3A4B-4C5D-8E9F-0123456789AB', latency_ms: 3.2 },
          { channel: 'fcm', app: 'android', binding: 'b2', attempts: 2, outcome: 'failed', status: 503,
            reason: 'UNAVAILABLE', apns_id: null, latency_ms: 40.1 },
          { channel: 'websocket', socket: 'conn-1', replica: 'node-abc', attempts: 1, outcome: 'delivered',
            status: null, reason: null, latency_ms: 0.2 },
        ],
      },
      {
        message_id: 'msg-7f3a', message_type: 'twilio.voice.call', received_at: '2026-12-07T17:00:05.001Z',
        status: 200, took_ms: 0.4, delivered: 0, removed: 0, failed: 0, duplicate: true, replica: 'node-def',
        targets: [],
      },
    ],
    insights: [
      { type: 'com.twilio.voice.insights.call-summary.complete', received_at: '2026-12-07T17:02:00Z',
        call_state: 'completed', duration: 42, connect_duration: 40, disconnected_by: 'callee',
        processing_state: 'complete' },
    ],
  };
}

const room = {
  account_sid: ACCOUNT, room_sid: ROOM, room_name: 'consult-42', status: 'ended',
  created_at: '2026-12-07T16:00:00Z', ended_at: '2026-12-07T16:05:20Z', room_duration: 320,
  session: { started_at: '2026-12-07T16:00:10Z', ended_at: '2026-12-07T16:05:10Z', seconds: 300 },
  participants: [
    { participant_sid: 'PA00000000000000000000000000000001', identity: 'alice', connected_at: '2026-12-07T16:00:10Z',
      disconnected_at: '2026-12-07T16:05:00Z', closed_by: 'participant-disconnected', participant_duration: 290,
      connected_seconds: 290, billable_seconds: 300 },
    { participant_sid: 'PA00000000000000000000000000000002', identity: HOSTILE, connected_at: '2026-12-07T16:00:20Z',
      disconnected_at: '2026-12-07T16:05:10Z', closed_by: 'room-ended', participant_duration: 290,
      connected_seconds: 290, billable_seconds: 300 },
  ],
  billing: { rule: 'per_started_minute', billable_seconds: 600, billable_minutes: 10.0 },
  events: 6,
};

const bindings = {
  bindings: [
    { id: 'b1', account_sid: ACCOUNT, identity: 'alice', channel: 'apns', address: 'a1b2c3d4e5f60718293a4b5c6d7e8f90',
      app: 'voip', apns_environment: 'production', push_type: 'voip', device_id: 'iphone-15', ttl_seconds: 2592000,
      created_at: '2026-12-01T09:00:00Z', updated_at: '2026-12-01T09:00:00Z', expires_at: '2026-12-31T09:00:00Z' },
    { id: 'b2', account_sid: ACCOUNT, identity: 'alice', channel: 'fcm', address: 'fcm-token-0123456789:APA91b',
      app: 'android', device_id: HOSTILE, ttl_seconds: 2592000,
      created_at: '2026-12-02T09:00:00Z', updated_at: '2026-12-02T09:00:00Z', expires_at: '2027-01-01T09:00:00Z' },
  ],
  sockets: [
    { id: 'conn-1', account_sid: ACCOUNT, identity: 'alice', channel: 'websocket', device_id: 'desktop',
      connected_at: '2026-12-07T16:59:00Z' },
  ],
};

function send(res, status, body, type = 'application/json') {
  res.writeHead(status, { 'Content-Type': type, 'Cache-Control': 'no-store' });
  res.end(typeof body === 'string' ? body : JSON.stringify(body));
}

function problem(res, status, title, detail) {
  send(res, status, { type: 'about:blank', title, status, detail }, 'application/problem+json');
}

async function asset(res, file, type) {
  const body = await readFile(path.join(assets, file));
  res.writeHead(200, {
    'Content-Type': type, 'Content-Security-Policy': CSP, 'X-Content-Type-Options': 'nosniff',
    'Referrer-Policy': 'no-referrer', 'Cache-Control': 'no-store',
  });
  res.end(body);
}

async function readBody(req) {
  let data = '';
  for await (const chunk of req) data += chunk;
  return data;
}

const server = createServer(async (req, res) => {
  const url = new URL(req.url, 'http://localhost');
  const p = url.pathname;
  if (p === '/console' || p === '/console/') return asset(res, 'index.html', 'text/html; charset=utf-8');
  if (p === '/console/console.js') return asset(res, 'console.js', 'text/javascript; charset=utf-8');
  if (p === '/console/console.css') return asset(res, 'console.css', 'text/css; charset=utf-8');
  if (!p.startsWith('/v1/')) return problem(res, 404, 'Not Found', `no route for ${p}`);

  if (req.headers.authorization !== `Bearer ${KEY}`) return problem(res, 401, 'Unauthorized', 'missing or wrong admin key');
  const account = url.searchParams.get('account_sid');
  if (account !== ACCOUNT) return problem(res, 404, 'Unknown account', `no account ${account}`);

  let m;
  if (req.method === 'GET' && (m = p.match(/^\/v1\/calls\/([^/]+)$/))) {
    if (m[1] !== CALL && !m[1].startsWith('CAfeed')) return problem(res, 404, 'Not Found', `no trace for call ${m[1]}`);
    if (Date.now() - started < TRACE_DELAY_MS) return problem(res, 404, 'Not Found', 'trace not recorded yet');
    return send(res, 200, call(m[1], 'alice'));
  }
  if (req.method === 'GET' && p === '/v1/calls') {
    const identity = url.searchParams.get('identity');
    return send(res, 200, { calls: identity === 'alice' ? [call(CALL, 'alice')] : [] });
  }
  if (req.method === 'GET' && p === '/v1/bindings') {
    const identity = url.searchParams.get('identity');
    return send(res, 200, identity === 'alice' ? bindings : { bindings: [], sockets: [] });
  }
  if (req.method === 'GET' && (m = p.match(/^\/v1\/rooms\/([^/]+)$/))) {
    if (m[1] !== ROOM) return problem(res, 404, 'Not Found', `no ledger for room ${m[1]}`);
    if ((req.headers.accept || '').includes('text/csv')) {
      const header = 'participant_sid,identity,connected_at,disconnected_at,closed_by,connected_seconds,billable_seconds';
      const lines = room.participants.map((x) => [x.participant_sid, x.identity, x.connected_at, x.disconnected_at,
        x.closed_by, x.connected_seconds, x.billable_seconds].join(','));
      return send(res, 200, `${[header, ...lines].join('\r\n')}\r\n`, 'text/csv; charset=utf-8');
    }
    return send(res, 200, room);
  }
  if (req.method === 'POST' && p === '/v1/console/test-notification') {
    let identity;
    try { ({ identity } = JSON.parse(await readBody(req))); } catch { /* falls through */ }
    if (typeof identity !== 'string' || !identity) return problem(res, 400, 'Bad Request', 'body must be {"identity": "…"}');
    const callSid = `CAfeed${Date.now().toString(16).padStart(28, '0')}`;
    if (identity !== 'alice') return send(res, 200, { call_sid: callSid, status: 404, delivered: 0, removed: 0, failed: 0 });
    return send(res, 200, { call_sid: callSid, status: 200, delivered: 2, removed: 0, failed: 1 });
  }
  return problem(res, 404, 'Not Found', `no route for ${req.method} ${p}`);
});

server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  console.log(`http://127.0.0.1:${server.address().port}/console`);
});
