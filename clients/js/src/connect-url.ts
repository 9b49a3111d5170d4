// The URL of callrelay's WebSocket endpoint with the parameters a device passes: browsers cannot
// set an Authorization header on a WebSocket, so the access token travels in the query.

export interface ConnectParameters {
  accessToken: string;
  deviceId?: string | undefined;
  ack: boolean;
  /** Unix ms: ask callrelay to first send what it received for this identity since then. */
  replaySince?: number | undefined;
}

/**
 * Normalises what the app configured: `http(s)://` becomes `ws(s)://`, and a URL without a path
 * (`https://relay.example.com`) gets callrelay's endpoint, `/v1/ws`.
 */
export function endpointUrl(url: string | URL): URL {
  const endpoint = new URL(url);
  if (endpoint.protocol === 'http:') endpoint.protocol = 'ws:';
  else if (endpoint.protocol === 'https:') endpoint.protocol = 'wss:';
  if (endpoint.protocol !== 'ws:' && endpoint.protocol !== 'wss:') {
    throw new TypeError(`callrelay URL must be ws:, wss:, http: or https:, not ${endpoint.protocol}`);
  }
  if (endpoint.pathname === '/' || endpoint.pathname === '') endpoint.pathname = '/v1/ws';
  endpoint.hash = '';
  return endpoint;
}

export function connectUrl(endpoint: URL, parameters: ConnectParameters): string {
  const url = new URL(endpoint);
  url.searchParams.set('access_token', parameters.accessToken);
  if (parameters.deviceId !== undefined) url.searchParams.set('device_id', parameters.deviceId);
  if (parameters.ack) url.searchParams.set('ack', '1');
  else url.searchParams.delete('ack');
  if (parameters.replaySince !== undefined) url.searchParams.set('replay_since', String(Math.floor(parameters.replaySince)));
  else url.searchParams.delete('replay_since');
  return url.toString();
}
