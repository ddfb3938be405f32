/**
 * Requests and results of {@link LocalAIPipeline}.
 */
import type { ErrorCode } from '../binding/errors.js';
import type { FinishReason, GenerationOptions, TokenChunk } from '../engines/types.js';
import type { EnergySource } from './energy.js';
import type { ProcessingMode } from './modes.js';

/** What a request asks for: text generation, or scoring a sequence (logprobs, perplexity). */
export type TaskType = 'generation' | 'scoring';

/** Options a request may carry (generation options plus scoring output choices). */
export interface RequestOptions extends Omit<GenerationOptions, 'returnState'> {
  /** Scoring: include every position's full logits row in the result (large: n × vocab numbers). */
  returnLogits?: boolean;
  /** Generation: include the final state snapshot in `metadata.state`. */
  returnState?: boolean;
}

/** One unit of work for the pipeline. */
export interface ProcessingRequest {
  /** Caller's id, echoed as `requestId`. */
  id: string;
  /** Prompt (text needs a model with a tokenizer) or token ids. */
  input: string | { ids: readonly number[] };
  taskType: TaskType;
  /** A model name to use when it fits the mode's limits. */
  modelPreference?: string;
  /** Default: the pipeline's `defaultMode`. */
  mode?: ProcessingMode;
  /** Deadline in ms from the call (capped by the mode's `maxProcessingTimeMs`). */
  maxProcessingTime?: number;
  /** Joules the request may use; generation stops once exceeded. */
  energyBudget?: number;
  options?: RequestOptions;
}

/** Output of a scoring request. */
export interface ScoringOutput {
  ids: number[];
  /** `log p(ids[i] | ids[<i])` for i ≥ 1. */
  tokenLogprobs: number[];
  perplexity: number | null;
  /** Every position's logits (`returnLogits`). */
  logits?: number[][];
}

/** Why a request stopped before completing what it asked for. */
export type StopCause = 'deadline' | 'energy-budget' | 'signal';

/** Everything else worth knowing about how a request was served. */
export interface ResultMetadata {
  mode: ProcessingMode;
  /** How the model was chosen. */
  selection?: string;
  /** The model that was tried first when a fallback served the request. */
  fallbackFrom?: string;
  /** Why earlier candidates failed to load, in order. */
  fallbackReasons?: string[];
  queueWaitMs?: number;
  /** Load time when this request loaded the model (0 when it was already loaded). */
  loadMs?: number;
  timeToFirstTokenMs?: number | null;
  finishReason?: FinishReason;
  stoppedBy?: StopCause;
  /** `maxTokens` after clamping to the mode's limit. */
  maxTokens?: number;
  /** Deadline applied, in ms. */
  deadlineMs?: number;
  /** Final state snapshot (generation with `returnState`). */
  state?: Uint8Array;
}

/** The outcome of a request. The pipeline never throws: failures are results with `success: false`. */
export interface ProcessingResult {
  requestId: string;
  /** Whether the request completed as asked (a deadline / energy / signal stop is `false`, with partial `text`). */
  success: boolean;
  /** Generated text (generation; partial when stopped early). */
  text?: string;
  /** Scoring output. */
  result?: ScoringOutput;
  modelUsed?: string;
  /** Wall time from the call to the result, in ms. */
  processingTime: number;
  promptTokens: number;
  generatedTokens: number;
  tokensPerSecond: number;
  /** Joules used (see `energySource`). */
  energyConsumed: number;
  energySource: EnergySource;
  fallbackUsed: boolean;
  errorMessage?: string;
  errorCode?: ErrorCode;
  metadata: ResultMetadata;
}

/** A streaming request: iterate for tokens, then read `result` (which never rejects). */
export interface ProcessingStream extends AsyncIterable<TokenChunk> {
  readonly result: Promise<ProcessingResult>;
}
