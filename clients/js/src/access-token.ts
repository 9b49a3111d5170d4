// Reading (never verifying) a Twilio Access Token: only callrelay holds the API key secret. The
// client just wants to know whether the token it kept is already past `exp`, so that it fetches
// a fresh one instead of opening a socket callrelay would refuse or close at once.

/** The token's `exp` in unix seconds, or undefined when it cannot be read. */
export function accessTokenExpiry(token: string): number | undefined {
  const payload = token.split('.')[1];
  if (!payload) return undefined;
  try {
    const base64 = payload.replace(/-/g, '+').replace(/_/g, '/');
    const claims: unknown = JSON.parse(atob(base64.padEnd(base64.length + ((4 - (base64.length % 4)) % 4), '=')));
    const exp = (claims as { exp?: unknown } | null)?.exp;
    return typeof exp === 'number' && Number.isFinite(exp) ? exp : undefined;
  } catch {
    return undefined;
  }
}

/** True when the token names an `exp` that has passed on this device's clock. */
export function accessTokenExpired(token: string, nowMs = Date.now()): boolean {
  const exp = accessTokenExpiry(token);
  return exp !== undefined && exp * 1000 <= nowMs;
}
