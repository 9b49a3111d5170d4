// The kit's parts on their own, and the client against a scripted WebSocket: no callrelay, no
// network, so every branch is reached on purpose and at once.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  Backoff, CallRelayClient, RecentIds, accessTokenExpiry, accessTokenExpired, clientIdentity, connectUrl,
  customParameters, endpointUrl, parseNotification,
} from '../dist/index.js';
import { record } from './helpers/recorder.mjs';
import { bodySha256, mintAccessToken, twilioSignature } from './helpers/twilio.mjs';

test('the tests sign webhooks as Twilio does (Twilio\'s published test vector)', () => {
  const body = '{"property": "value", "boolean": true}';
  assert.equal(bodySha256(body), '0a1ff7634d9ab3b95db5c9a2dfe9416e41502b283a80c7cf19632632f96e6620');
  const url = `https://mycompany.com/myapp.php?foo=1&bar=2&bodySHA256=${bodySha256(body)}`;
  assert.equal(twilioSignature('12345', url), 'a9nBmqA0ju/hNViExpshrM61xv4=');
});

test('backoff: exponential ceilings, capped, with full jitter', () => {
  const b = new Backoff({ initialMs: 100, maxMs: 1000 });
  assert.deepEqual([1, 2, 3, 4, 5, 50, 5000].map((a) => b.ceiling(a)), [100, 200, 400, 800, 1000, 1000, 1000]);
  assert.equal(new Backoff({ initialMs: 100, maxMs: 1000 }, () => 0).delay(3), 0);
  assert.equal(new Backoff({ initialMs: 100, maxMs: 1000 }, () => 0.999999).delay(3), 400);
  assert.equal(new Backoff({ initialMs: 100, maxMs: 1000 }, () => 0.5).delay(9), 500);
  assert.throws(() => new Backoff({ initialMs: 0 }), RangeError);
  assert.equal(new Backoff({ initialMs: 500, maxMs: 10 }).maxMs, 500, 'maxMs is at least initialMs');
});

test('recent ids: repeats are recognised, the oldest forgotten past capacity', () => {
  const ids = new RecentIds(3);
  assert.equal(ids.add('a'), true);
  assert.equal(ids.add('a'), false);
  ids.add('b');
  ids.add('c');
  ids.add('d');
  assert.equal(ids.size, 3);
  assert.equal(ids.has('a'), false);
  assert.equal(ids.add('b'), false);
});

test('connect URL: endpoint normalised, parameters set', () => {
  assert.equal(endpointUrl('https://relay.example.com').toString(), 'wss://relay.example.com/v1/ws');
  assert.equal(endpointUrl('http://127.0.0.1:8080/').toString(), 'ws://127.0.0.1:8080/v1/ws');
  assert.equal(endpointUrl('wss://relay.example.com/prefix/v1/ws#x').toString(), 'wss://relay.example.com/prefix/v1/ws');
  assert.throws(() => endpointUrl('ftp://relay.example.com'), TypeError);
  const url = new URL(connectUrl(endpointUrl('wss://relay.example.com/v1/ws?tenant=a'),
    { accessToken: 'a.b+c', deviceId: 'ïphone 1', ack: true, replaySince: 1765000000123.7 }));
  assert.equal(url.searchParams.get('tenant'), 'a');
  assert.equal(url.searchParams.get('access_token'), 'a.b+c');
  assert.equal(url.searchParams.get('device_id'), 'ïphone 1');
  assert.equal(url.searchParams.get('ack'), '1');
  assert.equal(url.searchParams.get('replay_since'), '1765000000123');
  const bare = new URL(connectUrl(endpointUrl('wss://r.example/v1/ws'), { accessToken: 't', ack: false }));
  assert.deepEqual([...bare.searchParams.keys()], ['access_token']);
});

test('access token expiry is read without verifying', () => {
  const token = mintAccessToken({ accountSid: 'AC1', apiKeySid: 'SK1', apiKeySecret: 's', identity: 'bob', exp: 2000000000 });
  assert.equal(accessTokenExpiry(token), 2000000000);
  assert.equal(accessTokenExpired(token, 1999999999000), false);
  assert.equal(accessTokenExpired(token, 2000000000000), true);
  assert.equal(accessTokenExpiry('not a jwt'), undefined);
  assert.equal(accessTokenExpired('x.!!!.y'), false, 'unreadable tokens are left to callrelay to judge');
});

test('notifications: parsed when they are call notifications, helpers read them', () => {
  const n = parseNotification('{"twi_account_sid":"AC1","twi_to":"client:bob","twi_params":"a=1&b=caf%C3%A9","x":[1]}');
  assert.equal(n.twi_to, 'client:bob');
  assert.deepEqual(n.x, [1]);
  assert.equal(customParameters(n).get('b'), 'café');
  assert.equal(clientIdentity(n.twi_to), 'bob');
  assert.equal(clientIdentity('+14155550100'), '+14155550100');
  for (const bad of ['', 'null', '[]', '"x"', '{"twi_to":"client:bob"}', '{"twi_account_sid":"AC1","twi_to":7}']) {
    assert.equal(parseNotification(bad), undefined, bad);
  }
});

/** A WebSocket whose every move the test makes; instances are kept in `FakeSocket.all`. */
class FakeSocket {
  static all = [];
  constructor(url) {
    this.url = new URL(url);
    this.readyState = 0;
    this.sent = [];
    this.onopen = this.onmessage = this.onerror = this.onclose = null;
    FakeSocket.all.push(this);
  }
  send(data) { this.sent.push(data); }
  close(code = 1005, reason = '') {
    if (this.readyState >= 2) return;
    this.readyState = 2;
    queueMicrotask(() => this.serverClose(code, reason));
  }
  open() { this.readyState = 1; this.onopen?.({}); }
  message(data) { this.onmessage?.({ data }); }
  serverClose(code, reason = '') { this.readyState = 3; this.onclose?.({ code, reason, wasClean: code !== 1006 }); }
  /** What browsers do when the upgrade is refused: error, then close 1006. */
  refuse() { this.readyState = 3; this.onerror?.({}); this.onclose?.({ code: 1006, reason: '', wasClean: false }); }
  /** What Node 20's WebSocket does on a failed connection: error, and no close at all. */
  failQuietly() { this.onerror?.({ message: 'Received network error or non-101 status code.' }); }
}

function fakeClient(options = {}) {
  FakeSocket.all = [];
  let tokens = 0;
  const client = new CallRelayClient({
    url: 'wss://relay.example.com',
    token: () => `t${++tokens}`,
    WebSocket: FakeSocket,
    backoff: { initialMs: 1, maxMs: 8 },
    ...options,
  });
  return { client, events: record(client), tokens: () => tokens, socket: (i) => FakeSocket.all.at(i ?? -1) };
}

async function nextSocket(count) {
  // The client opens sockets after awaiting token() and a backoff timer: poll the list briefly.
  for (let i = 0; i < 200 && FakeSocket.all.length < count; i++) await new Promise((ok) => setTimeout(ok, 2));
  assert.equal(FakeSocket.all.length, count, `expected socket #${count}`);
  return FakeSocket.all[count - 1];
}

const call = (id, extra = {}) => JSON.stringify({ twi_account_sid: 'AC1', twi_to: 'client:bob', twi_message_id: id, twi_message_type: 'twilio.voice.call', ...extra });

test('client: emits each notification once, then acknowledges it', async () => {
  const { client, events } = fakeClient({ deviceId: 'bob-1' });
  client.start();
  const s = await nextSocket(1);
  assert.equal(s.url.toString(), 'wss://relay.example.com/v1/ws?access_token=t1&device_id=bob-1&ack=1');
  s.open();
  const order = [];
  client.addEventListener('notification', () => order.push(`event, ${s.sent.length} acks sent`));
  s.message(call('RU1'));
  s.message(call('RU1'));
  s.message(call('RU2', { twi_message_type: 'vendor.new' }));
  assert.deepEqual(events.of('notification').map((e) => e.notification.twi_message_id), ['RU1', 'RU2']);
  assert.equal(events.of('notification')[1].notification.twi_message_type, 'vendor.new');
  assert.deepEqual(order, ['event, 0 acks sent', 'event, 2 acks sent'], 'each ack follows its event; the repeat is acknowledged too');
  assert.deepEqual(s.sent.map((f) => JSON.parse(f)), [1, 1, 2].map((i) => ({ type: 'ack', twi_message_id: `RU${i}` })));
  s.message('not json');
  s.message(new Uint8Array([1]));
  assert.deepEqual(events.of('error').map((e) => e.kind), ['frame', 'frame']);
  assert.equal(events.of('error')[0].raw, 'not json');
  assert.equal(s.sent.length, 3, 'nothing acknowledged for frames that are not notifications');
  client.stop();
});

test('client: with ack off nothing is sent; with replay off no replay_since', async () => {
  const { client } = fakeClient({ ack: false, replay: false });
  client.start();
  const s = await nextSocket(1);
  s.open();
  s.message(call('RU1'));
  assert.deepEqual(s.sent, []);
  s.serverClose(1001, 'callrelay is shutting down');
  const again = await nextSocket(2);
  assert.equal(again.url.searchParams.get('ack'), null);
  assert.equal(again.url.searchParams.get('replay_since'), null);
  client.stop();
});

test('client: reconnects with replay_since; a fresh token only after 4001 or a failed connect', async () => {
  const { client, events, tokens } = fakeClient({ replayMarginMs: 1000 });
  client.start();
  let s = await nextSocket(1);
  s.open();
  s.message(call('RU1'));
  const lostAt = Date.now();
  s.serverClose(1001, 'callrelay is shutting down');
  s = await nextSocket(2);
  const since = Number(s.url.searchParams.get('replay_since'));
  assert.ok(since >= lostAt - 1000 && since <= Date.now() - 1000, `replay_since ${since} is the loss minus the margin`);
  assert.equal(s.url.searchParams.get('access_token'), 't1', 'a 1001 keeps the token');
  s.open();
  s.message(call('RU1'));
  assert.equal(events.of('notification').length, 1, 'the replayed repeat is dropped');
  s.serverClose(4001, 'access token expired');
  s = await nextSocket(3);
  assert.equal(s.url.searchParams.get('access_token'), 't2', '4001: a fresh token');
  s.refuse();
  s = await nextSocket(4);
  assert.equal(s.url.searchParams.get('access_token'), 't3', 'refused upgrade: a fresh token');
  s.failQuietly();
  s = await nextSocket(5);
  assert.equal(s.url.searchParams.get('access_token'), 't4', 'failed connect without a close event: still retried');
  s.open();
  assert.equal(tokens(), 4);
  const waits = events.of('reconnecting');
  assert.deepEqual(waits.map((w) => w.refreshToken), [false, true, true, true]);
  assert.deepEqual(waits.map((w) => w.attempt), [1, 2, 3, 4], 'short-lived connections do not reset the backoff');
  assert.equal(events.of('open').at(-1).reconnected, true);
  client.stop();
});

test('client: stop() while waiting, connecting or open ends everything', async () => {
  const { client, events } = fakeClient({ backoff: { initialMs: 1000, maxMs: 1000 } });
  client.start();
  let s = await nextSocket(1);
  s.open();
  s.serverClose(1006);
  assert.equal(client.state, 'waiting');
  client.stop();
  assert.equal(client.state, 'stopped');

  // Stopped while the token is on its way: no socket is opened.
  let release;
  const slow = fakeClient({ token: () => new Promise((ok) => { release = ok; }) });
  slow.client.start();
  assert.equal(slow.client.state, 'connecting');
  slow.client.stop();
  release('late');
  await new Promise((ok) => setTimeout(ok, 10));
  assert.equal(FakeSocket.all.length, 0);

  // Stopped while open: the socket is closed with 1000, its close says no reconnect.
  const open = fakeClient();
  open.client.start();
  s = await nextSocket(1);
  s.open();
  open.client.stop();
  const closed = await open.events.waitFor('close');
  assert.equal(closed.code, 1000);
  assert.equal(closed.willReconnect, false);
  s.message(call('RU9'));
  assert.equal(open.events.of('notification').length, 0, 'nothing is emitted after stop()');
  assert.equal(open.events.of('reconnecting').length, 0);
  assert.equal(events.of('reconnecting').length, 1);

  // A close listener may stop the client too.
  const inListener = fakeClient();
  inListener.client.addEventListener('close', () => inListener.client.stop());
  inListener.client.start();
  s = await nextSocket(1);
  s.open();
  s.serverClose(1006);
  assert.equal(inListener.events.of('reconnecting').length, 0);
  assert.equal(inListener.client.state, 'stopped');
});

test('client: refuses bad options up front', () => {
  assert.throws(() => new CallRelayClient({ url: 'wss://r.example', token: 'abc', WebSocket: FakeSocket }), TypeError);
  assert.throws(() => new CallRelayClient({ url: 'wss://r.example', token: () => 't', deviceId: '', WebSocket: FakeSocket }), RangeError);
  assert.throws(() => new CallRelayClient({ url: 'wss://r.example', token: () => 't', deviceId: 'a\nb', WebSocket: FakeSocket }), RangeError);
  assert.throws(() => new CallRelayClient({ url: 'wss://r.example', token: () => 't', deviceId: 'é'.repeat(129), WebSocket: FakeSocket }), RangeError);
  assert.doesNotThrow(() => new CallRelayClient({ url: 'wss://r.example', token: () => 't', deviceId: 'é'.repeat(128), WebSocket: FakeSocket }));
});
