/**
 * llama.cpp through node-llama-cpp, CPU only. The prebuilt binaries ship inside the npm package
 * (@node-llama-cpp/<platform>); `build: 'never'` makes getLlama fail rather than fetch or compile
 * anything, so the benchmark stays offline.
 */
import {
  getLlama,
  LlamaLogLevel,
  type Llama,
  type LlamaContext,
  type LlamaContextSequence,
  type LlamaModel,
  type Token,
} from 'node-llama-cpp';

import { LLAMA_BACKEND, type BenchEngine, type GenerationTiming, type LoadOutcome } from './types.js';

const now = () => performance.now();

export class LlamaCppEngine implements BenchEngine {
  readonly name = 'llama.cpp' as const;
  readonly backend = LLAMA_BACKEND.prebuilt;
  private llama?: Llama;
  private model?: LlamaModel;
  private context?: LlamaContext;
  private sequence?: LlamaContextSequence;
  private initMs = 0;

  constructor(
    private readonly ggufPath: string,
    private readonly threads: number,
    /** Tokens the context must hold: prompt + generated. */
    private readonly contextTokens: number,
  ) {}

  describe(): Record<string, unknown> {
    return {
      binding: 'node-llama-cpp',
      llamaCppRelease: this.llama?.llamaCppRelease,
      buildType: this.llama?.buildType,
      gpu: this.llama?.gpu,
      maxThreads: this.llama?.maxThreads,
      mmap: this.model?.useMmap,
      backendInitMs: this.initMs,
    };
  }

  weightBytes(): number | undefined {
    return this.model?.size; // llama_model_size: every tensor's bytes as loaded
  }

  async load(): Promise<LoadOutcome> {
    const t0 = now();
    this.llama = await getLlama({
      gpu: false,
      build: 'never',
      usePrebuiltBinaries: true,
      skipDownload: true,
      progressLogs: false,
      logLevel: LlamaLogLevel.error,
      maxThreads: this.threads,
    });
    this.initMs = now() - t0;

    const t1 = now();
    this.model = await this.llama.loadModel({ modelPath: this.ggufPath, gpuLayers: 0 });
    const modelMs = now() - t1;

    const t2 = now();
    this.context = await this.model.createContext({
      contextSize: Math.max(64, this.contextTokens + 16),
      batchSize: 512,
      sequences: 1,
      threads: { ideal: this.threads, min: this.threads },
    });
    this.sequence = this.context.getSequence();
    const contextMs = now() - t2;
    return { loadMs: modelMs + contextMs, breakdown: { model_ms: modelMs, context_ms: contextMs } };
  }

  private seq(): LlamaContextSequence {
    if (!this.sequence) throw new Error('llama.cpp engine used before load()');
    return this.sequence;
  }

  async prefill(ids: readonly number[]): Promise<{ ms: number }> {
    const seq = this.seq();
    await seq.clearHistory();
    const tokens = ids as Token[];
    const last = tokens[tokens.length - 1]!;
    const t0 = now();
    // Last position's logits + argmax, the same work phoenix does for its first step.
    await seq.controlledEvaluate([
      ...tokens.slice(0, -1),
      [last, { generateNext: { token: true, options: { temperature: 0 } } }],
    ]);
    return { ms: now() - t0 };
  }

  async generate(ids: readonly number[], decodeSteps: number): Promise<GenerationTiming> {
    const seq = this.seq();
    await seq.clearHistory();
    const t0 = now();
    // yieldEogToken: random weights may "emit" EOS; keep decoding so every run does the same work.
    const iterator = seq.evaluate(ids as Token[], { temperature: 0, yieldEogToken: true })[Symbol.asyncIterator]();
    const first = await iterator.next();
    const ttftMs = now() - t0;
    if (first.done) throw new Error('llama.cpp produced no token');
    const tokens: number[] = [first.value];
    const t1 = now();
    let steps = 0;
    while (steps < decodeSteps) {
      const step = await iterator.next();
      if (step.done) break;
      tokens.push(step.value);
      steps += 1;
    }
    const decodeMs = now() - t1;
    await iterator.return?.(undefined);
    return { ttftMs, decodeMs, decodeSteps: steps, tokens };
  }

  async logits(ids: readonly number[]): Promise<Float32Array> {
    const seq = this.seq();
    await seq.clearHistory();
    const out = await seq.controlledEvaluate(ids.map((id) => [id as Token, { generateNext: { logits: true } }]));
    const width = out[0]?.next.logits?.size ?? 0;
    const all = new Float32Array(ids.length * width);
    out.forEach((item, row) => {
      const map = item?.next.logits;
      if (!map || map.size !== width) throw new Error(`llama.cpp returned ${map?.size} logits at position ${row}, expected ${width}`);
      for (const [token, value] of map) all[row * width + token] = value;
    });
    return all;
  }

  async dispose(): Promise<void> {
    await this.context?.dispose();
    await this.model?.dispose();
    await this.llama?.dispose();
  }
}
