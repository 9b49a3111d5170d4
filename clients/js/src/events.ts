// The events a CallRelayClient dispatches. Plain `Event` subclasses, so they work with the
// EventTarget of browsers and of Node alike and need no polyfill.

import type { CallNotification } from './notification.js';

/** `notification`: a call notification the app has not seen before. */
export class NotificationEvent extends Event {
  /** The parsed JSON. */
  readonly notification: CallNotification;
  /** The frame's text: exactly the bytes Twilio POSTed to callrelay (hand it to Twilio's SDKs as is). */
  readonly raw: string;

  constructor(notification: CallNotification, raw: string) {
    super('notification');
    this.notification = notification;
    this.raw = raw;
  }
}

/** `open`: the socket is up; calls ring here from now on. */
export class OpenEvent extends Event {
  /** True when this connection replaced one that was lost (the client asked for a replay if enabled). */
  readonly reconnected: boolean;

  constructor(reconnected: boolean) {
    super('open');
    this.reconnected = reconnected;
  }
}

/** `close`: a socket closed, or a connection attempt failed. */
export class RelayCloseEvent extends Event {
  readonly code: number;
  readonly reason: string;
  /** Whether the socket had opened: false means the connection or upgrade failed. */
  readonly wasOpen: boolean;
  /** False only after `stop()`: the client otherwise always tries again. */
  readonly willReconnect: boolean;

  constructor(init: { code: number; reason: string; wasOpen: boolean; willReconnect: boolean }) {
    super('close');
    this.code = init.code;
    this.reason = init.reason;
    this.wasOpen = init.wasOpen;
    this.willReconnect = init.willReconnect;
  }
}

/** `reconnecting`: the next attempt starts after `delayMs`. */
export class ReconnectingEvent extends Event {
  /** 1 for the first retry after a healthy connection, then 2, 3… while attempts keep failing. */
  readonly attempt: number;
  readonly delayMs: number;
  /** Whether `token()` will be asked for a fresh token first. */
  readonly refreshToken: boolean;

  constructor(init: { attempt: number; delayMs: number; refreshToken: boolean }) {
    super('reconnecting');
    this.attempt = init.attempt;
    this.delayMs = init.delayMs;
    this.refreshToken = init.refreshToken;
  }
}

/** Where an `error` came from. */
export type RelayErrorKind =
  /** `token()` threw or returned something that is not a non-empty string. */
  | 'token'
  /** The WebSocket reported an error (browsers say no more than that). */
  | 'socket'
  /** A frame that is not a call notification (not JSON, not an object, binary). */
  | 'frame';

/** `error`: something went wrong that the client works around by itself; for logs. */
export class RelayErrorEvent extends Event {
  readonly kind: RelayErrorKind;
  readonly error: unknown;
  /** For `frame` errors: the frame's text, when it had any. */
  readonly raw: string | undefined;

  constructor(kind: RelayErrorKind, error: unknown, raw?: string) {
    super('error');
    this.kind = kind;
    this.error = error;
    this.raw = raw;
  }

  get message(): string {
    return this.error instanceof Error ? this.error.message : String(this.error);
  }
}

export interface CallRelayClientEventMap {
  notification: NotificationEvent;
  open: OpenEvent;
  close: RelayCloseEvent;
  reconnecting: ReconnectingEvent;
  error: RelayErrorEvent;
}
