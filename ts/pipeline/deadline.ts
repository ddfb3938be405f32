/**
 * Bounding a request's awaited steps by its stop signal (deadline, energy budget, caller): a step that
 * does not listen to the signal itself (a hanging file read, a checksum, a load, a scoring call) is
 * raced against it, so the request ends on time whatever the step does; what the step yields later is
 * handed to a clean-up callback instead of leaking.
 */
import { PhoenixError } from '../binding/errors.js';
import { listenAbort, unlistenAbort } from '../util/abort-listeners.js';

/** Node's longest timer: a longer delay fires after 1 ms instead (with a warning). */
const MAX_TIMER_MS = 2 ** 31 - 1;

/**
 * `setTimeout` for any delay (a `maxProcessingTime` of 3e9 ms is ~35 days): past Node's 2^31−1 ms
 * limit the timer is re-armed in steps, where a plain one fired at once and aborted the request.
 * `clear()` stops it.
 */
export function longTimeout(fire: () => void, ms: number): { clear(): void } {
  let timer: ReturnType<typeof setTimeout>;
  const arm = (left: number): void => {
    timer = left > MAX_TIMER_MS ? setTimeout(() => arm(left - MAX_TIMER_MS), MAX_TIMER_MS) : setTimeout(fire, left);
  };
  arm(ms);
  return { clear: () => clearTimeout(timer) };
}

/** The part of a request that was running when it stopped. */
export type RequestPhase = 'queue' | 'selection' | 'loading' | 'generation' | 'scoring';

/** What each phase covers, for error messages. */
const PHASE_WORK: Record<RequestPhase, string> = {
  queue: 'waiting in the queue',
  selection: 'selecting a model (listing and checksumming model folders)',
  loading: 'loading the model',
  generation: 'generating',
  scoring: 'scoring',
};

/** The `E_ABORTED` error of a request stopped during `phase` (`cause` says by what, `work` what was running). */
export function stoppedError(phase: RequestPhase, cause: string, work: string = PHASE_WORK[phase]): PhoenixError {
  return new PhoenixError('E_ABORTED', `${cause} during ${phase} (${work})`, { phase });
}

/**
 * Resolves like `step`, or rejects with `stop()` as soon as `signal` aborts, whichever comes first.
 * When the signal wins, `step` keeps running; its eventual value goes to `onLate` (release a lease,
 * dispose a model) and its eventual error is swallowed.
 */
export function raceStop<T>(step: Promise<T>, signal: AbortSignal, stop: () => Error, onLate?: (value: T) => void): Promise<T> {
  if (signal.aborted) {
    step.then(onLate, () => undefined);
    return Promise.reject(stop());
  }
  return new Promise<T>((resolve, reject) => {
    let settled = false;
    const onAbort = (): void => {
      if (settled) return;
      settled = true;
      reject(stop());
    };
    listenAbort(signal, onAbort);
    step.then(
      (value) => {
        unlistenAbort(signal, onAbort);
        if (settled) onLate?.(value);
        else {
          settled = true;
          resolve(value);
        }
      },
      (error: unknown) => {
        unlistenAbort(signal, onAbort);
        if (!settled) {
          settled = true;
          reject(error);
        }
      },
    );
  });
}
