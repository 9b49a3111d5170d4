// A call posted while the device's socket was away (callrelay answers Twilio 404 then) reaches
// the device when it reconnects within the ringing window with replay_since, and rings once.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { CallRelayClient } from '../dist/index.js';
import { Callrelay } from './helpers/callrelay.mjs';
import { eventually, record } from './helpers/recorder.mjs';

let relay;
before(async () => { relay = await Callrelay.start(); });
after(async () => { await relay?.close(); });

test('replays what was posted while it was disconnected, and emits it once', async (t) => {
  // The socket is made to go away with 4001 (a token that expires about 3 s after connecting),
  // and to stay away for as long as the test wants: the second token() call waits for it.
  let tokenAsked;
  const asked = new Promise((ok) => { tokenAsked = ok; });
  let releaseToken;
  const released = new Promise((ok) => { releaseToken = ok; });
  let calls = 0;
  const token = async () => {
    calls += 1;
    if (calls === 1) return relay.token('quinn', { exp: Math.floor(Date.now() / 1000) - 27 });
    if (calls === 2) { tokenAsked(); await released; }
    return relay.token('quinn');
  };
  // The injected constructor is the global one, wrapped to see which URLs the client opens.
  const urls = [];
  class Recording extends WebSocket {
    constructor(url) { urls.push(new URL(url)); super(url); }
  }
  const c = new CallRelayClient({
    url: relay.wsUrl, token, deviceId: 'quinn-tablet', WebSocket: Recording, backoff: { initialMs: 50, maxMs: 400 },
  });
  const events = record(c);
  t.after(() => c.stop());
  c.start();
  await events.waitFor('open');
  assert.equal(urls[0].searchParams.get('replay_since'), null, 'the first connection asks for no replay');
  assert.equal(urls[0].searchParams.get('ack'), '1');
  assert.equal(urls[0].searchParams.get('device_id'), 'quinn-tablet');

  // Live, before the socket goes away.
  const first = relay.notification('quinn');
  assert.equal((await relay.post(first)).status, 200);
  await events.waitFor('notification');

  const gone = await events.waitFor('close', { timeoutMs: 15_000 });
  assert.equal(gone.code, 4001, `callrelay said ${gone.code} ${gone.reason}`);
  const lostAt = Date.now();
  await asked;

  // While nothing is connected for quinn: Twilio hears 404, as it expects.
  const missed = relay.notification('quinn', { twi_from: '+14155550100' });
  const answer = await eventually(() => relay.post(missed), (a) => a.status === 404,
    { what: 'the webhook to answer 404 while the socket is away' });
  assert.equal(answer.status, 404, answer.text);

  const acknowledged = () => relay.metric('callrelay_websocket_acks_total', { outcome: 'acknowledged' });
  const acksBefore = await acknowledged();
  releaseToken();
  const since = events.mark();
  await events.waitFor('open', { since });
  const replaySince = Number(urls[1].searchParams.get('replay_since'));
  assert.ok(Number.isInteger(replaySince) && replaySince <= lostAt && replaySince > lostAt - 10_000,
    `replay_since=${urls[1].searchParams.get('replay_since')} should be shortly before the socket was lost (${lostAt})`);

  const replayed = await events.waitFor('notification', { since, where: (e) => e.notification.twi_message_id === missed.twi_message_id });
  assert.equal(replayed.raw, JSON.stringify(missed));
  await eventually(acknowledged, (v) => v >= acksBefore + 1, { what: 'the replayed notification to be acknowledged' });

  // Twilio retries what got 404; callrelay may now deliver it live on the new socket. Then a
  // new call: frames on one socket arrive in order, so once it is here, a repeat would be too.
  assert.equal((await relay.post(missed)).status, 200);
  const next = relay.notification('quinn');
  assert.equal((await relay.post(next)).status, 200);
  await events.waitFor('notification', { since, where: (e) => e.notification.twi_message_id === next.twi_message_id });

  const ids = events.of('notification').map((e) => e.notification.twi_message_id);
  assert.deepEqual(ids, [first.twi_message_id, missed.twi_message_id, next.twi_message_id], 'each call emitted once');
  assert.equal(calls, 2);
});
