// The browser example: connect to callrelay with @callrelay/client and list each incoming call
// notification. Everything from the network is written with textContent, never as HTML: a
// call notification's members come from whoever placed the call.
//
// The kit is imported from its build output (clients/js/dist), so serve the repository root
// (see README.md) after `npm ci && npm run build` in clients/js.
import { CallRelayClient, customParameters } from '../../clients/js/dist/index.js';

const STORAGE = {
  deviceId: 'callrelay-example.device-id',
  url: 'callrelay-example.url',
  tokenEndpoint: 'callrelay-example.token-endpoint',
};

const $ = (id) => document.getElementById(id);
const form = $('connect-form');
const fields = { url: $('url'), tokenEndpoint: $('token-endpoint'), token: $('token'), deviceId: $('device-id') };

/** @type {CallRelayClient | null} */
let client = null;

// localStorage can be unavailable (disabled storage, some private modes): the page still works,
// it just forgets between visits.
function load(key) {
  try {
    return localStorage.getItem(key);
  } catch {
    return null;
  }
}
function save(key, value) {
  try {
    localStorage.setItem(key, value);
  } catch {
    // not kept; nothing else depends on it
  }
}

/** A device id that stays the same across visits, so callrelay sees one device, not a new one per reload. */
function deviceId() {
  let id = load(STORAGE.deviceId);
  if (!id) {
    const bytes = crypto.getRandomValues(new Uint8Array(8));
    id = `web-${Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join('')}`;
    save(STORAGE.deviceId, id);
  }
  return id;
}

function setState(state, text) {
  const el = $('state');
  el.dataset.state = state;
  el.textContent = text;
}

function log(text) {
  const item = document.createElement('li');
  item.textContent = `${new Date().toLocaleTimeString()} ${text}`;
  const list = $('log');
  list.prepend(item);
  // Keep the log short: a page left open for days must not grow without bound.
  while (list.children.length > 50) list.lastElementChild.remove();
}

function showFormError(text) {
  const el = $('form-error');
  el.textContent = text;
  el.hidden = !text;
}

/**
 * The token() the kit calls: the pasted token if there is one (it cannot be refreshed, so once it
 * expires the page stays disconnected), else a fresh one from the token endpoint, which answers
 * either the JWT as text or JSON with a `token` member (what Twilio's quickstart servers return).
 */
function tokenSource(pasted, endpoint) {
  if (pasted) return () => pasted;
  return async () => {
    const response = await fetch(endpoint, { credentials: 'same-origin', cache: 'no-store' });
    if (!response.ok) throw new Error(`token endpoint answered ${response.status}`);
    const text = (await response.text()).trim();
    if (text.startsWith('{')) {
      const token = JSON.parse(text).token;
      if (typeof token !== 'string') throw new Error('token endpoint JSON has no "token" string');
      return token;
    }
    return text;
  };
}

function showCall(notification) {
  const item = $('call-template').content.firstElementChild.cloneNode(true);
  const set = (col, value) => {
    item.querySelector(`[data-col="${col}"]`).textContent = value ?? '—';
  };
  set('from', notification.twi_from);
  set('to', notification.twi_to);
  set('call-sid', notification.twi_call_sid);
  set('type', notification.twi_message_type);
  const params = [...customParameters(notification)].map(([k, v]) => `${k}=${v}`).join('\n');
  set('params', params || null);
  set('received', new Date().toLocaleTimeString());
  // dataset values are attributes, never parsed as markup.
  item.dataset.callSid = String(notification.twi_call_sid ?? '');
  item.dataset.type = String(notification.twi_message_type ?? '');
  $('calls').prepend(item);
  $('no-calls').hidden = true;
}

function connect(event) {
  event.preventDefault();
  showFormError('');
  const url = fields.url.value.trim();
  const endpoint = fields.tokenEndpoint.value.trim();
  const pasted = fields.token.value.trim();
  const id = fields.deviceId.value.trim();
  if (!pasted && !endpoint) {
    showFormError('Give a token endpoint or paste an Access Token.');
    return;
  }
  let next;
  try {
    next = new CallRelayClient({ url, token: tokenSource(pasted, endpoint), deviceId: id });
  } catch (error) {
    showFormError(error instanceof Error ? error.message : String(error));
    return;
  }
  save(STORAGE.url, url);
  save(STORAGE.tokenEndpoint, endpoint);
  save(STORAGE.deviceId, id);
  client?.stop();
  client = next;
  // Events of a client this page has since replaced (its final close arrives late) are ignored.
  const mine = (handler) => (e) => {
    if (client === next) handler(e);
  };

  client.addEventListener('open', mine((e) => {
    setState('open', 'Connected');
    log(e.reconnected ? 'reconnected (missed calls are replayed)' : 'connected');
  }));
  client.addEventListener('close', mine((e) => {
    if (!e.willReconnect) {
      setState('stopped', 'Disconnected');
      log('disconnected');
      return;
    }
    setState('waiting', 'Reconnecting…');
    log(e.wasOpen ? `connection closed (${e.code}${e.reason ? ` ${e.reason}` : ''})` : 'could not connect');
  }));
  client.addEventListener('reconnecting', mine((e) => {
    log(`retry #${e.attempt} in ${e.delayMs} ms${e.refreshToken ? ' with a fresh token' : ''}`);
  }));
  client.addEventListener('error', mine((e) => {
    log(`${e.kind} error: ${e.message}`);
  }));
  client.addEventListener('notification', mine((e) => {
    showCall(e.notification);
    log(`call notification ${e.notification.twi_message_id ?? ''}`);
  }));

  setState('connecting', 'Connecting…');
  $('connect').disabled = true;
  $('disconnect').disabled = false;
  client.start();
}

function disconnect() {
  client?.stop();
  client = null;
  setState('stopped', 'Disconnected');
  $('connect').disabled = false;
  $('disconnect').disabled = true;
}

fields.url.value = load(STORAGE.url) ?? `${location.protocol}//${location.hostname}:8080`;
fields.tokenEndpoint.value = load(STORAGE.tokenEndpoint) ?? '';
fields.deviceId.value = deviceId();
form.addEventListener('submit', connect);
$('disconnect').addEventListener('click', disconnect);
// Tells tests (and anyone debugging a CSP) that this module ran.
document.documentElement.dataset.ready = 'true';
