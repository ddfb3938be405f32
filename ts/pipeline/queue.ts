/**
 * A FIFO work queue with bounded concurrency and a bounded number of waiting tasks.
 */
import { PhoenixError } from '../binding/errors.js';
import { listenAbort, unlistenAbort } from '../util/abort-listeners.js';

interface Waiter {
  start: () => void;
}

/** Current occupancy of a {@link BoundedQueue}. */
export interface QueueStatus {
  running: number;
  waiting: number;
  maxConcurrency: number;
  maxQueueSize: number;
}

/** FIFO admission of async tasks: at most `maxConcurrency` run, at most `maxQueueSize` wait. */
export class BoundedQueue {
  readonly maxConcurrency: number;
  readonly maxQueueSize: number;
  #running = 0;
  readonly #waiting: Waiter[] = [];

  constructor(maxConcurrency: number, maxQueueSize: number) {
    if (!Number.isInteger(maxConcurrency) || maxConcurrency < 1) {
      throw new PhoenixError('E_INVALID_OPTION', `option \`maxConcurrency\` must be an integer ≥ 1, got ${maxConcurrency}`, { option: 'maxConcurrency' });
    }
    if (!Number.isInteger(maxQueueSize) || maxQueueSize < 0) {
      throw new PhoenixError('E_INVALID_OPTION', `option \`maxQueueSize\` must be an integer ≥ 0, got ${maxQueueSize}`, { option: 'maxQueueSize' });
    }
    this.maxConcurrency = maxConcurrency;
    this.maxQueueSize = maxQueueSize;
  }

  status(): QueueStatus {
    return { running: this.#running, waiting: this.#waiting.length, maxConcurrency: this.maxConcurrency, maxQueueSize: this.maxQueueSize };
  }

  /**
   * Runs `task` when a slot is free. Rejects with `E_ABORTED` when the queue is full or `signal`
   * fires while waiting. The slot is freed when `task` settles, or later when it passed work still
   * running to `holdSlot` (a computation its result no longer waits for still occupies the machine).
   */
  async run<T>(task: (holdSlot: (work: Promise<unknown>) => void) => Promise<T>, signal?: AbortSignal): Promise<T> {
    await this.#acquire(signal);
    const held: Promise<unknown>[] = [];
    try {
      return await task((work) => held.push(work));
    } finally {
      if (held.length === 0) this.#release();
      else void Promise.allSettled(held).then(() => this.#release());
    }
  }

  #acquire(signal?: AbortSignal): Promise<void> {
    if (signal?.aborted) return Promise.reject(abortedWhileQueued(signal));
    if (this.#running < this.maxConcurrency) {
      this.#running++;
      return Promise.resolve();
    }
    if (this.#waiting.length >= this.maxQueueSize) {
      return Promise.reject(
        new PhoenixError('E_ABORTED', `request rejected: the queue is full (${this.#running} running, ${this.#waiting.length} waiting, maxQueueSize ${this.maxQueueSize})`, {
          option: 'maxQueueSize',
        }),
      );
    }
    return new Promise<void>((resolve, reject) => {
      const onAbort = (): void => {
        const index = this.#waiting.indexOf(waiter);
        if (index >= 0) this.#waiting.splice(index, 1);
        reject(abortedWhileQueued(signal as AbortSignal));
      };
      const waiter: Waiter = {
        start: () => {
          if (signal) unlistenAbort(signal, onAbort);
          resolve();
        },
      };
      this.#waiting.push(waiter);
      if (signal) listenAbort(signal, onAbort);
    });
  }

  #release(): void {
    const next = this.#waiting.shift();
    if (next) next.start(); // the slot passes straight to the next waiter
    else this.#running--;
  }
}

function abortedWhileQueued(signal: AbortSignal): PhoenixError {
  const reason = signal.reason instanceof Error ? signal.reason.message : String(signal.reason ?? 'aborted');
  return new PhoenixError('E_ABORTED', `request aborted while queued: ${reason}`);
}
