/**
 * What the harness needs from an engine under test. One adapter per engine (phoenix-local through
 * its binding; llama.cpp through node-llama-cpp's prebuilt binary and through a driver of llama.cpp
 * built from source for this CPU); the measuring code in worker.ts is shared, so every engine is timed
 * by exactly the same loop.
 */
export type EngineName = 'phoenix-local' | 'llama.cpp';

/**
 * What `--engines` selects and what a worker runs: an engine, plus `phoenix-local-wasm` for
 * phoenix-local on its WASM binding (its rows keep engine 'phoenix-local', with backend 'wasm').
 */
export type EngineId = EngineName | 'phoenix-local-wasm';

export const ENGINE_IDS: readonly EngineId[] = ['phoenix-local', 'phoenix-local-wasm', 'llama.cpp'];

/**
 * The two llama.cpp builds the `llama.cpp` engine runs as: node-llama-cpp's generic prebuilt binary, and
 * llama.cpp compiled from source with -march=native (scripts/build-llama-native.sh). Every phoenix ratio
 * is taken against the faster of the two.
 */
export type LlamaBuild = 'prebuilt' | 'native';
export const LLAMA_BUILDS: readonly LlamaBuild[] = ['prebuilt', 'native'];
/** Row backend of each llama.cpp build. */
export const LLAMA_BACKEND: Record<LlamaBuild, string> = { prebuilt: 'cpu-prebuilt', native: 'cpu-native' };

/** WASM is single-threaded: its only row is this thread count, whatever `--threads` says. */
export const WASM_THREADS = 1;

export interface LoadOutcome {
  /** Wall time until the engine can evaluate tokens (model load + context creation where separate). */
  loadMs: number;
  /** The parts of loadMs, for the record. */
  breakdown: Record<string, number>;
}

export interface GenerationTiming {
  /** Call → first generated token (includes the prompt's prefill). */
  ttftMs: number;
  /** Wall time of the decode steps after the first token. */
  decodeMs: number;
  /** Decode steps actually run (may be < requested if the engine stopped early). */
  decodeSteps: number;
  /** Every generated token id, first one included. */
  tokens: number[];
  /** Engine-internal timings, when it reports them (for --profile). */
  internal?: Record<string, number>;
}

export interface PrefillOptions {
  /** phoenix-local on quantized weights: the prompt with 8-bit activations (`int8Prompt`), as llama.cpp multiplies it. */
  int8Prompt?: boolean;
}

export interface BenchEngine {
  readonly name: EngineName;
  /** 'native' for phoenix's napi addon, 'wasm' for its WASM binding, 'cpu' for llama.cpp's CPU build. */
  readonly backend: string;
  /** Engine/version facts for the results file. */
  describe(): Record<string, unknown>;
  /**
   * Bytes of weights as the engine holds them after load, from the engine itself (phoenix: info's
   * weightBytes; llama.cpp: the size of every tensor as loaded). A decoded token streams all of them
   * once: every matrix is read for one mat-vec, and the tied embedding doubles as the output head.
   */
  weightBytes(): number | undefined;
  /**
   * Resident set (VmRSS after load, VmHWM peak) of the process the engine computes in, MiB, when that is
   * not the worker itself (llama.cpp's native driver is a child process); undefined: the worker's own.
   */
  engineRssMb?(field: 'VmHWM' | 'VmRSS'): number | undefined;
  load(): Promise<LoadOutcome>;
  /**
   * phoenix-local: loads the model again with `kvCache: 'f16'` (llama.cpp's cache type), replacing the
   * loaded one, so later `generate` calls decode with it.
   */
  reloadWithF16Cache?(): Promise<void>;
  /**
   * Consumes `ids` from an empty state and produces the next-token logits of the last position
   * (argmax only; no sampling chain). Returns wall ms and engine-internal timings when available.
   */
  prefill(ids: readonly number[], options?: PrefillOptions): Promise<{ ms: number; internal?: Record<string, number> }>;
  /** Greedy generation of 1 + `decodeSteps` tokens from an empty state. */
  generate(ids: readonly number[], decodeSteps: number): Promise<GenerationTiming>;
  /** Raw logits of every position of `ids` (row-major `ids.length × vocab`). */
  logits(ids: readonly number[]): Promise<Float32Array>;
  dispose(): Promise<void>;
}

/** What the parent sends a worker process. */
export interface WorkerJob {
  engine: EngineId;
  threads: number;
  /** Hugging Face folder (phoenix-local). */
  hfDir: string;
  /** GGUF file (llama.cpp). */
  ggufPath: string;
  /** Which llama.cpp build runs the GGUF (default prebuilt). */
  llamaBuild?: LlamaBuild;
  /** The from-source build's driver executable (llamaBuild 'native'). */
  llamaDriver?: string;
  /**
   * bench: prefill and generate timings; logits: the check prompt's logits; context: one greedy generation
   * after a long prompt (decode speed at that context depth; no separate prefill timing).
   */
  mode: 'bench' | 'logits' | 'context';
  promptIds: number[];
  decodeSteps: number;
  iterations: number;
  /** mode bench: also time the prompt with `int8Prompt` (phoenix-local on a quantized file). */
  int8Prompt?: boolean;
  /** mode bench: also time the decode with an f16 KV cache (phoenix-local on a quantized file). */
  kvCacheF16?: boolean;
  /** For mode 'logits': where to write the Float32 logits. */
  logitsOut?: string;
  /** Where the worker writes its JSON result. */
  resultOut: string;
}

/** What a worker writes back. */
export interface WorkerResult {
  engine: EngineName;
  backend: string;
  threads: number;
  describe: Record<string, unknown>;
  load: LoadOutcome;
  prefillMs: number[];
  prefillInternal: Record<string, number>[];
  /** The prompt's wall ms with `int8Prompt` (when the job asked for it). */
  prefillInt8Ms?: number[];
  /** Decode timings with an f16 KV cache (when the job asked for it). */
  generationsKvF16?: Omit<GenerationTiming, 'tokens'>[];
  generations: Omit<GenerationTiming, 'tokens'>[];
  firstTokens: number[];
  /** Peak resident set of the worker process (VmHWM), MiB. */
  peakRssMb: number;
  /** Resident set right after load, MiB. */
  rssAfterLoadMb: number;
  /** BenchEngine.weightBytes() after load. */
  weightBytes?: number;
  logitsShape?: [number, number];
}
