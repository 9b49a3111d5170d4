// WebSocket close codes that mean something to a callrelay client.

export const CloseCode = {
  /** The client closed the socket itself (`stop()`). */
  NORMAL: 1000,
  /** callrelay is shutting down: reconnect, another replica takes the socket. */
  GOING_AWAY: 1001,
  /** No close frame: network lost, process killed, or the upgrade was refused. */
  ABNORMAL: 1006,
  /** The access token the socket was opened with has expired: get a fresh one. */
  TOKEN_EXPIRED: 4001,
} as const;
