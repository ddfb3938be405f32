/**
 * Cancellation for the manager's long steps: `E_ABORTED` when a caller's AbortSignal fires.
 */
import { PhoenixError } from '../binding/errors.js';

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
    signal.addEventListener('abort', onAbort, { once: true });
    work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}

