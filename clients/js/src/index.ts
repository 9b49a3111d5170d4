// @callrelay/client: receive Twilio call notifications from callrelay over a WebSocket.

export { CallRelayClient, type CallRelayClientOptions, type ConnectionState } from './client.js';
export {
  type CallRelayClientEventMap,
  NotificationEvent,
  OpenEvent,
  ReconnectingEvent,
  RelayCloseEvent,
  RelayErrorEvent,
  type RelayErrorKind,
} from './events.js';
export {
  type CallNotification,
  type KnownMessageType,
  clientIdentity,
  customParameters,
  parseNotification,
} from './notification.js';
export { Backoff, type BackoffOptions, DEFAULT_BACKOFF } from './backoff.js';
export { CloseCode } from './close-codes.js';
export { RecentIds } from './recent-ids.js';
export { accessTokenExpired, accessTokenExpiry } from './access-token.js';
export { connectUrl, endpointUrl, type ConnectParameters } from './connect-url.js';
export { ReadyState, type WebSocketConstructor, type WebSocketLike } from './websocket.js';
