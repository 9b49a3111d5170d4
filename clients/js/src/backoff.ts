// Reconnect delays: exponential backoff with full jitter (a uniformly random wait between zero
// and the exponential ceiling), so that the devices a replica dropped at once do not all come
// back at the same instant and knock the next replica over.

export interface BackoffOptions {
  /** Ceiling of the first wait, in ms (default 500). */
  initialMs?: number;
  /** Largest ceiling, in ms (default 30 000). */
  maxMs?: number;
}

export const DEFAULT_BACKOFF = { initialMs: 500, maxMs: 30_000 } as const;

export class Backoff {
  readonly initialMs: number;
  readonly maxMs: number;
  readonly #random: () => number;

  /** `random` is injectable so tests can pin the jitter; it must return values in [0, 1). */
  constructor(options: BackoffOptions = {}, random: () => number = Math.random) {
    this.initialMs = positive(options.initialMs ?? DEFAULT_BACKOFF.initialMs, 'backoff.initialMs');
    this.maxMs = Math.max(this.initialMs, positive(options.maxMs ?? DEFAULT_BACKOFF.maxMs, 'backoff.maxMs'));
    this.#random = random;
  }

  /** The ceiling for the `attempt`th consecutive retry (1-based): initialMs · 2^(attempt−1), capped. */
  ceiling(attempt: number): number {
    // 2^31 overflows nothing in a double, but capping the exponent keeps it finite for any attempt.
    const exponent = Math.min(Math.max(attempt, 1) - 1, 31);
    return Math.min(this.maxMs, this.initialMs * 2 ** exponent);
  }

  /** A wait drawn uniformly from [0, ceiling(attempt)], in whole ms. */
  delay(attempt: number): number {
    return Math.floor(this.#random() * (this.ceiling(attempt) + 1));
  }
}

function positive(value: number, name: string): number {
  if (!Number.isFinite(value) || value <= 0) throw new RangeError(`${name} must be a positive number of milliseconds`);
  return value;
}
