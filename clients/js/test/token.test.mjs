// The access token: callrelay closes the socket with 4001 when it expires, and refuses the
// upgrade for a bad one; either way the client asks token() for a fresh one and reconnects.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { CallRelayClient } from '../dist/index.js';
import { Callrelay } from './helpers/callrelay.mjs';
import { mintAccessToken } from './helpers/twilio.mjs';
import { record } from './helpers/recorder.mjs';

let relay;
before(async () => { relay = await Callrelay.start(); });
after(async () => { await relay?.close(); });

/** A client whose token() hands out `tokens` in turn (functions of the call number), counting calls. */
function client(identity, tokens) {
  const calls = [];
  const c = new CallRelayClient({
    url: relay.wsUrl,
    token: async () => {
      calls.push(Date.now());
      const next = tokens[Math.min(calls.length, tokens.length) - 1];
      return next();
    },
    backoff: { initialMs: 50, maxMs: 400 },
  });
  return { client: c, events: record(c), calls };
}

test('on 4001 (access token expired) it gets a fresh token and reconnects', async (t) => {
  // callrelay accepts a token up to 30 s past its exp (clock-skew leeway) and closes the socket
  // at exp + 30 s: a token that expired 27 s ago gives a socket that lives about 3 s.
  const shortLived = () => relay.token('nia', { exp: Math.floor(Date.now() / 1000) - 27 });
  const { client: c, events, calls } = client('nia', [shortLived, () => relay.token('nia')]);
  t.after(() => c.stop());
  c.start();
  await events.waitFor('open');
  assert.equal(calls.length, 1);

  const expired = await events.waitFor('close', { timeoutMs: 15_000 });
  assert.equal(expired.code, 4001, `callrelay said ${expired.code} ${expired.reason}`);
  assert.equal(expired.willReconnect, true);
  const retry = await events.waitFor('reconnecting');
  assert.equal(retry.refreshToken, true);
  const since = events.mark();
  await events.waitFor('open', { since });
  assert.equal(calls.length, 2, 'token() was asked once more, for the reconnect');

  const n = relay.notification('nia');
  assert.equal((await relay.post(n)).status, 200);
  await events.waitFor('notification', { since });
});

test('on a refused upgrade it gets a fresh token and reconnects', async (t) => {
  // Signed with a secret callrelay does not know: the upgrade is answered 401.
  const forged = () => mintAccessToken({
    accountSid: 'AC0123456789abcdef0123456789abcdef', apiKeySid: 'SK0123456789abcdef0123456789abcdef',
    apiKeySecret: 'not-the-secret', identity: 'olu',
  });
  const { client: c, events, calls } = client('olu', [forged, () => relay.token('olu')]);
  t.after(() => c.stop());
  c.start();
  const refused = await events.waitFor('close');
  assert.equal(refused.wasOpen, false);
  assert.equal(refused.willReconnect, true);
  assert.equal((await events.waitFor('reconnecting')).refreshToken, true);
  await events.waitFor('open');
  assert.equal(calls.length, 2);
  assert.equal((await relay.post(relay.notification('olu'))).status, 200);
  await events.waitFor('notification');
});

test('a token() that fails is asked again after a backoff wait', async (t) => {
  let fail = true;
  const { client: c, events, calls } = client('pia', [
    () => { if (fail) { fail = false; throw new Error('token endpoint unavailable'); } return relay.token('pia'); },
  ]);
  t.after(() => c.stop());
  c.start();
  const error = await events.waitFor('error');
  assert.equal(error.kind, 'token');
  assert.match(error.message, /token endpoint unavailable/);
  assert.equal((await events.waitFor('reconnecting')).refreshToken, true);
  await events.waitFor('open');
  assert.equal(calls.length, 2);
});
