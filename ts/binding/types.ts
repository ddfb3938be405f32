/**
 * The boundary between TypeScript and the Rust core. Both bindings (the napi-rs addon in
 * `crates/node` and, later, the wasm-bindgen module in `crates/wasm`) satisfy exactly these types;
 * nothing above `ts/binding/` may depend on which one is loaded.
 *
 * Errors thrown by a binding carry the core's wire form `[E_CODE] message` in `message`;
 * `ts/binding/errors.ts` turns them into a typed `PhoenixError` with `.code`.
 */

/** Engine kind of a family: decides how the state grows and which TypeScript engine runs it. */
export type RawEngineKind = 'ssm' | 'transformer' | 'hybrid';

/** Facts of a loaded model (mirrors `phoenix_core::ModelInfo`, camelCase); the same fields for every family. */
export interface RawModelInfo {
  /** `model_type` of config.json (`mamba` for a state-spaces config). */
  modelType: string;
  /** The core family that loaded it (see {@link RawFamily}). */
  family: string;
  engine: RawEngineKind;
  format: string;
  /** Dtype of the large weight matrices as held in memory (`f32`, `f16`, `bf16`). */
  dtype: string;
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  paramCount: number;
  /** Bytes the weights occupy in memory as held. */
  weightBytes: number;
  /** Bytes of one sequence's state with an empty context (the whole state for SSMs). */
  stateBytes: number;
  /** Bytes the state grows by per token of context (0 for SSMs). */
  stateBytesPerToken: number;
  /** Most tokens of context; `null` when unlimited (SSMs). */
  contextLength: number | null;
  bosTokenId?: number | null;
  eosTokenIds: number[];
  /** Family-specific sizes as the core names them (e.g. Mamba's `stateSize`, `convKernel`). */
  architecture: Record<string, unknown>;
  /** Whether a tokenizer.json was found (text in/out needs one; id-level scoring does not). */
  hasTokenizer: boolean;
  /** Whether the model has a chat template (`renderChat` / `generateChat` need one). */
  hasChatTemplate: boolean;
  /** Bytes of a state snapshot's fixed header (what {@link RawModel.snapshotLength} reads). */
  snapshotHeaderBytes: number;
}

/** What the core would load from a model folder, from its metadata only (no weights read). */
export interface RawModelLayout {
  modelType: string;
  family: string;
  engine: RawEngineKind;
  /** Config dialect + weight container, e.g. `hf-safetensors`. */
  format: string;
  /** Files holding the weights, sorted (one, or the shards). */
  weightFiles: string[];
  /** The other files a load reads: config.json, tokenizer.json when present, the shard index. */
  sideFiles: string[];
  hasTokenizer: boolean;
  /** What a GGUF file's header says (absent for Hugging Face folders). */
  gguf?: RawGgufSummary;
}

/** A GGUF model as its header describes it (no tensor data read). */
export interface RawGgufSummary {
  /** `general.architecture` (`llama`, `mamba2`, …). */
  architecture: string;
  name?: string;
  /** llama.cpp's name of the file type (`Q4_1`, `Q4_K_M`, `F16`), else the type most bytes are in. */
  quantization: string;
  /** Tensors per stored type (`F32`, `Q8_0`, …). */
  tensorTypes: Record<string, number>;
  paramCount: number;
  weightBytes: number;
  vocabSize: number;
  hiddenSize: number;
  numLayers: number;
  contextLength?: number;
  fileBytes: number;
}

/** One entry of the core's family registry. */
export interface RawFamily {
  name: string;
  modelTypes: string[];
  engine: RawEngineKind;
}

/**
 * What an attention model's KV cache holds: `f32`, or `f16` (half the memory and half the bytes a
 * decode step reads; keys and values rounded once as they are stored, as llama.cpp's default cache).
 */
export type KvCacheType = 'f32' | 'f16';

/** Load options as the core validates them. */
export interface RawLoadOptions {
  /** Default `f32`. SSM-only models have no KV cache. */
  kvCache?: KvCacheType;
  /**
   * Native: map the weight files (default `true`), or read them into memory (`false`, llama.cpp's
   * `--no-mmap`: a file overwritten in place under the loaded model cannot kill the process with
   * `SIGBUS`). WASM holds the files in memory either way.
   */
  useMmap?: boolean;
}

/** Sampling and stopping options as the core validates them (all optional; core applies defaults). */
export interface RawGenerateOptions {
  maxTokens?: number;
  /** 0 means greedy. */
  temperature?: number;
  /** 0 disables. */
  topK?: number;
  /** 1 disables. */
  topP?: number;
  /** 0 disables. */
  minP?: number;
  /** 1 disables. */
  repeatPenalty?: number;
  /** How many recent tokens the repetition penalty looks at (0 = all). */
  repeatLastN?: number;
  seed?: number;
  stopTokenIds?: number[];
  stopStrings?: string[];
  /** Prepend the tokenizer's special tokens (BOS) to a text prompt; default true. */
  addSpecialTokens?: boolean;
  /** Cut `maxTokens` to the room left in the model's context instead of refusing it. */
  fitToContext?: boolean;
  /** Quantized weights: multiply the prompt with 8-bit activations (see `GenerationOptions.int8Prompt`). */
  int8Prompt?: boolean;
}

/** One turn of a conversation, as chat templates read it. */
export interface RawChatMessage {
  /** `system`, `user`, `assistant`, … (the template decides which it accepts). */
  role: string;
  content: string;
}

/** A conversation rendered by the model's chat template. */
export interface RawChatPrompt {
  /** The prompt text (it already holds any BOS the template writes). */
  text: string;
  /** Ids that end the assistant's turn: the template's end-of-turn token, then the EOS ids. */
  stopTokenIds: number[];
}

/** The prompt: text (tokenized by the model's tokenizer) or token ids. */
export interface RawPrompt {
  text?: string;
  ids?: number[];
}

export type RawFinishReason = 'stop' | 'length' | 'abort';

/** One step of a generation. */
export interface RawStep {
  /** The sampled token id; absent on the final step when the generation ended without one. */
  tokenId?: number | null;
  /** Text newly completed by this step: always whole UTF-8 characters, possibly empty. */
  text: string;
  /** Set on the last step. */
  finishReason?: RawFinishReason | null;
}

export interface RawGenerationStats {
  promptTokens: number;
  restoredTokens: number;
  generatedTokens: number;
  prefillMs: number;
  decodeMs: number;
}

/** Options of {@link RawModel.score}. */
export interface RawScoreOptions {
  /** Also return every position's logits (bounded by the core's one-call limit). Default false. */
  includeLogits?: boolean;
}

/** What the core computed for a scored sequence of `tokenCount` ids. */
export interface RawScore {
  tokenCount: number;
  /** `ln p(ids[i] | ids[<i])` for i = 1…n-1 (log-softmax in float64 in the core). */
  tokenLogprobs: number[];
  /** The sum of `tokenLogprobs`. */
  logLikelihood: number;
  /** `exp(-logLikelihood / (n - 1))`; `null` for a single id. */
  perplexity: number | null;
  /** The most likely next token after each position (`n` ids; a tie goes to the lowest id). */
  nextArgmax: number[];
  /** `n * vocabSize` logits, row-major: only when `includeLogits` was set. */
  logits?: Float32Array;
}

/** A running generation (one sequence with its own state). Pull-based: each `next()` runs one step. */
export interface RawGeneration {
  /** Runs the prefill on the first call, then one decode step per call. Resolves `null` once finished. */
  next(): Promise<RawStep | null>;
  /**
   * Ends the generation: a running prefill stops between two layers (keeping the pieces fed before), a
   * decode step at its end; the `next()` then yields finishReason `abort`.
   */
  cancel(): void;
  /**
   * The state after every token consumed so far (prompt + generated), running a pending prefill
   * first — except after a cancel or an abort: then only what was read (a prompt cut short is not
   * read to its end first).
   */
  exportState(): Uint8Array;
  stats(): RawGenerationStats;
  /** Every token of the context: the prompt (all of it, read or not) and what was generated. */
  tokenIds(): number[];
  /**
   * Frees the generation's state (KV cache, SSM states) now instead of when the handle is collected;
   * a running step is cancelled and frees it as it ends. Later `next()` / `exportState()` throw
   * `E_INVALID_OPTION` ("generation disposed"); `stats()` still answers. Never blocks.
   */
  dispose(): void;
}

/** A loaded model held by the Rust side. */
export interface RawModel {
  info(): RawModelInfo;
  /** Text → ids, off the JS thread (native; WASM resolves after running on the calling thread). */
  tokenize(text: string, addSpecialTokens: boolean): Promise<number[]>;
  detokenize(ids: number[], skipSpecialTokens: boolean): string;
  /**
   * The total byte length of the state snapshot whose first `info().snapshotHeaderBytes` bytes are
   * `head`, when this model can continue it (same shape and weights, its state size); otherwise
   * throws `E_STATE_MISMATCH`. Lets a reader read exactly that many bytes of a state file.
   */
  snapshotLength(head: Uint8Array): number;
  /** Logits for every position: `ids.length * vocabSize` floats, row-major. */
  logits(ids: number[]): Promise<Float32Array>;
  /**
   * Log-probs, log-likelihood and perplexity of `ids` (fresh context), computed in the core;
   * `E_ABORTED` once `cancel` is cancelled: checked between the layers of each prefill piece (on WASM
   * run on the calling thread, `PHOENIX_WASM_THREAD=main` or a browser, only as it starts).
   */
  score(ids: number[], options?: RawScoreOptions, cancel?: RawCancelFlag): Promise<RawScore>;
  /**
   * Starts a generation. With `state` (bytes from `exportState`), the prompt continues that
   * context; the prompt may then be empty.
   */
  generate(prompt: RawPrompt, options: RawGenerateOptions, state?: Uint8Array | null): RawGeneration;
  /**
   * `messages` rendered with the model's chat template (the assistant's turn opened when
   * `addGenerationPrompt`). No template → `E_INVALID_OPTION`; a broken one → `E_BAD_CONFIG`.
   */
  renderChat(messages: RawChatMessage[], addGenerationPrompt: boolean): RawChatPrompt;
  /**
   * Starts the assistant's reply to `messages`: the rendered conversation is the prompt (no BOS added
   * unless `addSpecialTokens`), and the generation also stops at the template's end-of-turn token,
   * whose text is not returned. With `state` (an earlier turn's snapshot), the conversation's tokens
   * that its history holds are not fed again when the conversation begins with them; otherwise the
   * whole conversation is fed from a fresh state.
   */
  generateChat(messages: RawChatMessage[], options: RawGenerateOptions, state?: Uint8Array | null): RawGeneration;
  /** Frees the weights now; later calls throw `E_INVALID_OPTION` ("model disposed"). */
  dispose(): void;
  /**
   * Why the handle is gone without a `dispose()` (the WASM instance holding it trapped, taking its
   * weights along), or null. The native addon has no such case and leaves it out.
   */
  lost?(): string | null;
}

export type BackendKind = 'native' | 'wasm';

/**
 * The contents of one model file: bytes, or a `Blob` (a browser `File`, a fetched body, Node's
 * `fs.openAsBlob`) that the WASM binding streams into its memory in chunks, never holding a whole
 * JS-side copy.
 */
export type ModelFileData = Uint8Array | Blob;

/** A model's files, by their names inside the model folder. */
export type ModelFileMap = Readonly<Record<string, ModelFileData>> | ReadonlyMap<string, ModelFileData>;

/**
 * Reads one file of a model by its name inside the folder (`config.json`, `model.safetensors`, …);
 * resolves `null` when the file does not exist. Called only for the files the core needs. With
 * `{ probe: true }` (from `describeModel`) only presence matters: a reader may answer without
 * reading (e.g. a HEAD request); what it returns is not read.
 */
export type ModelFileReader = ((name: string, options?: { probe?: boolean }) => Promise<ModelFileData | null>) & {
  /**
   * Every file name the source holds, when the reader can list them (a file picker's files): the
   * core then finds a model that is one `.gguf` file among them, as it does in a folder on disk.
   */
  readonly fileNames?: readonly string[];
};

/**
 * Where a binding loads a model from: a folder path (native; WASM in Node), a base URL (WASM in a
 * browser), a {@link ModelFileReader}, or the files in memory. The native addon takes paths only.
 */
export type RawModelSource = string | ModelFileReader | ModelFileMap;

/** What a binding module exports. */
export interface RawBinding {
  /** Loads a model (config.json + weights [+ tokenizer.json]) off the JS thread. */
  loadModel(source: RawModelSource, options?: RawLoadOptions): Promise<RawModel>;
  /**
   * What the core would load from `source` (family, engine kind, format, the files a load reads),
   * reading only config.json and a shard index — never tensor data (the native addon also checks each
   * safetensors file's header against the file's length, from its first pages, so a truncated file
   * fails here). Fails with the error a load of the same files would give first.
   */
  describeModel(source: RawModelSource): Promise<RawModelLayout>;
  /** The model families this build runs (the core's registry). */
  supportedFamilies(): RawFamily[];
  /** Core version and build facts, e.g. `{ version, simd, threads }`. */
  buildInfo(): { version: string; simd: string; threads: number };
  /** Caps the core's worker threads (0 = all cores). */
  setThreads(n: number): void;
  /**
   * Checks generation options that do not depend on a model (types and ranges), so a caller can refuse
   * them before loading one (`E_INVALID_OPTION` naming the option).
   */
  checkGenerateOptions(options: RawGenerateOptions): void;
  /** Checks load options (`kvCache`, `useMmap`) without a model (`E_INVALID_OPTION` naming the option). */
  checkLoadOptions(options: RawLoadOptions): void;
  /** A flag that stops a call given it ({@link RawModel.score}) when cancelled. */
  CancelFlag: new () => RawCancelFlag;
}

/** See {@link RawBinding.CancelFlag}. */
export interface RawCancelFlag {
  cancel(): void;
}
