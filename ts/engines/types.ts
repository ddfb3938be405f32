/**
 * The engine contract: how a model family is loaded and run. The pipeline and the model manager
 * only talk to {@link InferenceEngine}s; `MambaSSMEngine` is the first implementation.
 */
import type { RawModelInfo } from '../binding/types.js';
import type { ModelMetadata } from '../models/metadata.js';

/** Why a generation ended: a stop token/string, `maxTokens`, or cancellation. */
export type FinishReason = 'stop' | 'length' | 'abort';

/** A prompt: text (needs the model's tokenizer) or token ids. */
export type GenerationInput = string | { text: string } | { ids: readonly number[] };

/** One turn of a conversation (`system`, `user`, `assistant`, … as the model's template accepts). */
export interface ChatMessage {
  role: string;
  content: string;
}

/** A conversation as the model's chat template renders it. */
export interface ChatPrompt {
  /** The prompt text the model reads. */
  text: string;
  /** Ids that end the assistant's turn (the template's end-of-turn token, then the EOS ids). */
  stopTokenIds: number[];
}

/** Sampling, stopping and control options of a generation. All optional. */
export interface GenerationOptions {
  /**
   * Most tokens to generate (integer ≥ 1). Core default applies when absent. On a model with a
   * context limit (`info.contextLength`), a prompt plus `maxTokens` beyond it is `E_INVALID_OPTION`
   * before any work, unless `fitToContext`; the default is cut to the room left.
   */
  maxTokens?: number;
  /** Treat `maxTokens` as a cap: cut it to the room left in the context (finish reason `length` there). */
  fitToContext?: boolean;
  /**
   * Models with quantized weights (GGUF Q8_0, Q4_K, …): process the prompt as llama.cpp does, each
   * token's activations rounded to 8 bits and multiplied with the weights' integer blocks — about
   * 1.5× faster prompt processing on CPUs with AVX-512 VNNI, at the price of logits that move by
   * ~0.1–1 (enough to change a near-tie choice). Default `false`: the prompt's products keep f32
   * activations, the exact float product of the dequantized weights. The token that picks the first
   * answer keeps f32 either way; other weights (f32, f16, bf16) are not affected.
   */
  int8Prompt?: boolean;
  /** Softmax temperature ≥ 0; `0` = greedy. */
  temperature?: number;
  /** Keep the k most likely tokens (integer ≥ 0; `0` disables). */
  topK?: number;
  /** Nucleus sampling mass in (0, 1]; `1` disables. */
  topP?: number;
  /** Drop tokens below `minP × p(max)`, in [0, 1]; `0` disables. */
  minP?: number;
  /** Repetition penalty in [1e-6, 1e6] (logits of recent tokens divided by it, negative ones multiplied); `1` disables. */
  repeatPenalty?: number;
  /** How many recent tokens the repetition penalty considers (0 = all). */
  repeatLastN?: number;
  /** Sampling seed (non-negative safe integer) for reproducible output. */
  seed?: number;
  /** Stop when the generated text contains one of these strings. */
  stop?: readonly string[];
  /** Stop on these token ids (the model's EOS ids always stop). */
  stopTokenIds?: readonly number[];
  /** Prepend the tokenizer's special tokens (BOS) to a text prompt (default true; ignored with `state`). */
  addSpecialTokens?: boolean;
  /** Cancels the generation; it ends within one token with finish reason `abort`. */
  signal?: AbortSignal;
  /**
   * Continue from a state snapshot (bytes of {@link GenerationResult.state} / {@link GenerationStream.exportState});
   * the prompt may then be empty. For a chat, the previous turn's state (its reply's `returnState`):
   * `messages` stays the whole conversation, and the tokens the state already holds are not fed again
   * when the conversation begins with them; otherwise a KV cache keeps the start both share and an
   * SSM state is not used (`restoredTokens` says how many tokens came from it).
   */
  state?: Uint8Array;
  /** Put the final recurrent state into {@link GenerationResult.state}. */
  returnState?: boolean;
}

/** One streamed piece of output. */
export interface TokenChunk {
  /** Text completed by this token (whole UTF-8 characters; may be empty mid-character). */
  text: string;
  /** The sampled token id; `null` for a final flush of text without a new token. */
  tokenId: number | null;
}

/** Timings of one generation, in milliseconds. */
export interface GenerationTimings {
  prefillMs: number;
  decodeMs: number;
  /** From the call to the first generated token. */
  timeToFirstTokenMs: number | null;
  /** Wall time of the whole call. */
  totalMs: number;
}

/** The outcome of a generation. */
export interface GenerationResult {
  /** Generated text (prompt excluded). */
  text: string;
  /** Generated token ids (prompt excluded). */
  tokenIds: number[];
  finishReason: FinishReason;
  /** Prompt tokens this call fed (a restored state's history not counted). */
  promptTokens: number;
  /**
   * Tokens of context the `state` option supplied (its history), not fed again: 0 without a state; for a
   * chat, the start of the conversation the state holds (0 when an SSM state's tokens are not all its start). Set by the bundled
   * engines; optional for third-party ones.
   */
  restoredTokens?: number;
  generatedTokens: number;
  timings: GenerationTimings;
  /**
   * Decode speed: tokens generated after the first, per second of decode time (the first token comes
   * out of the prefill). With a single token: tokens per second of total time. 0 when none.
   */
  tokensPerSecond: number;
  /**
   * State after the prompt and every generated token, when `returnState` was set; after an abort, the
   * tokens read when it came (a prompt cut short is not read to its end).
   */
  state?: Uint8Array;
}

/** A generation in progress: iterate it for tokens; `result` resolves when it ends. */
export interface GenerationStream extends AsyncIterable<TokenChunk> {
  /**
   * Resolves when the generation ends (drains it if nobody iterates). Rejects with a `PhoenixError`.
   * A stream iterated part-way is pull-based: it ends when its loop does, or at {@link cancel}, an
   * abort of its `signal` or {@link dispose} — which settle `result` even if the loop never asks again.
   */
  readonly result: Promise<GenerationResult>;
  /**
   * Ends the generation at the next token boundary (finish reason `abort`); `result` then settles
   * whether or not the loop asks for another chunk.
   */
  cancel(): void;
  /** The recurrent state after every token consumed so far. */
  exportState(): Uint8Array;
  /**
   * Frees the generation's state (a transformer's KV cache, an SSM's states: tens of MB) now rather
   * than when the stream is garbage-collected; a running step is cancelled and frees it as it ends. A
   * loop iterating the stream then ends as after {@link cancel} (`abort`); `exportState()` throws
   * `E_INVALID_OPTION`. `predict`, `chat` and the pipeline dispose their streams themselves. Optional
   * for third-party engines.
   */
  dispose?(): void;
}

/** Options of {@link InferenceEngine.score}. */
export interface ScoreOptions {
  /** Also return every position's logits (`ids.length × vocabSize` floats). Default false. */
  includeLogits?: boolean;
  /** Stops the scoring (`E_ABORTED`) within one layer's time of firing (the core checks between layers). */
  signal?: AbortSignal;
}

/** Per-position next-token scores of a sequence, computed by the core. */
export interface ScoreResult {
  /** The scored token ids. */
  ids: number[];
  vocabSize: number;
  /**
   * `ids.length` rows of `vocabSize` logits (row `i` predicts the token after `ids[i]`): only with
   * `includeLogits`.
   */
  logits?: Float32Array[];
  /** `log p(ids[i] | ids[<i])` for i = 1…n-1 (the first token has no prediction). */
  tokenLogprobs: number[];
  /** The sum of `tokenLogprobs` (0 for a single token). */
  logLikelihood: number;
  /** `exp(-mean(tokenLogprobs))`; `null` for a single token. */
  perplexity: number | null;
  /** The most likely next token after each position (`ids.length` ids; a tie goes to the lowest id). */
  nextArgmax: number[];
}

/** A model held in memory by an engine. Dispose it (or use `using`) to free its weights. */
export interface LoadedModel {
  readonly name: string;
  readonly metadata: ModelMetadata;
  /** Architecture facts reported by the core. */
  readonly info: RawModelInfo;
  /** Name of the engine that loaded it. */
  readonly engine: string;
  /** Bytes of weights held in memory. */
  readonly memoryBytes: number;
  /** True after `dispose()`, or once the binding lost the model (a WASM instance that trapped). */
  readonly disposed: boolean;
  /**
   * Text → ids, computed off the JS thread (`E_TOKENIZER` without a tokenizer, or for a text whose
   * worst-case normalisation by this tokenizer exceeds the core's limit).
   */
  tokenize(text: string, options?: { addSpecialTokens?: boolean }): Promise<number[]>;
  /** Ids → text (`E_TOKENIZER` without a tokenizer). */
  detokenize(ids: readonly number[], options?: { skipSpecialTokens?: boolean }): string;
  /**
   * Total bytes of the state snapshot whose header (the first `info.snapshotHeaderBytes` bytes) is
   * `head`, if this model can continue it; `E_STATE_MISMATCH` otherwise. See `readStateFile`.
   */
  snapshotLength(head: Uint8Array): number;
  /**
   * Drops this handle's hold on the weights; later calls throw `E_INVALID_OPTION`. Idempotent. Work
   * already running on the model (generations, `score`, `tokenize`) holds its own reference and
   * finishes first — cancel it to stop it — and the memory goes when the last of it ends.
   */
  dispose(): void;
  [Symbol.dispose](): void;
}

/** A family of models the library can run. */
export interface InferenceEngine {
  /** Short identifier, e.g. `mamba-ssm`. */
  readonly name: string;
  /** Whether this engine can run the model described by `metadata`. */
  canLoad(metadata: ModelMetadata): boolean;
  /** Loads the model's weights (off the JS thread). */
  loadModel(metadata: ModelMetadata): Promise<LoadedModel>;
  /** Generates to completion. */
  predict(model: LoadedModel, input: GenerationInput, options?: GenerationOptions): Promise<GenerationResult>;
  /** Generates token by token. Errors surface from the iterator and from `result`. */
  stream(model: LoadedModel, input: GenerationInput, options?: GenerationOptions): GenerationStream;
  /** Log-probs and perplexity of a sequence (text or ids); its logits too with `includeLogits`. */
  score(model: LoadedModel, input: GenerationInput, options?: ScoreOptions): Promise<ScoreResult>;
  /**
   * The assistant's reply to `messages`, with the model's chat template (`E_INVALID_OPTION` when it
   * has none). Same options (except `state`) and result as {@link predict}.
   */
  chat?(model: LoadedModel, messages: readonly ChatMessage[], options?: GenerationOptions): Promise<GenerationResult>;
  /** {@link chat}, token by token, as {@link stream}. */
  chatStream?(model: LoadedModel, messages: readonly ChatMessage[], options?: GenerationOptions): GenerationStream;
  /** The prompt {@link chat} gives the model for `messages` (with the assistant's turn opened). */
  renderChat?(model: LoadedModel, messages: readonly ChatMessage[], options?: { addGenerationPrompt?: boolean }): ChatPrompt;
}
