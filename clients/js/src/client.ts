// CallRelayClient: holds one WebSocket to callrelay open for as long as the app wants calls,
// and turns what arrives into `notification` events, each call once.

import { accessTokenExpired } from './access-token.js';
import { Backoff, type BackoffOptions } from './backoff.js';
import { CloseCode } from './close-codes.js';
import { connectUrl, endpointUrl } from './connect-url.js';
import {
  type CallRelayClientEventMap,
  NotificationEvent,
  OpenEvent,
  ReconnectingEvent,
  RelayCloseEvent,
  RelayErrorEvent,
} from './events.js';
import { parseNotification } from './notification.js';
import { RecentIds } from './recent-ids.js';
import { ReadyState, resolveWebSocket, type WebSocketConstructor, type WebSocketLike } from './websocket.js';

export interface CallRelayClientOptions {
  /**
   * callrelay's WebSocket endpoint, `wss://relay.example.com/v1/ws`. `https://relay.example.com`
   * works too: http(s) becomes ws(s) and a URL without a path gets `/v1/ws`.
   */
  url: string | URL;
  /**
   * Returns a Twilio Access Token for the identity that should ring (the one the app's Voice SDK
   * uses). Called before the first connection, and again whenever callrelay says the token
   * expired (close 4001), a connection fails before it opens (a refused upgrade looks like that
   * to browsers), or the kept token is past its `exp`.
   */
  token: () => string | Promise<string>;
  /** Names this device (1 to 256 bytes, no control characters); push bindings with the same id are the same device. */
  deviceId?: string;
  /** Acknowledge each notification once its event is dispatched (default true). */
  ack?: boolean;
  /** On reconnects, ask callrelay for what arrived while the socket was away (default true). */
  replay?: boolean;
  /**
   * How far before the moment the socket was lost the replay starts, in ms (default 2000):
   * replay_since is read against callrelay's clock, and a device's clock may run ahead.
   * What was already received is dropped as a repeat, so asking for a little more costs nothing.
   */
  replayMarginMs?: number;
  /** Reconnect delays: full-jitter exponential backoff (default 500 ms doubling up to 30 s). */
  backoff?: BackoffOptions;
  /** How many recent twi_message_ids are remembered to drop repeats (default 256). */
  rememberIds?: number;
  /** A WebSocket constructor, for runtimes without a global one (default: globalThis.WebSocket). */
  WebSocket?: WebSocketConstructor;
}

/**
 * - `idle`: not started.
 * - `connecting`: getting a token or opening the socket.
 * - `open`: connected; notifications arrive.
 * - `waiting`: disconnected, waiting out the backoff before the next attempt.
 * - `stopped`: `stop()` was called.
 */
export type ConnectionState = 'idle' | 'connecting' | 'open' | 'waiting' | 'stopped';

type Listener<E extends Event> = ((this: CallRelayClient, event: E) => unknown) | { handleEvent(event: E): unknown };

// Declaration merging types addEventListener by event name, as the DOM does for its own targets.
export interface CallRelayClient {
  addEventListener<K extends keyof CallRelayClientEventMap>(
    type: K,
    listener: Listener<CallRelayClientEventMap[K]> | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
  removeEventListener<K extends keyof CallRelayClientEventMap>(
    type: K,
    listener: Listener<CallRelayClientEventMap[K]> | null,
    options?: boolean | EventListenerOptions,
  ): void;
  removeEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | EventListenerOptions): void;
}

export class CallRelayClient extends EventTarget {
  readonly #endpoint: URL;
  readonly #token: () => string | Promise<string>;
  readonly #deviceId: string | undefined;
  readonly #ack: boolean;
  readonly #replay: boolean;
  readonly #replayMarginMs: number;
  readonly #backoff: Backoff;
  readonly #recent: RecentIds;
  readonly #WebSocket: WebSocketConstructor;

  #state: ConnectionState = 'idle';
  /** Bumped by start() and stop(): callbacks of an earlier run see a different number and do nothing. */
  #run = 0;
  #socket: WebSocketLike | null = null;
  #timer: ReturnType<typeof setTimeout> | undefined;
  #accessToken: string | undefined;
  /** Consecutive attempts that did not give a healthy connection. */
  #attempt = 0;
  /** Unix ms of the last moment this run knew itself connected; undefined before the first open. */
  #lastConnectedAt: number | undefined;

  constructor(options: CallRelayClientOptions) {
    super();
    if (typeof options.token !== 'function') throw new TypeError('options.token must be a function returning an access token');
    this.#endpoint = endpointUrl(options.url);
    this.#token = options.token;
    if (options.deviceId !== undefined) checkDeviceId(options.deviceId);
    this.#deviceId = options.deviceId;
    this.#ack = options.ack ?? true;
    this.#replay = options.replay ?? true;
    this.#replayMarginMs = Math.max(0, options.replayMarginMs ?? 2000);
    this.#backoff = new Backoff(options.backoff);
    this.#recent = new RecentIds(options.rememberIds);
    // Resolved now, so that a runtime without WebSocket fails at construction, not at some retry.
    this.#WebSocket = resolveWebSocket(options.WebSocket);
  }

  get state(): ConnectionState {
    return this.#state;
  }

  /** Connects, and keeps reconnecting until stop(). Calling it while running does nothing. */
  start(): void {
    if (this.#state !== 'idle' && this.#state !== 'stopped') return;
    this.#run += 1;
    this.#attempt = 0;
    // A new run is a new session for the app: it does not ask for what arrived while it was
    // stopped, and it gets its token anew (the user may have signed in again meanwhile).
    this.#lastConnectedAt = undefined;
    this.#accessToken = undefined;
    void this.#connect(this.#run, false);
  }

  /** Closes the socket (code 1000) and never reconnects until start() is called again. */
  stop(): void {
    if (this.#state === 'idle' || this.#state === 'stopped') return;
    this.#run += 1;
    this.#state = 'stopped';
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const socket = this.#socket;
    if (socket && (socket.readyState === ReadyState.CONNECTING || socket.readyState === ReadyState.OPEN)) {
      socket.close(CloseCode.NORMAL, 'client stopped');
    }
  }

  async #connect(run: number, refreshToken: boolean): Promise<void> {
    this.#state = 'connecting';
    let accessToken: string;
    try {
      accessToken = await this.#accessTokenFor(refreshToken);
    } catch (error) {
      if (run !== this.#run) return;
      this.#dispatch(new RelayErrorEvent('token', error));
      // The token source failed, so the next attempt must ask it again.
      this.#scheduleReconnect(run, true);
      return;
    }
    if (run !== this.#run) return; // stopped while the token was on its way

    const replaySince =
      this.#replay && this.#lastConnectedAt !== undefined ? this.#lastConnectedAt - this.#replayMarginMs : undefined;
    const url = connectUrl(this.#endpoint, { accessToken, deviceId: this.#deviceId, ack: this.#ack, replaySince });
    let socket: WebSocketLike;
    try {
      socket = new this.#WebSocket(url);
    } catch (error) {
      this.#dispatch(new RelayErrorEvent('socket', error));
      this.#scheduleReconnect(run, false);
      return;
    }
    this.#socket = socket;
    this.#watch(socket, run);
  }

  async #accessTokenFor(refresh: boolean): Promise<string> {
    const kept = this.#accessToken;
    if (!refresh && kept !== undefined && !accessTokenExpired(kept)) return kept;
    this.#accessToken = undefined;
    const fresh = await this.#token();
    if (typeof fresh !== 'string' || fresh === '') throw new TypeError('token() must return a non-empty string');
    this.#accessToken = fresh;
    return fresh;
  }

  #watch(socket: WebSocketLike, run: number): void {
    let openedAt: number | undefined;
    /** Set once the socket's end has been handled, whichever event reported it. */
    let ended = false;
    const current = () => run === this.#run && this.#socket === socket;

    socket.onopen = () => {
      if (!current()) return;
      openedAt = Date.now();
      const reconnected = this.#lastConnectedAt !== undefined;
      this.#lastConnectedAt = openedAt;
      this.#state = 'open';
      this.#dispatch(new OpenEvent(reconnected));
    };

    socket.onmessage = (event: { data: unknown }) => {
      if (!current()) return; // after stop() the app wants no more calls
      this.#lastConnectedAt = Date.now();
      this.#receive(socket, event.data);
    };

    socket.onerror = (event: { error?: unknown; message?: unknown }) => {
      if (ended) return;
      if (current()) {
        // Browsers give no detail (deliberately); Node's and the ws package's events carry one.
        const detail = event?.error ?? (typeof event?.message === 'string' ? new Error(event.message) : new Error('WebSocket error'));
        this.#dispatch(new RelayErrorEvent('socket', detail));
      }
      // A connection that fails before it opens is over: browsers follow with a close event
      // (1006), but Node 20's WebSocket fires none and stays CONNECTING, which would stall
      // the client for good. So the failure ends the attempt here, and any later close is ignored.
      if (openedAt === undefined) finish(CloseCode.ABNORMAL, '');
    };

    socket.onclose = (event: { code?: number; reason?: string }) => {
      finish(typeof event?.code === 'number' ? event.code : CloseCode.ABNORMAL, typeof event?.reason === 'string' ? event.reason : '');
    };

    const finish = (code: number, reason: string): void => {
      if (ended) return;
      ended = true;
      const wasOpen = openedAt !== undefined;
      if (this.#socket === socket) this.#socket = null;
      if (run !== this.#run) {
        // The socket of a run that stop() ended: report its end, and that nothing follows.
        if (this.#state === 'stopped') this.#dispatch(new RelayCloseEvent({ code, reason, wasOpen, willReconnect: false }));
        return;
      }
      const now = Date.now();
      if (wasOpen) {
        this.#lastConnectedAt = now;
        // A connection that lasted as long as the longest wait was healthy: start the backoff over.
        if (now - (openedAt ?? now) >= this.#backoff.maxMs) this.#attempt = 0;
      }
      this.#dispatch(new RelayCloseEvent({ code, reason, wasOpen, willReconnect: true }));
      if (run !== this.#run) return; // a close listener called stop()
      // 4001: the token expired. Closed before it opened: the upgrade may have been refused
      // (401 for a revoked or expired token); browsers cannot tell that apart from a network
      // failure, so a fresh token is fetched either way: it costs one request per attempt.
      this.#scheduleReconnect(run, code === CloseCode.TOKEN_EXPIRED || !wasOpen);
    };
  }

  #receive(socket: WebSocketLike, data: unknown): void {
    if (typeof data !== 'string') {
      this.#dispatch(new RelayErrorEvent('frame', new TypeError('binary frame: callrelay sends call notifications as text')));
      return;
    }
    const notification = parseNotification(data);
    if (!notification) {
      this.#dispatch(new RelayErrorEvent('frame', new SyntaxError('frame is not a call notification'), data));
      return;
    }
    const id = typeof notification.twi_message_id === 'string' ? notification.twi_message_id : undefined;
    // A repeat (replayed and live, or Twilio's retry) is not shown twice, but it is still
    // acknowledged: callrelay sent it on this socket and the app does have it.
    if (id === undefined || this.#recent.add(id)) {
      this.#dispatch(new NotificationEvent(notification, data));
    }
    // After the dispatch: the acknowledgement means the app has the notification. A listener
    // may have called stop(), which closed the socket; then nothing is sent.
    if (this.#ack && id !== undefined && socket.readyState === ReadyState.OPEN) {
      socket.send(JSON.stringify({ type: 'ack', twi_message_id: id }));
    }
  }

  #scheduleReconnect(run: number, refreshToken: boolean): void {
    this.#attempt += 1;
    const attempt = this.#attempt;
    const delayMs = this.#backoff.delay(attempt);
    this.#state = 'waiting';
    this.#dispatch(new ReconnectingEvent({ attempt, delayMs, refreshToken }));
    if (run !== this.#run) return; // a reconnecting listener called stop()
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (run === this.#run) void this.#connect(run, refreshToken);
    }, delayMs);
  }

  #dispatch(event: Event): void {
    // A listener that throws is the app's bug, reported by the runtime (browsers log it; Node
    // raises it as uncaught); dispatchEvent itself returns normally, so the client goes on.
    this.dispatchEvent(event);
  }
}

function checkDeviceId(deviceId: string): void {
  const bytes = new TextEncoder().encode(deviceId).length;
  if (bytes < 1 || bytes > 256 || /[\u0000-\u001f\u007f-\u009f]/.test(deviceId)) {
    throw new RangeError('deviceId must be 1 to 256 bytes of UTF-8 without control characters');
  }
}
