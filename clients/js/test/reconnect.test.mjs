// The socket comes back after callrelay is killed (1006) or shut down (1001), with full-jitter
// exponential backoff, and never after stop().
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { CallRelayClient } from '../dist/index.js';
import { Callrelay } from './helpers/callrelay.mjs';
import { eventually, record } from './helpers/recorder.mjs';

const BACKOFF = { initialMs: 50, maxMs: 400 };
let relay;
before(async () => { relay = await Callrelay.start(); });
after(async () => { await relay?.close(); });

function client(identity, tokenCalls = { n: 0 }) {
  const c = new CallRelayClient({
    url: relay.publicUrl, // http://host:port: the kit makes it ws://host:port/v1/ws
    token: () => { tokenCalls.n += 1; return relay.token(identity); },
    deviceId: `${identity}-phone`,
    backoff: BACKOFF,
  });
  return { client: c, events: record(c) };
}

/** Posts a notification for `identity` and checks it arrives: the socket is really live again. */
async function ring(identity, events) {
  const since = events.mark();
  const n = relay.notification(identity);
  const answer = await relay.post(n);
  assert.equal(answer.status, 200, answer.text);
  const got = await events.waitFor('notification', { since, where: (e) => e.notification.twi_message_id === n.twi_message_id });
  assert.equal(got.raw, JSON.stringify(n));
}

/** Every wait drawn so far lies within its ceiling, and failed attempts count up. */
function checkBackoff(events, since) {
  const waits = events.of('reconnecting').filter((e) => events.events.indexOf(e) >= since);
  assert.ok(waits.length >= 2, `expected several attempts, saw ${waits.length}`);
  waits.forEach((w, i) => {
    assert.equal(w.attempt, waits[0].attempt + i, 'attempts count up while they fail');
    const ceiling = Math.min(BACKOFF.maxMs, BACKOFF.initialMs * 2 ** (w.attempt - 1));
    assert.ok(w.delayMs >= 0 && w.delayMs <= ceiling, `attempt ${w.attempt} waited ${w.delayMs} ms, over its ceiling ${ceiling}`);
  });
}

test('reconnects with backoff after callrelay is killed and restarted (1006)', async (t) => {
  const { client: c, events } = client('kim');
  t.after(() => c.stop());
  c.start();
  await events.waitFor('open');
  await ring('kim', events);

  const since = events.mark();
  await relay.kill('SIGKILL');
  const lost = await events.waitFor('close', { since });
  assert.equal(lost.code, 1006);
  assert.equal(lost.wasOpen, true);
  assert.equal(lost.willReconnect, true);
  // Restart only once an attempt has failed against the dead port: the backoff is then in play.
  await events.waitFor('close', { since, where: (e) => !e.wasOpen });
  await events.waitFor('reconnecting', { since, where: (e) => e.attempt >= 2 });
  await relay.restart();
  const back = await events.waitFor('open', { since, timeoutMs: 15_000 });
  assert.equal(back.reconnected, true);
  checkBackoff(events, since);
  await ring('kim', events);
});

test('reconnects after callrelay shuts down (1001) and comes back', async (t) => {
  const { client: c, events } = client('lee');
  t.after(() => c.stop());
  c.start();
  await events.waitFor('open');

  const since = events.mark();
  const stopping = relay.kill('SIGTERM');
  const bye = await events.waitFor('close', { since });
  assert.equal(bye.code, 1001, `callrelay said ${bye.code} ${bye.reason}`);
  assert.equal(bye.willReconnect, true);
  await stopping;
  await events.waitFor('close', { since, where: (e) => !e.wasOpen });
  await relay.restart();
  await events.waitFor('open', { since, timeoutMs: 15_000 });
  checkBackoff(events, since);
  await ring('lee', events);
});

test('stop() closes the socket and never reconnects', async (t) => {
  const { client: c, events } = client('max');
  t.after(() => c.stop());
  c.start();
  await events.waitFor('open');
  assert.equal(c.state, 'open');

  // Stopped while open: a clean close, and callrelay stops counting the socket.
  let since = events.mark();
  c.stop();
  assert.equal(c.state, 'stopped');
  const closed = await events.waitFor('close', { since });
  assert.equal(closed.willReconnect, false);
  // 1000 when callrelay answers the client's close frame; callrelay builds that answer skip it
  // and drop the TCP connection, which the WebSocket reports as 1006. Either way it is over.
  assert.ok([1000, 1006].includes(closed.code), `closed with ${closed.code}`);
  await eventually(async () => (await relay.post(relay.notification('max'))).status, (s) => s === 404,
    { what: 'the webhook to answer 404 once the socket is gone' });

  // Stopped while waiting to reconnect: the pending attempt is cancelled.
  c.start();
  since = events.mark();
  await events.waitFor('open', { since });
  since = events.mark();
  await relay.kill('SIGKILL');
  await events.waitFor('reconnecting', { since });
  c.stop();
  const opensBefore = events.of('open').length;
  const waitsBefore = events.of('reconnecting').length;
  await relay.restart();
  // Proving that nothing happens takes some time: ten times the longest backoff wait, by when
  // a running client would have reconnected many times over.
  await new Promise((ok) => setTimeout(ok, 10 * BACKOFF.maxMs));
  assert.equal(events.of('open').length, opensBefore, 'no connection after stop()');
  assert.equal(events.of('reconnecting').length, waitsBefore, 'no attempt scheduled after stop()');
  assert.equal(c.state, 'stopped');
  assert.equal((await relay.post(relay.notification('max'))).status, 404);
});
