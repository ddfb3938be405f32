/**
 * Requests and results of {@link LocalAIPipeline}.
 */
import type { ErrorCode } from '../binding/errors.js';
import type { ChatMessage, FinishReason, GenerationOptions, TokenChunk } from '../engines/types.js';
import type { ModelStatus } from '../models/metadata.js';
import type { RequestPhase } from './deadline.js';
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
  /** Prompt (text needs a model with a tokenizer) or token ids. Give this or `messages`. */
  input?: string | { ids: readonly number[] };
  /**
   * A conversation instead of `input` (generation only): the model's chat template renders it and
   * the reply is the assistant's next turn. A model without a template fails with `E_INVALID_OPTION`.
   */
  messages?: readonly ChatMessage[];
  taskType: TaskType;
  /** A model name to use when it fits the mode's limits. */
  modelPreference?: string;
  /** Default: the pipeline's `defaultMode`. */
  mode?: ProcessingMode;
  /**
   * Deadline in ms from the call (capped by the mode's `maxProcessingTimeMs`). It covers every phase:
   * queueing, selection (listing and checksumming models), loading, scoring and generation; when it
   * passes the result is `E_ABORTED` naming the phase (`metadata.stoppedDuring`). A generation ends within
   * one token; a prompt's prefill or a scoring already running stops between two layers.
   */
  maxProcessingTime?: number;
  /** Joules the request may use; generation (between tokens) and scoring (between layers) stop once exceeded (`E_ABORTED`). */
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

export type { RequestPhase } from './deadline.js';

/**
 * Why a model did not serve a request:
 * - `unusable` – its status is `error` or `corrupted` (the manager's error is in `code` / `message`);
 * - `too-large` – its weights exceed the mode's `maxModelBytes`;
 * - `no-tokenizer` – the prompt is text and the model has no `tokenizer.json`;
 * - `load-failed` – it was tried and loading it failed (`code` / `message` of that failure);
 * - `token-ids` – the prompt is token ids, which belong to the vocabulary of the model tried first: it
 *   is not moved to another model when that one fails.
 */
export type SkipReason = 'unusable' | 'too-large' | 'no-tokenizer' | 'load-failed' | 'token-ids';

/** A local model that did not serve a request, and why. */
export interface SkippedModel {
  name: string;
  /** The model's status as listed for this request. */
  status: ModelStatus;
  reason: SkipReason;
  /** Error code behind `unusable` / `load-failed` (the manager's or the load's; e.g. `E_CHECKSUM`, `E_BAD_WEIGHTS`). */
  code?: ErrorCode;
  /** One sentence saying why (the manager's or the load's error message, or the limit it exceeds). */
  message: string;
}

/** Everything else worth knowing about how a request was served. */
export interface ResultMetadata {
  mode: ProcessingMode;
  /** How the model was chosen. */
  selection?: string;
  /** The model that was tried first when a fallback served the request. */
  fallbackFrom?: string;
  /** Why earlier candidates failed to load, in order (`name: [CODE] message`; see also {@link ProcessingResult.skippedModels}). */
  fallbackReasons?: string[];
  /** The phase the request was in when it stopped (deadline, energy budget or caller signal); set with `stoppedBy`. */
  stoppedDuring?: RequestPhase;
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
  /** Generation given `options.state`: tokens of context taken from it (not fed again; 0: none, see `GenerationResult.restoredTokens`). */
  restoredTokens?: number;
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
  /** Whether a model other than the first candidate (the preference, else the mode's first choice) served the request. */
  fallbackUsed: boolean;
  /**
   * Every local model that did not serve this request and why, in the order considered: models the mode's
   * limits or the input rule out, unusable ones (`error` / `corrupted`), and candidates whose load failed.
   * Usable models that fit but were not needed (a better-ranked one served) are not listed. Set on every
   * result, failed ones included (e.g. `E_MODEL_NOT_FOUND` when no model can serve the request).
   */
  skippedModels: SkippedModel[];
  errorMessage?: string;
  errorCode?: ErrorCode;
  metadata: ResultMetadata;
}

/**
 * A streaming request: iterate for tokens, then read `result` (which never rejects). Generation waits
 * while the reader is the pipeline's `streamBufferTokens` behind; reading `result` without starting to
 * iterate in the same tick, or leaving the loop early, lets it run on with the tokens unread.
 */
export interface ProcessingStream extends AsyncIterable<TokenChunk> {
  readonly result: Promise<ProcessingResult>;
  /**
   * Stops the request wherever it is (queued, loading, generating; on a remote worker too), as the
   * request's own `signal` would: `result` resolves with `E_ABORTED` and the partial text, and the
   * pipeline's slot is freed. The way to let go of a stream whose reader stopped reading.
   */
  cancel(): void;
}
