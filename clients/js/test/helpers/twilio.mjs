// What Twilio does, done the way Twilio does it, for the tests: mint Access Tokens (the JWTs
// apps already carry) and sign call-notification webhooks (X-Twilio-Signature over the URL with
// its bodySHA256 parameter). Only node:crypto: the tests must not depend on Twilio's SDK.
import { createHash, createHmac, randomBytes } from 'node:crypto';

const b64url = (buf) => Buffer.from(buf).toString('base64url');

/**
 * An HS256 Twilio Access Token with a voice grant for `identity`.
 * `exp` (unix seconds) wins over `ttlSecs`; callrelay allows 30 s of clock skew past `exp`, so a
 * token whose `exp` lies a little in the past is still accepted and then expires soon after.
 */
export function mintAccessToken({ accountSid, apiKeySid, apiKeySecret, identity, ttlSecs = 3600, exp }) {
  const now = Math.floor(Date.now() / 1000);
  const header = { typ: 'JWT', alg: 'HS256', cty: 'twilio-fpa;v=1' };
  const claims = {
    jti: `${apiKeySid}-${now}`,
    iss: apiKeySid,
    sub: accountSid,
    exp: exp ?? now + ttlSecs,
    grants: { identity, voice: { incoming: { allow: true } } },
  };
  const unsigned = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
  const signature = createHmac('sha256', apiKeySecret).update(unsigned).digest();
  return `${unsigned}.${b64url(signature)}`;
}

/** A call notification as Twilio posts it; `overrides` replace or add members. */
export function callNotification({ accountSid, to, from = 'client:alice', ...overrides }) {
  const hex = (n) => randomBytes(n).toString('hex');
  return {
    twi_account_sid: accountSid,
    twi_bridge_token: `bridge-${hex(24)}`,
    twi_call_sid: `CA${hex(16)}`,
    twi_from: from,
    twi_to: `client:${to}`,
    twi_message_id: `RU${hex(16)}`,
    twi_message_type: 'twilio.voice.call',
    twi_params: 'ring=1&note=caf%C3%A9',
    ...overrides,
  };
}

/** X-Twilio-Signature for a JSON body: HMAC-SHA1 over the full URL alone, base64. */
export function twilioSignature(authToken, url) {
  return createHmac('sha1', authToken).update(url).digest('base64');
}

/** The bodySHA256 query parameter: lowercase hex SHA-256 of the raw body. */
export function bodySha256(body) {
  return createHash('sha256').update(body).digest('hex');
}

/**
 * POSTs `body` (a string: sent byte for byte) to callrelay's call-notification webhook, signed
 * as Twilio signs JSON bodies: the URL gets bodySHA256 = hex SHA-256 of the body, and
 * X-Twilio-Signature = base64(HMAC-SHA1(auth token, the full public URL with that query)).
 * `publicUrl` is what callrelay's server.public_url says (the URL Twilio would have called);
 * `listenUrl` is where the request actually goes.
 */
export async function postCallNotification({ publicUrl, listenUrl = publicUrl, authToken, body }) {
  const path = `/v1/twilio/call-notifications?bodySHA256=${bodySha256(body)}`;
  const signature = twilioSignature(authToken, `${publicUrl}${path}`);
  const response = await fetch(`${listenUrl}${path}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', 'X-Twilio-Signature': signature },
    body,
    signal: AbortSignal.timeout(10_000),
  });
  return { status: response.status, text: await response.text() };
}
