/**
 * Running counters of a pipeline: requests, outcomes, latencies, throughput, energy.
 */
import type { ProcessingResult } from './types.js';
import { PROCESSING_MODES } from './modes.js';

/** Summary statistics of a series of values. */
export interface Distribution {
  count: number;
  mean: number;
  p50: number;
  p95: number;
  max: number;
}

/** A snapshot of {@link PipelineMetrics}. */
export interface MetricsSnapshot {
  requests: number;
  succeeded: number;
  failed: number;
  /** Requests that ended with `E_ABORTED` (deadline, energy budget, signal, full queue). */
  aborted: number;
  fallbacks: number;
  /** Failures per error code. */
  errorsByCode: Record<string, number>;
  /** Requests per model actually used. */
  requestsByModel: Record<string, number>;
  /** Requests per processing mode. */
  requestsByMode: Record<string, number>;
  generatedTokens: number;
  promptTokens: number;
  energyJoules: number;
  /** Processing time (ms) of the most recent requests. */
  latencyMs: Distribution;
  /** Tokens/s of the most recent generations that produced tokens. */
  tokensPerSecond: Distribution;
}

const WINDOW = 1000;

export function distribution(values: readonly number[]): Distribution {
  if (values.length === 0) return { count: 0, mean: 0, p50: 0, p95: 0, max: 0 };
  const sorted = [...values].sort((a, b) => a - b);
  const at = (q: number): number => sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))] as number;
  return { count: values.length, mean: values.reduce((a, b) => a + b, 0) / values.length, p50: at(0.5), p95: at(0.95), max: sorted[sorted.length - 1] as number };
}

function bump(map: Record<string, number>, key: string): void {
  map[key] = (map[key] ?? 0) + 1;
}

/** Accumulates {@link MetricsSnapshot} figures from finished requests. */
export class PipelineMetrics {
  #requests = 0;
  #succeeded = 0;
  #failed = 0;
  #aborted = 0;
  #fallbacks = 0;
  #generated = 0;
  #prompt = 0;
  #energy = 0;
  readonly #errors: Record<string, number> = {};
  readonly #byModel: Record<string, number> = {};
  readonly #byMode: Record<string, number> = {};
  readonly #latencies: number[] = [];
  readonly #rates: number[] = [];

  /** Adds one finished request. */
  record(result: ProcessingResult, mode: string): void {
    this.#requests++;
    if (result.success) this.#succeeded++;
    else this.#failed++;
    if (result.errorCode === 'E_ABORTED') this.#aborted++;
    if (result.errorCode) bump(this.#errors, result.errorCode);
    if (result.fallbackUsed) this.#fallbacks++;
    if (result.modelUsed) bump(this.#byModel, result.modelUsed);
    // A request refused for its mode has none: counted, but not under a mode that does not exist.
    if ((PROCESSING_MODES as readonly string[]).includes(mode)) bump(this.#byMode, mode);
    this.#generated += result.generatedTokens;
    this.#prompt += result.promptTokens;
    this.#energy += result.energyConsumed;
    push(this.#latencies, result.processingTime);
    if (result.generatedTokens > 0 && result.tokensPerSecond > 0) push(this.#rates, result.tokensPerSecond);
  }

  snapshot(): MetricsSnapshot {
    return {
      requests: this.#requests,
      succeeded: this.#succeeded,
      failed: this.#failed,
      aborted: this.#aborted,
      fallbacks: this.#fallbacks,
      errorsByCode: { ...this.#errors },
      requestsByModel: { ...this.#byModel },
      requestsByMode: { ...this.#byMode },
      generatedTokens: this.#generated,
      promptTokens: this.#prompt,
      energyJoules: this.#energy,
      latencyMs: distribution(this.#latencies),
      tokensPerSecond: distribution(this.#rates),
    };
  }
}

function push(window: number[], value: number): void {
  window.push(value);
  if (window.length > WINDOW) window.shift();
}
