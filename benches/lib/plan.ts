/**
 * Which worker runs which model: every selected engine on every variant it supports. llama.cpp is run
 * as each available build (prebuilt node-llama-cpp, and -march=native from source when built); WASM and
 * phoenix-only models (no GGUF) get the rows they can have; a model whose family phoenix's core does not
 * load yet (variant.phoenixSkip) gets llama.cpp rows only.
 */
import type { EngineId, LlamaBuild } from '../engines/types.js';
import type { BenchVariant } from './bench-model.js';

export interface PlannedWorker {
  /** Stable label: results are grouped by it and a worker that failed once is not retried. */
  id: string;
  engine: EngineId;
  llamaBuild?: LlamaBuild;
  variant: BenchVariant;
}

export function planWorkers(engines: readonly EngineId[], variants: readonly BenchVariant[], llamaBuilds: readonly LlamaBuild[]): PlannedWorker[] {
  const plan: PlannedWorker[] = [];
  for (const variant of variants) {
    const tag = `${variant.model}/${variant.dtype}`;
    for (const engine of engines) {
      if (engine === 'phoenix-local') {
        if (!variant.phoenixSkip) plan.push({ id: `${engine} ${tag}`, engine, variant });
      } else if (engine === 'phoenix-local-wasm') {
        if (variant.wasm && !variant.phoenixSkip) plan.push({ id: `${engine} ${tag}`, engine, variant });
      } else if (variant.ggufPath) {
        for (const build of llamaBuilds) plan.push({ id: `${engine}-${build} ${tag}`, engine, llamaBuild: build, variant });
      }
    }
  }
  return plan;
}
