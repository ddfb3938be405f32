/** Command-line options of `npm run bench` (see `npm run bench -- --help`). */
import { ENGINE_IDS, LLAMA_BUILDS, type EngineId, type LlamaBuild } from '../engines/types.js';
import { QUANTIZED_KEYS } from './quantized-models.js';

/**
 * Model sets a run can include: the Mamba-1 benchmark weights in f32 and bf16, the project's default model,
 * the newer families' shapes (f32): SmolLM-135M (llama), Mamba-2-130M, granite-4.0-h-350m (dense hybrid), and
 * quantized .gguf files both engines load (Mamba-130M and SmolLM-135M at Q8_0 and Q4_K_M, the real SmolLM2 Q4_1).
 */
export const MODEL_SETS = ['f32', 'bf16', 'default', 'smollm135m', 'mamba2-130m', 'granite350m', ...QUANTIZED_KEYS] as const;
export type ModelSet = (typeof MODEL_SETS)[number];
/** What a run includes without --models: the float rows (the quantized ones are asked for by name or `quantized`). */
const DEFAULT_MODEL_SETS: readonly ModelSet[] = ['f32', 'bf16', 'default', 'smollm135m', 'mamba2-130m', 'granite350m'];
/** `--models=quantized`: every quantized row. */
const QUANTIZED_GROUP = 'quantized';

export interface BenchOptions {
  quick: boolean;
  profile: boolean;
  /** Thread counts to run, first one is the headline (ratios/targets). */
  threads: number[];
  /** Separate worker processes per engine and thread count. */
  runs: number;
  /** Measured iterations per worker process. */
  iterations: number;
  promptTokens: number;
  decodeTokens: number;
  /** Engines to run; `phoenix-local-wasm` = phoenix-local on its WASM binding (one 1-thread row). */
  engines: EngineId[];
  /** llama.cpp builds the llama.cpp engine runs as (native is skipped with a note when not built). */
  llamaBuilds: LlamaBuild[];
  /** Which models get rows. */
  models: ModelSet[];
  verify: boolean;
  /** Prompt length of the context table (decode speed deep into a context); 0: no context table. */
  contextTokens: number;
  out: string;
}

export const USAGE = `Usage: npm run bench -- [options]

  --quick             smoke test: 64-token prompt, 16 decode tokens, 1 run, 1 iteration, 2 threads
  --profile           also print phoenix-local's core timings (prefill/decode inside Rust vs wall)
  --threads=2,1       thread counts (first = headline row for ratios and targets; default 2,1)
  --runs=N            worker processes per engine and thread count (default 3)
  --iterations=N      measured iterations per process (default 2)
  --prompt=N          prompt tokens (default 512)
  --decode=N          greedy tokens decoded after the first (default 128)
  --engines=a,b,c     any of phoenix-local (native addon), phoenix-local-wasm (WASM binding),
                      llama.cpp (default all three). WASM is single-threaded: it runs once at
                      1 thread whatever --threads says, and is skipped with a note if wasm/ is
                      not built (\`npm run build:wasm\`). --engines=phoenix-local-wasm runs only WASM
  --llama-builds=a,b  llama.cpp builds to run: prebuilt (node-llama-cpp's generic binary), native
                      (built from source with -march=native by scripts/build-llama-native.sh; skipped
                      with a note when not built). Default both; ratios use the faster per metric
  --models=a,b,c      f32 (Mamba-130M-shaped benchmark weights, every engine), bf16 (the same
                      weights in bf16: phoenix native and llama.cpp's BF16 GGUF), default
                      (models/phoenix-ssm-lite, phoenix native only), smollm135m (SmolLM-135M
                      shape, llama), mamba2-130m (Mamba-2-130M shape), granite350m (granite-4.0-h-350m
                      shape, dense hybrid); the last three f32, phoenix native and llama.cpp (phoenix
                      skipped with the core's reason while it does not load the family);
                      mamba130m-q8_0, mamba130m-q4_k, smollm135m-q8_0, smollm135m-q4_k (those weights
                      quantized by llama.cpp's quantizer to Q8_0 / Q4_K_M; needs the -march=native build),
                      smollm2-q4_1 (models/SmolLM2-135M-Instruct.Q4_1.gguf from \`npm run models:fetch\`):
                      phoenix native and llama.cpp load the same .gguf file; \`quantized\` = these five.
                      Default all but the quantized ones
  --context=N         context table: decode tokens/s after an N-token prompt for every model with a
                      GGUF, phoenix native and llama.cpp, at the headline thread count (default 4096;
                      512 with --quick; 0 = no context table)
  --no-verify         skip the logit-agreement check
  --out=FILE          results file (default bench-results.json at the repo root)
`;

function positiveInt(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got ${JSON.stringify(value)}`);
  return n;
}

/** A comma-separated subset of `allowed`, deduplicated, in the order given. */
function listOf<T extends string>(name: string, value: string, allowed: readonly T[]): T[] {
  const names = value.split(',');
  for (const n of names) {
    if (!allowed.includes(n as T)) throw new Error(`--${name}: unknown value ${JSON.stringify(n)} (${allowed.join(', ')})`);
  }
  return [...new Set(names)] as T[];
}

export function parseArgs(argv: readonly string[]): BenchOptions | 'help' {
  const opts: BenchOptions = {
    quick: false,
    profile: false,
    threads: [2, 1],
    runs: 3,
    iterations: 2,
    promptTokens: 512,
    decodeTokens: 128,
    engines: [...ENGINE_IDS],
    llamaBuilds: [...LLAMA_BUILDS],
    models: [...DEFAULT_MODEL_SETS],
    verify: true,
    contextTokens: 4096,
    out: 'bench-results.json',
  };
  const explicit = new Set<string>();
  for (const arg of argv) {
    const [flag, value = ''] = arg.split(/=(.*)/s, 2) as [string, string?];
    const name = flag.replace(/^--/, '');
    explicit.add(name);
    switch (flag) {
      case '--help':
      case '-h':
        return 'help';
      case '--quick':
        opts.quick = true;
        break;
      case '--profile':
        opts.profile = true;
        break;
      case '--no-verify':
        opts.verify = false;
        break;
      case '--threads':
        opts.threads = value.split(',').map((v) => positiveInt(name, v));
        break;
      case '--runs':
        opts.runs = positiveInt(name, value);
        break;
      case '--iterations':
        opts.iterations = positiveInt(name, value);
        break;
      case '--prompt':
        opts.promptTokens = positiveInt(name, value);
        break;
      case '--decode':
        opts.decodeTokens = positiveInt(name, value);
        break;
      case '--engines': {
        const names = value.split(',');
        for (const n of names) {
          if (!ENGINE_IDS.includes(n as EngineId)) throw new Error(`--engines: unknown engine ${JSON.stringify(n)} (${ENGINE_IDS.join(', ')})`);
        }
        opts.engines = [...new Set(names)] as EngineId[];
        break;
      }
      case '--llama-builds':
        opts.llamaBuilds = listOf(name, value, LLAMA_BUILDS);
        break;
      case '--models':
        opts.models = listOf(name, value.split(',').flatMap((m) => (m === QUANTIZED_GROUP ? QUANTIZED_KEYS : [m])).join(','), MODEL_SETS);
        break;
      case '--context': {
        const n = Number(value);
        if (!Number.isInteger(n) || n < 0) throw new Error(`--context must be 0 or a positive integer, got ${JSON.stringify(value)}`);
        opts.contextTokens = n;
        break;
      }
      case '--out':
        if (!value) throw new Error('--out needs a file name');
        opts.out = value;
        break;
      default:
        throw new Error(`unknown option ${JSON.stringify(arg)}\n\n${USAGE}`);
    }
  }
  if (opts.quick) {
    if (!explicit.has('threads')) opts.threads = [2];
    if (!explicit.has('runs')) opts.runs = 1;
    if (!explicit.has('iterations')) opts.iterations = 1;
    if (!explicit.has('prompt')) opts.promptTokens = 64;
    if (!explicit.has('decode')) opts.decodeTokens = 16;
    if (!explicit.has('context')) opts.contextTokens = 512;
  }
  return opts;
}
