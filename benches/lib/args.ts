/** Command-line options of `npm run bench` (see `npm run bench -- --help`). */
import { ENGINE_IDS, type EngineId } from '../engines/types.js';

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
  verify: boolean;
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
  --no-verify         skip the logit-agreement check
  --out=FILE          results file (default bench-results.json at the repo root)
`;

function positiveInt(name: string, value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new Error(`--${name} must be a positive integer, got ${JSON.stringify(value)}`);
  return n;
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
    verify: true,
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
  }
  return opts;
}
