// A notification arrives as the exact bytes Twilio posted, unknown message types pass through,
// and each one is acknowledged to callrelay.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { CallRelayClient } from '../dist/index.js';
import { Callrelay } from './helpers/callrelay.mjs';
import { eventually, record } from './helpers/recorder.mjs';

let relay;
before(async () => { relay = await Callrelay.start(); });
after(async () => { await relay?.close(); });

async function connected(identity, options = {}) {
  const client = new CallRelayClient({
    url: relay.wsUrl,
    token: () => relay.token(identity),
    deviceId: `${identity}-laptop`,
    backoff: { initialMs: 50, maxMs: 400 },
    ...options,
  });
  const events = record(client);
  client.start();
  await events.waitFor('open');
  return { client, events };
}

test('receives a notification byte for byte as Twilio posted it', async (t) => {
  const { client, events } = await connected('bob');
  t.after(() => client.stop());
  // Odd spacing, member order, escapes and non-ASCII text: re-serialising would change any of them.
  const n = relay.notification('bob');
  const body = `{ "twi_to" : "client:bob",\n  "twi_account_sid":"${n.twi_account_sid}", "twi_from": "client:al\\u00efce",`
    + ` "twi_call_sid": "${n.twi_call_sid}", "twi_message_id": "${n.twi_message_id}", "twi_message_type": "twilio.voice.call",`
    + ` "twi_bridge_token": "${n.twi_bridge_token}", "twi_params": "who=Zoë&n=1", "twi_stir_status": "TN-Validation-Passed-A" }`;

  const answer = await relay.post(body);
  assert.equal(answer.status, 200, answer.text);
  const got = await events.waitFor('notification');
  assert.equal(got.raw, body);
  assert.equal(got.notification.twi_from, 'client:alïce');
  assert.equal(got.notification.twi_call_sid, n.twi_call_sid);
  assert.equal(got.notification.twi_message_type, 'twilio.voice.call');
  assert.equal(got.notification.twi_stir_status, 'TN-Validation-Passed-A');
});

test('passes unknown message types through', async (t) => {
  const { client, events } = await connected('dave');
  t.after(() => client.stop());
  const n = relay.notification('dave', { twi_message_type: 'twilio.voice.something-new' });
  assert.equal((await relay.post(n)).status, 200);
  const got = await events.waitFor('notification');
  assert.equal(got.notification.twi_message_type, 'twilio.voice.something-new');
  assert.deepEqual(got.notification, n);
});

test('acknowledges each notification it receives', async (t) => {
  const acknowledged = () => relay.metric('callrelay_websocket_acks_total', { outcome: 'acknowledged' });
  const { client, events } = await connected('erin');
  t.after(() => client.stop());
  const before = await acknowledged();
  const n = relay.notification('erin');
  assert.equal((await relay.post(n)).status, 200);
  await events.waitFor('notification');
  // The ack is a frame after the dispatch; callrelay counts it once it has read it.
  await eventually(acknowledged, (v) => v >= before + 1, { what: 'callrelay_websocket_acks_total{outcome="acknowledged"} to rise' });
  assert.equal(await relay.metric('callrelay_websocket_acks_total', { outcome: 'invalid' }), 0);
  assert.equal(await relay.metric('callrelay_websocket_acks_total', { outcome: 'unknown' }), 0);
});

test('sends no acknowledgement when ack is off', async (t) => {
  const acks = () => relay.metric('callrelay_websocket_acks_total');
  const { client, events } = await connected('frank', { ack: false });
  t.after(() => client.stop());
  const before = await acks();
  const n = relay.notification('frank');
  assert.equal((await relay.post(n)).status, 200);
  await events.waitFor('notification');
  // A client that does acknowledge, on the same callrelay, proves the metric would have moved by now.
  const { client: other, events: otherEvents } = await connected('gina');
  t.after(() => other.stop());
  const withAcks = await acks();
  assert.equal((await relay.post(relay.notification('gina'))).status, 200);
  await otherEvents.waitFor('notification');
  await eventually(acks, (v) => v >= withAcks + 1, { what: 'the acknowledging client\'s ack to be counted' });
  assert.equal(await acks(), before + 1, 'only the acknowledging client\'s ack was counted');
});
