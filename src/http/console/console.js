// callrelay console: a few views over the admin read API (same origin as this page).
// No framework, no build step. Every value shown is set with textContent or as an attribute
// (never innerHTML), so nothing that arrives from the API is ever parsed as markup.
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const CALL_SID = /^CA[0-9a-fA-F]{32}$/;
  const ROOM_SID = /^RM[0-9a-fA-F]{32}$/;
  const KEY_ITEM = 'callrelay.console.adminKey';   // sessionStorage only: gone with the tab
  const ACCOUNT_ITEM = 'callrelay.console.accountSid';
  const DASH = '—';
  let lookupSeq = 0;   // only the newest lookup may render

  // ---- DOM helpers ---------------------------------------------------------------------------

  // el('td', {class: 'x', 'data-col': 'id'}, 'text', childNode, [more]) — strings become text.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === 'class') node.className = value;
      else if (name === 'onclick') node.addEventListener('click', value);
      else node.setAttribute(name, value === true ? '' : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child !== null && child !== undefined && child !== false) node.append(child);
    }
    return node;
  }

  const text = (v) => (v === null || v === undefined || v === '' ? DASH : String(v));
  const millis = (v) => (typeof v === 'number' ? `${v.toFixed(1)} ms` : DASH);
  const seconds = (v) => (typeof v === 'number' ? `${v} s` : DASH);
  const code = (v) => el('code', {}, text(v));
  const count = (list) => (Array.isArray(list) ? list.length : 0);
  const cell = (col, value, cls) => el('td', { 'data-col': col, class: cls }, value instanceof Node ? value : text(value));

  // RFC 3339 → "2026-12-07 17:00:00.123Z", which may wrap between date and time only.
  function when(v) {
    const m = typeof v === 'string' && v.match(/^(\d{4}-\d\d-\d\d)T(.+)$/);
    return m ? el('span', { class: 'when', title: v }, el('span', {}, m[1]), ' ', el('span', {}, m[2])) : text(v);
  }
  const spaced = (v) => text(v).replace(/^(\d{4}-\d\d-\d\d)T/, '$1 ');
  const timeCell = (col, value) => cell(col, when(value), 'time');

  function statusBadge(status) {
    const cls = typeof status !== 'number' ? 'badge' : `badge s${Math.floor(status / 100)}xx`;
    return el('span', { class: cls }, text(status));
  }

  function outcomeBadge(outcome) {
    const known = ['delivered', 'removed', 'failed'].includes(outcome) ? outcome : 'other';
    return el('span', { class: `badge o-${known}` }, text(outcome));
  }

  function facts(pairs) {   // [[label, value-or-node, data-col], ...] → <dl>
    return el('dl', { class: 'facts' }, pairs.map(([label, value, col]) => [
      el('dt', {}, label),
      el('dd', { 'data-col': col }, value instanceof Node ? value : text(value)),
    ]));
  }

  function table(testid, headers, rows, empty) {
    if (!rows.length) return el('p', { class: 'muted empty', 'data-testid': `${testid}-empty` }, empty);
    return el('div', { class: 'scroll' }, el('table', { 'data-testid': testid },
      el('thead', {}, el('tr', {}, headers.map((h) => el('th', { scope: 'col' }, h)))),
      el('tbody', {}, rows)));
  }

  function section(id, title, list, body) {
    return el('section', { id, 'data-testid': id, 'data-count': count(list) },
      el('h3', {}, `${title} (${count(list)})`), body);
  }

  // ---- API -----------------------------------------------------------------------------------

  class Problem extends Error {
    constructor(status, title, detail) {
      super(detail || title);
      Object.assign(this, { status, title, detail });
    }
  }

  async function problemFrom(res) {
    const body = await res.text().catch(() => '');
    let doc = null;
    try { doc = JSON.parse(body); } catch { /* not JSON: show the text */ }
    if (doc && typeof doc === 'object') {
      return new Problem(res.status, doc.title || res.statusText || 'Error', doc.detail || '');
    }
    return new Problem(res.status, res.statusText || 'Error', body.slice(0, 500));
  }

  async function api(path, params, init = {}) {
    const key = $('key').value.trim();
    const account = $('account').value.trim();
    if (!key) throw new Problem(0, 'Admin key missing', 'Enter the admin key first.');
    if (!account) throw new Problem(0, 'Account SID missing', 'Enter the account SID (AC…) first.');
    const url = new URL(path, window.location.origin);
    url.searchParams.set('account_sid', account);
    for (const [name, value] of Object.entries(params || {})) url.searchParams.set(name, value);
    let res;
    try {
      res = await fetch(url, {
        method: init.method || 'GET',
        body: init.body,
        headers: { Accept: 'application/json', ...init.headers, Authorization: `Bearer ${key}` },
        cache: 'no-store',
        credentials: 'omit',
        referrerPolicy: 'no-referrer',
      });
    } catch (e) {
      throw new Problem(0, 'Network error', String(e && e.message ? e.message : e));
    }
    if (!res.ok) throw await problemFrom(res);
    return init.raw ? res : res.json();
  }

  function asProblem(e) {
    if (e instanceof Problem) return e;
    console.error(e);   // a bug in this page: let it show up in the browser's console too
    return new Problem(0, 'Unexpected error', String(e && e.message ? e.message : e));
  }

  function problemNode(p) {
    return el('div', { 'data-status': p.status },
      el('strong', { 'data-testid': 'problem-title' }, p.status ? `${p.status} ${p.title}` : p.title),
      p.detail ? el('p', { 'data-testid': 'problem-detail' }, p.detail) : null);
  }

  function showError(p) {
    const box = $('error');
    box.replaceChildren(problemNode(p));
    box.setAttribute('data-status', p.status);
    box.hidden = false;
  }

  // ---- lookup --------------------------------------------------------------------------------

  function kindOf(query) {
    if (CALL_SID.test(query)) return 'call';
    if (ROOM_SID.test(query)) return 'room';
    return 'identity';
  }

  function showKind() {
    const kind = kindOf($('query').value.trim());
    $('query-kind').textContent = kind === 'call' ? 'call SID' : kind === 'room' ? 'room SID' : 'identity';
    $('query-kind').setAttribute('data-kind', kind);
  }

  function clearViews() {
    $('error').hidden = true;
    $('error').replaceChildren();
    for (const id of ['call-trace', 'identity-view', 'room-ledger']) {
      const view = $(id);
      view.hidden = true;
      view.replaceChildren();
      for (const attr of ['data-call-sid', 'data-identity', 'data-room-sid']) view.removeAttribute(attr);
    }
  }

  function openCall(callSid) {
    $('query').value = callSid;
    showKind();
    $('lookup-form').requestSubmit();
  }

  async function lookup(event) {
    event.preventDefault();
    const query = $('query').value.trim();
    if (!query) return;
    const seq = ++lookupSeq;
    const current = () => seq === lookupSeq;
    clearViews();
    $('loading').hidden = false;
    try {
      const kind = kindOf(query);
      if (kind === 'call') {
        const call = await api(`/v1/calls/${encodeURIComponent(query)}`);
        if (current()) renderCall(call);
      } else if (kind === 'room') {
        const room = await api(`/v1/rooms/${encodeURIComponent(query)}`);
        if (current()) renderRoom(room);
      } else {
        const [bindings, calls] = await Promise.allSettled([
          api('/v1/bindings', { identity: query }),
          api('/v1/calls', { identity: query, limit: '50' }),
        ]);
        if (bindings.status === 'rejected') throw bindings.reason;
        if (current()) renderIdentity(query, bindings.value, calls);
      }
    } catch (e) {
      if (current()) showError(asProblem(e));
    } finally {
      if (current()) $('loading').hidden = true;
    }
  }

  // ---- call trace ----------------------------------------------------------------------------

  function targetRow(t) {
    const isSocket = t.channel === 'websocket';
    const where = isSocket ? `${text(t.socket)} @ ${text(t.replica)}` : `${text(t.app)} / ${text(t.binding)}`;
    return el('tr', {
      'data-testid': 'target', 'data-channel': t.channel, 'data-outcome': t.outcome,
      'data-app': t.app, 'data-binding': t.binding, 'data-socket': t.socket, 'data-replica': t.replica,
    },
    cell('channel', t.channel), cell('target', where, 'mono'), cell('attempts', t.attempts, 'num'),
    cell('outcome', outcomeBadge(t.outcome)), cell('status', t.status, 'num'), cell('reason', t.reason),
    cell('apns_id', t.apns_id, 'mono nowrap'), cell('latency_ms', millis(t.latency_ms), 'num'));
  }

  function notificationNode(n, i) {
    const targets = n.targets || [];
    return el('section', {
      class: 'notification', 'data-testid': 'notification', 'data-index': i,
      'data-status': n.status, 'data-duplicate': String(Boolean(n.duplicate)),
    },
    el('h4', {}, `#${i + 1} `, el('span', { class: 'muted' }, when(n.received_at)),
      n.duplicate ? el('span', { class: 'badge dup', 'data-testid': 'duplicate' }, 'duplicate') : null),
    el('p', { class: 'answer' },
      'Answered ', el('span', { 'data-col': 'status' }, statusBadge(n.status)),
      ' in ', el('span', { 'data-col': 'took_ms' }, millis(n.took_ms)),
      ' by ', el('span', { 'data-col': 'replica' }, text(n.replica)),
      ' · delivered ', el('span', { 'data-col': 'delivered' }, text(n.delivered)),
      ', removed ', el('span', { 'data-col': 'removed' }, text(n.removed)),
      ', failed ', el('span', { 'data-col': 'failed' }, text(n.failed)),
      el('span', { class: 'muted' }, ` · ${text(n.message_type)} ${text(n.message_id)}`)),
    table(`targets-${i}`, ['Channel', 'Target', 'Attempts', 'Outcome',
      'Vendor status', 'Reason', 'APNs ID', 'Latency'], targets.map(targetRow), 'No targets.'));
  }

  function renderCall(call) {
    const view = $('call-trace');
    const notifications = call.notifications || [];
    const insights = call.insights || [];
    const insightRows = insights.map((s) => el('tr', { 'data-testid': 'insight' },
      cell('type', String(s.type || '').replace(/^com\.twilio\.voice\.insights\./, '') || DASH),
      timeCell('received_at', s.received_at), cell('call_state', s.call_state),
      cell('duration', seconds(s.duration), 'num'), cell('connect_duration', seconds(s.connect_duration), 'num'),
      cell('disconnected_by', s.disconnected_by), cell('processing_state', s.processing_state)));
    view.replaceChildren(
      el('h2', {}, 'Call ', code(call.call_sid)),
      facts([['Identity', call.identity, 'identity'], ['From', call.from, 'from'], ['To', call.to, 'to'],
        ['Account', call.account_sid, 'account_sid']]),
      el('section', { id: 'notifications', 'data-testid': 'notifications', 'data-count': notifications.length },
        el('h3', {}, `Notifications (${notifications.length})`),
        notifications.length ? notifications.map(notificationNode)
          : el('p', { class: 'muted empty' }, 'No notification recorded for this call.')),
      section('insights', 'Voice Insights', insights,
        table('insights-table', ['Summary', 'Received', 'Call state', 'Duration', 'Connected',
          'Disconnected by', 'Processing'], insightRows, 'No Voice Insights summary yet.')));
    view.setAttribute('data-call-sid', call.call_sid || '');
    view.hidden = false;
  }

  // ---- identity ------------------------------------------------------------------------------

  function shortToken(address) {
    return address ? `${String(address).slice(0, 8)}…` : DASH;
  }

  function callRow(c) {
    const ns = c.notifications || [];
    const sum = (field) => ns.reduce((acc, n) => acc + (Number(n[field]) || 0), 0);
    const last = ns[ns.length - 1];
    return el('tr', { 'data-testid': 'call', 'data-call-sid': c.call_sid },
      cell('call_sid', el('button', { type: 'button', class: 'link mono', onclick: () => openCall(c.call_sid) }, text(c.call_sid))),
      timeCell('received_at', ns.length ? ns[0].received_at : null), cell('from', c.from),
      cell('notifications', ns.length, 'num'), cell('status', last ? statusBadge(last.status) : DASH),
      cell('delivered', sum('delivered'), 'num'), cell('removed', sum('removed'), 'num'), cell('failed', sum('failed'), 'num'));
  }

  function renderIdentity(identity, doc, calls) {
    const view = $('identity-view');
    const bindings = doc.bindings || [];
    const sockets = doc.sockets || [];
    const bindingRows = bindings.map((b) => el('tr', { 'data-testid': 'binding', 'data-channel': b.channel, 'data-id': b.id },
      cell('channel', b.channel), cell('app', b.app), cell('id', b.id, 'mono'), cell('device_id', b.device_id, 'mono'),
      cell('token', shortToken(b.address), 'mono'), timeCell('created_at', b.created_at), timeCell('expires_at', b.expires_at)));
    const socketRows = sockets.map((s) => el('tr', { 'data-testid': 'socket', 'data-channel': s.channel || 'websocket', 'data-id': s.id },
      cell('id', s.id, 'mono'), cell('device_id', s.device_id, 'mono'), timeCell('connected_at', s.connected_at)));
    let callsSection;
    if (calls.status === 'fulfilled') {
      const list = calls.value.calls || [];
      callsSection = section('calls', 'Recent calls', list, table('calls-table', ['Call SID', 'First notification',
        'From', 'Notifications', 'Last answer', 'Delivered', 'Removed', 'Failed'], list.map(callRow), 'No recent calls.'));
    } else {
      callsSection = el('section', { id: 'calls', 'data-testid': 'calls' }, el('h3', {}, 'Recent calls'),
        el('div', { class: 'problem' }, problemNode(asProblem(calls.reason))));
    }
    view.replaceChildren(
      el('h2', {}, 'Identity ', code(identity)),
      section('bindings', 'Push bindings', bindings, table('bindings-table',
        ['Channel', 'App', 'ID', 'Device ID', 'Token', 'Created', 'Expires'], bindingRows, 'No push binding.')),
      section('sockets', 'Open sockets', sockets, table('sockets-table',
        ['ID', 'Device ID', 'Connected'], socketRows, 'No open socket.')),
      callsSection);
    view.setAttribute('data-identity', identity);
    view.hidden = false;
    $('test-identity').value = identity;
  }

  // ---- room ledger ---------------------------------------------------------------------------

  async function downloadCsv(room, button) {
    button.disabled = true;
    try {
      const res = await api(`/v1/rooms/${encodeURIComponent(room.room_sid)}`, {}, { headers: { Accept: 'text/csv' }, raw: true });
      const blob = await res.blob();
      const href = URL.createObjectURL(blob);
      const link = el('a', { href, download: `${String(room.room_sid).replace(/[^A-Za-z0-9_-]/g, '')}.csv`, class: 'offscreen' });
      document.body.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(href), 60000);
    } catch (e) {
      showError(asProblem(e));
    } finally {
      button.disabled = false;
    }
  }

  function renderRoom(room) {
    const view = $('room-ledger');
    const participants = room.participants || [];
    const session = room.session;
    const billing = room.billing || {};
    const span = session
      ? `${spaced(session.started_at)} → ${session.ended_at ? spaced(session.ended_at) : 'ongoing'} (${seconds(session.seconds)})`
      : DASH;
    const rows = participants.map((p) => el('tr', { 'data-testid': 'participant', 'data-identity': p.identity },
      cell('participant_sid', p.participant_sid, 'mono nowrap'), cell('identity', p.identity),
      timeCell('connected_at', p.connected_at), timeCell('disconnected_at', p.disconnected_at),
      cell('closed_by', p.closed_by === null ? 'still connected' : p.closed_by),
      cell('participant_duration', seconds(p.participant_duration), 'num'),
      cell('connected_seconds', seconds(p.connected_seconds), 'num'),
      cell('billable_seconds', seconds(p.billable_seconds), 'num')));
    const button = el('button', { id: 'download-csv', 'data-testid': 'download-csv', type: 'button' }, 'Download CSV');
    button.addEventListener('click', () => downloadCsv(room, button));
    view.replaceChildren(
      el('div', { class: 'heading' }, el('h2', {}, 'Room ', code(room.room_sid), room.room_name ? ` ${room.room_name}` : ''), button),
      facts([
        ['Status', el('span', { class: `badge r-${room.status === 'ended' ? 'ended' : 'live'}` }, text(room.status)), 'status'],
        ['Created', when(room.created_at), 'created_at'], ['Ended', when(room.ended_at), 'ended_at'],
        ['Room duration (Twilio)', seconds(room.room_duration), 'room_duration'],
        ['Session', span, 'session'], ['Events', room.events, 'events'],
      ]),
      section('participants', 'Participants', participants, table('participants-table', ['Participant SID', 'Identity',
        'Connected', 'Disconnected', 'Closed by', 'Twilio duration', 'Connected', 'Billable'], rows, 'No participant.')),
      el('section', { id: 'billing', 'data-testid': 'billing' }, el('h3', {}, 'Billing'), facts([
        ['Rule', billing.rule, 'rule'], ['Billable seconds', billing.billable_seconds, 'billable_seconds'],
        ['Billable minutes', billing.billable_minutes, 'billable_minutes'],
      ])));
    view.setAttribute('data-room-sid', room.room_sid || '');
    view.hidden = false;
  }

  // ---- test notification ---------------------------------------------------------------------

  async function sendTest(event) {
    event.preventDefault();
    const identity = $('test-identity').value.trim();
    const out = $('test-result');
    if (!identity) return;
    $('send-test').disabled = true;
    out.setAttribute('data-state', 'pending');
    out.replaceChildren(el('p', { class: 'muted' }, `Sending to ${identity}…`));
    out.hidden = false;
    try {
      const r = await api('/v1/console/test-notification', {}, {
        method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ identity }),
      });
      const summary = r.status === 404 ? `Nobody is bound to ${identity}: Twilio would get 404.`
        : `Delivered ${text(r.delivered)}, removed ${text(r.removed)}, failed ${text(r.failed)}.`;
      const view = el('button', { type: 'button', class: 'link mono', onclick: () => openCall(r.call_sid) }, text(r.call_sid));
      out.replaceChildren(el('p', { 'data-testid': 'test-summary' }, summary), facts([
        ['Call SID', r.call_sid ? view : DASH, 'call_sid'], ['Answer', statusBadge(r.status), 'status'],
        ['Delivered', r.delivered, 'delivered'], ['Removed', r.removed, 'removed'], ['Failed', r.failed, 'failed'],
      ]));
      out.setAttribute('data-state', 'ok');
    } catch (e) {
      out.replaceChildren(el('div', { class: 'problem' }, problemNode(asProblem(e))));
      out.setAttribute('data-state', 'problem');
    } finally {
      $('send-test').disabled = false;
    }
  }

  // ---- wiring --------------------------------------------------------------------------------

  function init() {
    $('key').value = sessionStorage.getItem(KEY_ITEM) || '';
    $('account').value = sessionStorage.getItem(ACCOUNT_ITEM) || '';
    $('key').addEventListener('input', () => sessionStorage.setItem(KEY_ITEM, $('key').value));
    $('account').addEventListener('input', () => sessionStorage.setItem(ACCOUNT_ITEM, $('account').value.trim()));
    $('forget-key').addEventListener('click', () => {
      sessionStorage.removeItem(KEY_ITEM);
      $('key').value = '';
      $('key').focus();
    });
    $('query').addEventListener('input', showKind);
    $('lookup-form').addEventListener('submit', lookup);
    $('test-form').addEventListener('submit', sendTest);
    showKind();
    document.documentElement.setAttribute('data-ready', 'true');
  }

  init();
})();
