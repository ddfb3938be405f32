/**
 * Drives one binding generation step by step and exposes it as a {@link GenerationStream}.
 * Cancellation is checked between steps, so an abort ends the generation within one token.
 */
import { PhoenixError, toPhoenixError } from '../binding/errors.js';
import type { RawGeneration, RawStep } from '../binding/types.js';
import type { FinishReason, GenerationResult, GenerationStream, TokenChunk } from './types.js';
import { listenAbort, unlistenAbort } from '../util/abort-listeners.js';

/** What the stream needs besides the raw generation. */
export interface StreamSetup {
  signal?: AbortSignal;
  returnState?: boolean;
  /** `performance.now()` when the caller asked for the generation. */
  startedAt: number;
}

/** What a step of a disposed generation stands for: the end of the loop, as a cancel. */
const DISPOSED = Symbol('disposed');

type Pulled = RawStep | null | typeof DISPOSED;

/**
 * {@link GenerationStream} over a binding's pull-based `RawGeneration`. Iterate once. Steps are
 * pulled one at a time, by the loop, or — after a cancel while the loop waits at a chunk it handed
 * out — by the stream itself, so `result` settles even if nobody pulls again.
 */
export class BindingGenerationStream implements GenerationStream {
  readonly #generation: RawGeneration;
  readonly #setup: StreamSetup;
  #consumed = false;
  #drainScheduled = false;
  #disposed = false;
  /** What the steps produced so far, and whether `result` was settled from it. */
  readonly #text: string[] = [];
  readonly #tokenIds: number[] = [];
  /** Chunks produced but not yet handed to the loop. */
  readonly #chunks: TokenChunk[] = [];
  /** The loop is suspended at a chunk it handed out: nobody pulls until its consumer asks again. */
  #waitingAtChunk = false;
  /** `cancel()` was called (a step already finished elsewhere may still hand out its token). */
  #cancelled = false;
  /** The last step asked for: the next one is asked after it (one `next()` at a time). */
  #lastPull: Promise<unknown> = Promise.resolve();
  #firstTokenAt: number | null = null;
  #settled = false;
  /** Why `result` rejected, when a step failed outside the loop (taken by the stream after a cancel). */
  #error: PhoenixError | undefined;
  /** The stream's own pulls after a cancel, while they run (one at a time). */
  #draining: Promise<void> | undefined;
  /** Stops watching the caller's signal (set while the loop watches it). */
  #unlisten: (() => void) | undefined;
  readonly #result: Promise<GenerationResult>;
  #resolve!: (result: GenerationResult) => void;
  #reject!: (error: PhoenixError) => void;

  constructor(generation: RawGeneration, setup: StreamSetup) {
    this.#generation = generation;
    this.#setup = setup;
    this.#result = new Promise<GenerationResult>((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
    // Errors are delivered to whoever iterates; an unobserved `result` must not crash the process.
    this.#result.catch(() => undefined);
  }

  get result(): Promise<GenerationResult> {
    if (!this.#consumed && !this.#drainScheduled) {
      this.#drainScheduled = true;
      // Give a caller that reads `result` and then iterates in the same tick the chance to iterate.
      // setTimeout, not setImmediate: browsers and workers have no setImmediate.
      setTimeout(() => {
        if (this.#consumed) return;
        void (async () => {
          try {
            for await (const _ of this) {
              // draining
            }
          } catch {
            // reported through #reject
          }
        })();
      });
    }
    return this.#result;
  }

  /**
   * Ends the generation at the next token boundary (finish reason `abort`). While the loop waits at a
   * chunk it handed out, the stream takes the ending step itself: `result` settles without another pull.
   */
  cancel(): void {
    this.#cancelled = true;
    this.#generation.cancel();
    if (this.#waitingAtChunk && !this.#settled) void this.#pullUntilSettled();
  }

  exportState(): Uint8Array {
    return this.#generation.exportState();
  }

  /**
   * Frees the state now (a step running on a worker is cancelled and frees it as it ends). Once the
   * stream was iterated, `result` resolves with `abort` and what was produced (without `state`) now,
   * even if the loop is never resumed; a resumed loop ends.
   */
  dispose(): void {
    this.#disposed = true;
    this.#generation.dispose();
    if (this.#consumed) this.#settle('abort');
  }

  /** Settles `result` once, from what the steps produced. */
  #settle(finishReason: FinishReason): void {
    if (this.#settled) return;
    this.#settled = true;
    this.#unlisten?.(); // a loop parked at a chunk must not keep the caller's signal holding this stream
    try {
      this.#resolve(this.#buildResult(finishReason));
    } catch (error) {
      this.#reject(toPhoenixError(error));
    }
  }

  /** Rejects `result` once; returns the typed error (kept: a loop resumed later throws it too). */
  #fail(error: unknown): PhoenixError {
    const typed = toPhoenixError(error);
    if (!this.#settled) {
      this.#settled = true;
      this.#unlisten?.();
      this.#error = typed;
      this.#reject(typed);
    }
    return typed;
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  #buildResult(finishReason: FinishReason): GenerationResult {
    const [text, tokenIds, firstTokenAt] = [this.#text, this.#tokenIds, this.#firstTokenAt];
    const stats = this.#generation.stats();
    // A step running when the dispose came may have sampled a token nobody received: count what was.
    const generatedTokens = this.#disposed ? Math.min(stats.generatedTokens, tokenIds.length) : stats.generatedTokens;
    const totalMs = performance.now() - this.#setup.startedAt;
    // The first token comes out of the prefill; the decode phase produced the rest.
    const [rateTokens, rateMs] = generatedTokens > 1 && stats.decodeMs > 0 ? [generatedTokens - 1, stats.decodeMs] : [generatedTokens, totalMs];
    const result: GenerationResult = {
      text: text.join(''),
      tokenIds: [...tokenIds],
      finishReason,
      promptTokens: stats.promptTokens,
      restoredTokens: stats.restoredTokens,
      generatedTokens,
      timings: {
        prefillMs: stats.prefillMs,
        decodeMs: stats.decodeMs,
        timeToFirstTokenMs: firstTokenAt === null ? null : firstTokenAt - this.#setup.startedAt,
        totalMs,
      },
      tokensPerSecond: rateTokens > 0 && rateMs > 0 ? (rateTokens * 1000) / rateMs : 0,
    };
    // A disposed generation has no state left to return.
    if (this.#setup.returnState && !this.#disposed) result.state = this.#generation.exportState();
    return result;
  }

  /** The next step, asked after the previous one ended. After a dispose the generation only answers "disposed": that ends it as cancelled. */
  #pull(): Promise<Pulled> {
    const ask = (): Promise<Pulled> =>
      this.#disposed ? Promise.resolve(DISPOSED) : this.#generation.next().catch((error: unknown) => (this.#disposed ? DISPOSED : Promise.reject(error)));
    const step = this.#lastPull.then(ask);
    this.#lastPull = step.catch(() => undefined);
    return step;
  }

  /** Pulls a step and records it: its token and text, a chunk for the loop, `result` when it is the last. */
  async #take(): Promise<void> {
    let step: Pulled;
    try {
      step = await this.#pull();
    } catch (error) {
      throw this.#fail(error);
    }
    // (A step that was running when the dispose came is dropped: `result` was settled then.)
    if (step === DISPOSED || this.#disposed) return this.#settle('abort');
    if (step === null) return this.#settle('stop');
    if (this.#settled) return; // asked behind the step that ended it: nothing more
    const hasToken = step.tokenId !== undefined && step.tokenId !== null;
    if (hasToken) {
      this.#tokenIds.push(step.tokenId as number);
      this.#firstTokenAt ??= performance.now();
    }
    if (step.text) this.#text.push(step.text);
    if (hasToken || step.text) this.#chunks.push({ text: step.text, tokenId: step.tokenId ?? null });
    if (step.finishReason) this.#settle(step.finishReason);
  }

  /**
   * Takes steps until the generation ended: after a cancel the cancelled step (no compute), behind a
   * step already under way elsewhere. One such run at a time.
   */
  #pullUntilSettled(): Promise<void> {
    this.#draining ??= (async () => {
      try {
        while (!this.#settled) await this.#take();
      } catch {
        // `result` was rejected with it, and a resumed loop throws it (#error)
      }
    })();
    return this.#draining;
  }

  async *[Symbol.asyncIterator](): AsyncIterator<TokenChunk> {
    if (this.#consumed) throw new PhoenixError('E_INVALID_OPTION', 'a generation stream can be iterated only once');
    this.#consumed = true;
    const { signal } = this.#setup;
    const onAbort = (): void => this.cancel();
    if (signal) {
      listenAbort(signal, onAbort);
      this.#unlisten = () => unlistenAbort(signal, onAbort);
    }
    try {
      for (;;) {
        for (let chunk = this.#chunks.shift(); chunk !== undefined; chunk = this.#chunks.shift()) {
          this.#waitingAtChunk = true;
          // A step that had finished before the cancel reached it (a worker's answer in transit)
          // hands out its token: the ending step is then the stream's to take, not the reader's.
          if (this.#cancelled && !this.#settled) void this.#pullUntilSettled();
          try {
            yield chunk;
          } finally {
            this.#waitingAtChunk = false;
          }
        }
        if (this.#settled) {
          if (this.#error) throw this.#error;
          return;
        }
        if (signal?.aborted && !this.#cancelled) this.cancel();
        await this.#take();
      }
    } catch (error) {
      throw this.#fail(error);
    } finally {
      if (signal) unlistenAbort(signal, onAbort);
      if (!this.#settled) {
        // The consumer stopped iterating early: end the generation (one cancelled step, no compute,
        // lets the core see it finished) and report what was produced.
        this.#generation.cancel();
        await this.#pull().catch(() => null);
        this.#settle('abort');
      }
    }
  }
}

/**
 * A {@link GenerationStream} for a generation that could not start (bad options, bad prompt, disposed
 * model): the error surfaces from the first `next()` and from `result`, as for errors during a
 * generation, so callers handle one path. Consuming only one of them leaves no unhandled rejection.
 */
export class FailedGenerationStream implements GenerationStream {
  readonly #error: PhoenixError;
  readonly result: Promise<GenerationResult>;

  constructor(error: unknown) {
    this.#error = toPhoenixError(error);
    this.result = Promise.reject(this.#error);
    this.result.catch(() => undefined);
  }

  cancel(): void {
    // nothing runs
  }

  exportState(): Uint8Array {
    throw this.#error;
  }

  dispose(): void {
    // nothing is held
  }

  [Symbol.dispose](): void {
    // nothing is held
  }

  async *[Symbol.asyncIterator](): AsyncIterator<TokenChunk> {
    throw this.#error;
  }
}
