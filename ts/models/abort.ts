/**
 * Cancellation for the manager's long steps: `E_ABORTED` when a caller's AbortSignal fires.
 */
import { PhoenixError } from '../binding/errors.js';
import { listenAbort, unlistenAbort } from '../util/abort-listeners.js';

/** `E_ABORTED` when `signal` is aborted. */
export function throwIfAborted(signal: AbortSignal | undefined, what: string): void {
  if (signal?.aborted) throw new PhoenixError('E_ABORTED', `${what} was aborted`);
}

/** Rejects with `E_ABORTED` when `signal` aborts first; `work` itself keeps running. */
export function abortable<T>(work: Promise<T>, signal: AbortSignal | undefined, what: string): Promise<T> {
  if (!signal) return work;
  throwIfAborted(signal, what);
  return new Promise<T>((resolve, reject) => {
    const onAbort = (): void => reject(new PhoenixError('E_ABORTED', `${what} was aborted`));
    listenAbort(signal, onAbort);
    work.then(resolve, reject).finally(() => unlistenAbort(signal, onAbort));
  });
}

