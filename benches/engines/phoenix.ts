/**
 * phoenix-local through one of its bindings, obtained from the library's public API (`loadBinding`
 * of ts/index.ts, backend forced to 'native' or 'wasm' so a fallback can never be benchmarked by
 * mistake; the WASM build is single-threaded). It drives the binding's RawModel/RawGeneration directly: token ids in, token ids out,
 * like the llama.cpp side, so neither tokenizing nor detokenizing is part of the timings.
 */
import { statSync } from 'node:fs';

import { loadBinding, type BindingSelection, type RawModel } from '../../ts/index.js';

import type { BenchEngine, GenerationTiming, LoadOutcome, PrefillOptions } from './types.js';

const now = () => performance.now();

export class PhoenixEngine implements BenchEngine {
  readonly name = 'phoenix-local' as const;
  private selection?: BindingSelection;
  private model?: RawModel;
  private initMs = 0;

  constructor(
    private readonly modelDir: string,
    private readonly threads: number,
    readonly backend: 'native' | 'wasm' = 'native',
  ) {}

  describe(): Record<string, unknown> {
    const info = this.model?.info();
    return {
      binding: `phoenix-local loadBinding({ backend: '${this.backend}' })`,
      addon: this.selection?.path,
      addonModified: this.selection ? statSync(this.selection.path).mtime.toISOString() : undefined,
      buildInfo: this.selection ? this.selection.binding.buildInfo() : undefined,
      backendInitMs: this.initMs,
      model: info
        ? { format: info.format, dtype: info.dtype, paramCount: info.paramCount, weightBytes: info.weightBytes, stateBytes: info.stateBytes }
        : undefined,
    };
  }

  weightBytes(): number | undefined {
    return this.model?.info().weightBytes;
  }

  async load(): Promise<LoadOutcome> {
    const t0 = now();
    this.selection = await loadBinding({ backend: this.backend });
    this.selection.binding.setThreads(this.threads);
    this.initMs = now() - t0;
    const t1 = now();
    this.model = await this.selection.binding.loadModel(this.modelDir);
    const modelMs = now() - t1;
    return { loadMs: modelMs, breakdown: { model_ms: modelMs } };
  }

  async reloadWithF16Cache(): Promise<void> {
    this.model?.dispose();
    this.model = undefined;
    this.model = await this.selection!.binding.loadModel(this.modelDir, { kvCache: 'f16' });
  }

  private loaded(): RawModel {
    if (!this.model) throw new Error('phoenix engine used before load()');
    return this.model;
  }

  async prefill(ids: readonly number[], options: PrefillOptions = {}): Promise<{ ms: number; internal: Record<string, number> }> {
    const model = this.loaded();
    const t0 = now();
    const int8 = options.int8Prompt ? { int8Prompt: true } : {};
    const generation = model.generate({ ids: [...ids] }, { maxTokens: 1, temperature: 0, ...int8 });
    const step = await generation.next(); // prefill + greedy pick of the first token
    const ms = now() - t0;
    if (step?.tokenId == null) throw new Error('phoenix-local produced no token after the prompt');
    const stats = generation.stats();
    // As an application using predict() would: the state is freed now, not when V8 collects the
    // handle (llama.cpp likewise reuses its context's memory between runs).
    generation.dispose();
    return { ms, internal: { core_prefill_ms: stats.prefillMs } };
  }

  async generate(ids: readonly number[], decodeSteps: number): Promise<GenerationTiming> {
    const model = this.loaded();
    const t0 = now();
    const generation = model.generate({ ids: [...ids] }, { maxTokens: decodeSteps + 1, temperature: 0 });
    const first = await generation.next();
    const ttftMs = now() - t0;
    if (first?.tokenId == null) throw new Error('phoenix-local produced no token after the prompt');
    const tokens: number[] = [first.tokenId];
    const t1 = now();
    let steps = 0;
    while (steps < decodeSteps) {
      const step = await generation.next();
      if (step?.tokenId == null) break;
      tokens.push(step.tokenId);
      steps += 1;
    }
    const decodeMs = now() - t1;
    const stats = generation.stats();
    generation.dispose();
    return {
      ttftMs,
      decodeMs,
      decodeSteps: steps,
      tokens,
      internal: { core_prefill_ms: stats.prefillMs, core_decode_ms: stats.decodeMs, core_generated_tokens: stats.generatedTokens },
    };
  }

  async logits(ids: readonly number[]): Promise<Float32Array> {
    return this.loaded().logits([...ids]);
  }

  async dispose(): Promise<void> {
    this.model?.dispose();
  }
}
