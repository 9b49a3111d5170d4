// The little of a WebSocket the client uses, typed structurally so that the browsers' and Node's
// global WebSocket and other runtimes' implementations (the `ws` package, React Native's) all fit.

/** readyState values, identical in every implementation of the WHATWG WebSocket. */
export const ReadyState = { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 } as const;

export interface WebSocketLike {
  readonly readyState: number;
  // Event parameters are `any`: each runtime has its own event classes, and the client reads
  // only `data`, `code` and `reason`, which all of them have.
  onopen: ((event: any) => void) | null;
  onmessage: ((event: any) => void) | null;
  onerror: ((event: any) => void) | null;
  onclose: ((event: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string) => WebSocketLike;

/** The injected constructor, else the runtime's global one. */
export function resolveWebSocket(injected?: WebSocketConstructor): WebSocketConstructor {
  if (injected) return injected;
  const global = (globalThis as { WebSocket?: WebSocketConstructor }).WebSocket;
  if (typeof global === 'function') return global;
  throw new TypeError(
    'no WebSocket implementation: run Node.js 22+ (or 20 with --experimental-websocket), or pass the `WebSocket` option',
  );
}
