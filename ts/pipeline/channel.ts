/**
 * A single-consumer async queue with backpressure: a producer pushes values and closes it; one
 * `for await` reads them. Once `capacity` values wait unread, `push` resolves only when the reader takes
 * one (or the producer's signal fires), so a slow reader pauses the producer instead of growing memory.
 */
import { PhoenixError } from '../binding/errors.js';
import { listenAbort, unlistenAbort } from '../util/abort-listeners.js';

export class AsyncChannel<T> implements AsyncIterable<T> {
  readonly #buffer: T[] = [];
  readonly #capacity: number;
  #closed = false;
  /** Nobody will read: values are dropped and pushes never wait. */
  #draining = false;
  #wake: (() => void) | undefined;
  #space: (() => void) | undefined;
  #iterated = false;

  /** @param capacity - values that may wait unread before `push` waits (default: no limit). */
  constructor(capacity = Number.POSITIVE_INFINITY) {
    this.#capacity = capacity;
  }

  /** Whether a reader has started iterating. */
  get iterated(): boolean {
    return this.#iterated;
  }

  /**
   * Adds a value. Resolves at once while fewer than `capacity` values wait, else when the reader takes
   * one, the channel is drained, or `signal` fires (then the value is kept and the producer goes on).
   */
  push(value: T, signal?: AbortSignal): Promise<void> {
    if (this.#closed || this.#draining) return Promise.resolve();
    this.#buffer.push(value);
    this.#wake?.();
    if (this.#buffer.length < this.#capacity || signal?.aborted) return Promise.resolve();
    return new Promise<void>((resolve) => {
      const done = (): void => {
        if (signal) unlistenAbort(signal, done);
        this.#space = undefined;
        resolve();
      };
      this.#space = done;
      if (signal) listenAbort(signal, done);
    });
  }

  close(): void {
    this.#closed = true;
    this.#wake?.();
  }

  /** Nobody will read (the reader left, or only a final result is wanted): drop values, stop waiting. */
  drain(): void {
    this.#draining = true;
    this.#buffer.length = 0;
    this.#space?.();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<T> {
    if (this.#iterated) throw new PhoenixError('E_INVALID_OPTION', 'a stream can be iterated only once (its tokens went to the first loop)', { option: 'stream' });
    this.#iterated = true;
    try {
      for (;;) {
        while (this.#buffer.length > 0) {
          const value = this.#buffer.shift() as T;
          if (this.#buffer.length < this.#capacity) this.#space?.();
          yield value;
        }
        if (this.#closed || this.#draining) return;
        await new Promise<void>((resolve) => {
          this.#wake = resolve;
        });
        this.#wake = undefined;
      }
    } finally {
      // A reader that stops early must not leave the producer waiting for room.
      if (!this.#closed) this.drain();
    }
  }
}
