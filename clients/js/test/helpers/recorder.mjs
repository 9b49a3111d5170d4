// Records a CallRelayClient's events in order and lets a test wait for the next one it expects,
// so that tests wait on what the client does rather than on fixed sleeps.

const TYPES = ['notification', 'open', 'close', 'reconnecting', 'error'];

export function record(client) {
  const events = [];
  let waiters = [];
  for (const type of TYPES) {
    client.addEventListener(type, (event) => {
      events.push(event);
      waiters = waiters.filter((w) => !w.check());
    });
  }
  return {
    events,
    of(type) {
      return events.filter((e) => e.type === type);
    },
    /** Where the record ends now: pass it as `since` to wait for what comes after. */
    mark() {
      return events.length;
    },
    /**
     * Resolves with the first event of `type` at index ≥ since that satisfies `where`; rejects
     * after `timeoutMs` with what was seen, which is what a failing test needs to say.
     */
    waitFor(type, { since = 0, where = () => true, timeoutMs = 10_000 } = {}) {
      return new Promise((resolve, reject) => {
        const waiter = {
          check() {
            const found = events.slice(since).find((e) => e.type === type && where(e));
            if (!found) return false;
            clearTimeout(timer);
            resolve(found);
            return true;
          },
        };
        const timer = setTimeout(() => {
          waiters = waiters.filter((w) => w !== waiter);
          reject(new Error(`no ${type} event within ${timeoutMs} ms; saw: ${describe(events.slice(since))}`));
        }, timeoutMs);
        if (!waiter.check()) waiters.push(waiter);
      });
    },
  };
}

export function describe(events) {
  return events.map((e) => {
    switch (e.type) {
      case 'close': return `close(${e.code}${e.reason ? ` ${e.reason}` : ''}, open=${e.wasOpen}, reconnect=${e.willReconnect})`;
      case 'reconnecting': return `reconnecting(#${e.attempt} in ${e.delayMs} ms${e.refreshToken ? ', new token' : ''})`;
      case 'notification': return `notification(${e.notification.twi_message_id})`;
      case 'error': return `error(${e.kind}: ${e.message})`;
      default: return e.type;
    }
  }).join(', ') || 'nothing';
}

/** Polls `read` until `done(value)` holds; for state outside the client (metrics, webhooks). */
export async function eventually(read, done, { timeoutMs = 10_000, everyMs = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    last = await read();
    if (done(last)) return last;
    if (Date.now() > deadline) throw new Error(`${what} not met within ${timeoutMs} ms (last: ${JSON.stringify(last)})`);
    await new Promise((ok) => setTimeout(ok, everyMs));
  }
}
