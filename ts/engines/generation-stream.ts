/**
 * Drives one binding generation step by step and exposes it as a {@link GenerationStream}.
 * Cancellation is checked between steps, so an abort ends the generation within one token.
 */
import { PhoenixError, toPhoenixError } from '../binding/errors.js';
import type { RawGeneration } from '../binding/types.js';
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

/** {@link GenerationStream} over a binding's pull-based `RawGeneration`. Iterate once. */
export class BindingGenerationStream implements GenerationStream {
  readonly #generation: RawGeneration;
  readonly #setup: StreamSetup;
  #consumed = false;
  #drainScheduled = false;
  #disposed = false;
  /** What the iteration produced so far, and whether `result` was settled from it. */
  readonly #text: string[] = [];
  readonly #tokenIds: number[] = [];
  #firstTokenAt: number | null = null;
  #settled = false;
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

  cancel(): void {
    this.#generation.cancel();
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

  /** Settles `result` once, from what the iteration produced. */
  #settle(finishReason: FinishReason): void {
    if (this.#settled) return;
    this.#settled = true;
    try {
      this.#resolve(this.#buildResult(finishReason));
    } catch (error) {
      this.#reject(toPhoenixError(error));
    }
  }

  [Symbol.dispose](): void {
    this.dispose();
  }

  #buildResult(finishReason: FinishReason): GenerationResult {
    const [text, tokenIds, firstTokenAt] = [this.#text, this.#tokenIds, this.#firstTokenAt];
    const stats = this.#generation.stats();
    const totalMs = performance.now() - this.#setup.startedAt;
    // The first token comes out of the prefill; the decode phase produced the rest.
    const [rateTokens, rateMs] = stats.generatedTokens > 1 && stats.decodeMs > 0 ? [stats.generatedTokens - 1, stats.decodeMs] : [stats.generatedTokens, totalMs];
    const result: GenerationResult = {
      text: text.join(''),
      tokenIds: [...tokenIds],
      finishReason,
      promptTokens: stats.promptTokens,
      restoredTokens: stats.restoredTokens,
      generatedTokens: stats.generatedTokens,
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

  async *[Symbol.asyncIterator](): AsyncIterator<TokenChunk> {
    if (this.#consumed) throw new PhoenixError('E_INVALID_OPTION', 'a generation stream can be iterated only once');
    this.#consumed = true;
    const { signal } = this.#setup;
    const generation = this.#generation;
    const onAbort = (): void => generation.cancel();
    if (signal) listenAbort(signal, onAbort);
    try {
      for (;;) {
        if (signal?.aborted) generation.cancel();
        // After a dispose the generation only answers "disposed": the loop ends as cancelled.
        const step = this.#disposed ? DISPOSED : await generation.next().catch((error: unknown) => (this.#disposed ? DISPOSED : Promise.reject(error)));
        if (step === DISPOSED || this.#disposed) {
          // (A step that was running when the dispose came is dropped: `result` was settled then.)
          this.#settle('abort');
          return;
        }
        if (step === null) break;
        const hasToken = step.tokenId !== undefined && step.tokenId !== null;
        if (hasToken) {
          this.#tokenIds.push(step.tokenId as number);
          this.#firstTokenAt ??= performance.now();
        }
        if (step.text) this.#text.push(step.text);
        if (step.finishReason) {
          this.#settle(step.finishReason);
          if (hasToken || step.text) yield { text: step.text, tokenId: step.tokenId ?? null };
          return;
        }
        if (hasToken || step.text) yield { text: step.text, tokenId: step.tokenId ?? null };
      }
      this.#settle('stop');
    } catch (error) {
      const typed = toPhoenixError(error);
      if (!this.#settled) {
        this.#settled = true;
        this.#reject(typed);
      }
      throw typed;
    } finally {
      if (signal) unlistenAbort(signal, onAbort);
      if (!this.#settled) {
        // The consumer stopped iterating early: end the generation (one cancelled step, no compute,
        // lets the core see it finished) and report what was produced.
        generation.cancel();
        await generation.next().catch(() => null);
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
