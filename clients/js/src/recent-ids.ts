// The twi_message_ids a client has already handed to the app. callrelay may send the same
// notification twice around a reconnect (replayed, and live from another replica), and Twilio
// may retry a webhook: the app must ring once. Bounded, because a socket can live for days.

export class RecentIds {
  readonly capacity: number;
  // A Set iterates in insertion order, so its first element is the oldest: a FIFO with O(1)
  // membership, which is all this needs.
  readonly #ids = new Set<string>();

  constructor(capacity = 256) {
    if (!Number.isInteger(capacity) || capacity < 1) throw new RangeError('the number of remembered ids must be a positive integer');
    this.capacity = capacity;
  }

  /** Records `id`; returns false when it was already there (a repeat). */
  add(id: string): boolean {
    if (this.#ids.has(id)) return false;
    this.#ids.add(id);
    if (this.#ids.size > this.capacity) {
      const oldest = this.#ids.values().next().value;
      if (oldest !== undefined) this.#ids.delete(oldest);
    }
    return true;
  }

  has(id: string): boolean {
    return this.#ids.has(id);
  }

  get size(): number {
    return this.#ids.size;
  }
}
