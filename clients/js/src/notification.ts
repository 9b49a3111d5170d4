// A Twilio call notification as callrelay relays it: the JSON document Twilio POSTed to the
// Client Notification webhook, unmodified.

/** Message types Twilio is known to send; others are relayed too and must pass through. */
export type KnownMessageType = 'twilio.voice.call' | 'twilio.voice.cancel';

/**
 * The members Twilio sends. Every member is optional to the type system except the few
 * callrelay itself requires (`twi_account_sid`, `twi_to`), because Twilio may add, drop or
 * rename members and the kit forwards whatever arrives; the raw text is always on the event too.
 */
export interface CallNotification {
  /** The account placing the call (`AC` + 32 hex). */
  twi_account_sid: string;
  /** The callee, `client:<identity>`. */
  twi_to: string;
  /** The caller: `client:alice` or a phone number. */
  twi_from?: string;
  /** The call SID (`CA…`). */
  twi_call_sid?: string;
  /** Unique per webhook request: what acknowledgements and repeat detection key on. */
  twi_message_id?: string;
  /**
   * `twilio.voice.call` for an incoming call; any other string is passed through as is
   * (`(string & {})` keeps editor completion for the known ones without rejecting new ones).
   */
  twi_message_type?: KnownMessageType | (string & {});
  /** Encrypted token Twilio's Voice SDKs use to reach the caller. */
  twi_bridge_token?: string;
  /** Custom parameters, URL-encoded (see {@link customParameters}). */
  twi_params?: string;
  /** Whatever else Twilio sends (`twi_stir_status`, `twi_answer_timeout`, …). */
  [member: string]: unknown;
}

/**
 * Parses one frame's text. Returns undefined for anything that is not a JSON object with a
 * string `twi_account_sid` and `twi_to`: callrelay refuses such webhooks, so such a frame is
 * not a call notification.
 */
export function parseNotification(text: string): CallNotification | undefined {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return undefined;
  const record = value as Record<string, unknown>;
  if (typeof record['twi_account_sid'] !== 'string' || typeof record['twi_to'] !== 'string') return undefined;
  return record as CallNotification;
}

/** The custom parameters of `<Client>` TwiML or the Calls API, decoded from `twi_params`. */
export function customParameters(notification: CallNotification): URLSearchParams {
  return new URLSearchParams(typeof notification.twi_params === 'string' ? notification.twi_params : '');
}

/** `client:bob` → `bob`; any other address (a phone number) is returned unchanged. */
export function clientIdentity(address: string): string {
  return address.startsWith('client:') ? address.slice('client:'.length) : address;
}
