/**
 * `npm run bench`: phoenix-local (native addon) against llama.cpp on the same Mamba-130M-shaped model,
 * in f32 and in bf16, and on the newer families' shapes (SmolLM-135M llama, Mamba-2-130M, granite-4.0-h-350m
 * dense hybrid; f32), plus a context table (decode tokens/s after a ~4k-token prompt: the transformer's KV
 * cache grows, the SSMs' state does not), with the same token ids, same threads, one engine at a time, each in its own
 * process. llama.cpp runs twice: node-llama-cpp's generic prebuilt binary and llama.cpp built from
 * source for this CPU (scripts/build-llama-native.sh); every ratio is against the faster of the two.
 * Also phoenix-local on its WASM binding (single-threaded: one 1-thread row, compared with native at
 * 1 thread) and on the project's default model (a small model, where per-op overhead shows). The
 * machine's read bandwidth is measured in the same run, and each decode row reports the weight GB/s it
 * streamed and its share of that limit; likewise its f32 FMA peak, and each prefill row the GFLOP/s of its
 * matrix products and their share of that limit (with what each prefill aim would take of it).
 * Quantized rows (--models=quantized): phoenix-local and llama.cpp on the same .gguf file (the Mamba-130M and
 * SmolLM-135M weights quantized to Q8_0 / Q4_K_M by llama.cpp's quantizer, and the real SmolLM2 Q4_1 file),
 * their logits checked against each other, and the aims of issue 11 (benches/lib/quant-aims.ts) stated.
 * Prints a table and writes bench-results.json at the repo root.
 * Options: `npm run bench -- --help`.
 */
import { existsSync, renameSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { defaultWasmPath } from '../ts/index.js';

import { WASM_THREADS, type EngineId, type LlamaBuild, type WorkerResult } from './engines/types.js';
import { parseArgs, USAGE, type BenchOptions } from './lib/args.js';
import { formatBandwidth, measureBandwidth, mergeBandwidth, type Bandwidth } from './lib/bandwidth.js';
import { busyComputeProbes, formatCompute, formatPrefillAim, measureCompute, mergeCompute, type Compute, type PrefillAim } from './lib/compute.js';
import { modelMatmulCount, type MatmulCount } from './lib/matmul-flops.js';
import { evictPageCache, formatEviction, weightFiles } from './lib/page-cache.js';
import { defaultModelVariant, ensureBenchModel, ensureFamilyModel, FAMILY_MODELS, MODEL_NAME, type BenchModel, type BenchVariant } from './lib/bench-model.js';
import { contextRow, formatContextTable, withLlamaRatios, type ContextRow } from './lib/context.js';
import { phoenixSkipReason } from './lib/phoenix-support.js';
import { findNativeLlama } from './lib/llama-native.js';
import { machineInfo } from './lib/machine.js';
import { planWorkers, type PlannedWorker } from './lib/plan.js';
import { promptIds } from './lib/prompt.js';
import {
  bandwidthShortfalls,
  formatHalfRatios,
  formatRatios,
  formatTable,
  formatVerification,
  formatWasmRatios,
  halfRatios,
  modelPrefillAim,
  ratios,
  summarise,
  TARGETS,
  wasmRatios,
  type ResultRow,
} from './lib/report.js';
import { runWorker } from './lib/spawn-worker.js';
import { verifyLogits, type Verification } from './lib/verify.js';
import { formatQuantAim, quantAim, QUANT_TARGETS } from './lib/quant-aims.js';
import {
  ensureQuantizedFile,
  formatGgufFacts,
  ggufFacts,
  QUANTIZED_MODELS,
  quantizedVariant,
  REAL_GGUF,
  realGgufVariant,
  type GgufFacts,
  type QuantizedModelDef,
  type QuantSource,
} from './lib/quantized-models.js';
import type { BenchModelManifest } from './lib/bench-model.js';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const WORKER_TIMEOUT_MS = 20 * 60_000;

/** How many leading greedy tokens two engines agree on (decode-path cross-check). */
function greedyAgreement(a: readonly number[], b: readonly number[]): { identicalPrefix: number; compared: number } {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a[i] === b[i]) i++;
  return { identicalPrefix: i, compared: n };
}

/**
 * More threads running slower than one thread means the cores were shared with other work: spinning
 * thread pools (llama.cpp's in particular) collapse when oversubscribed, which distorts the ratios.
 */
function oversubscriptionWarnings(rows: readonly ResultRow[]): string[] {
  const warnings: string[] = [];
  for (const row of rows) {
    const single = rows.find(
      (r) => r.engine === row.engine && r.backend === row.backend && r.model === row.model && r.dtype === row.dtype && r.threads === 1,
    );
    if (!single || row.threads <= 1) continue;
    if (row.decode_tps < single.decode_tps || row.prefill_tps < single.prefill_tps) {
      warnings.push(
        `${row.engine} (${row.backend}, ${row.model} ${row.dtype}) is slower at ${row.threads} threads than at 1: the cores were busy (oversubscribed); these numbers are not representative`,
      );
    }
  }
  return warnings;
}

const WASM: EngineId = 'phoenix-local-wasm';

/** Thread count a worker of `engine` runs with in the `threads` pass (WASM: always 1). */
const workerThreads = (engine: EngineId, threads: number) => (engine === WASM ? WASM_THREADS : threads);

/** Prompt ids a variant is run with (the same ids for every engine on the same weights). */
const variantIds = (opts: BenchOptions, v: BenchVariant) => promptIds(opts.promptTokens, undefined, v.vocabSize);

async function benchmark(opts: BenchOptions, plan: readonly PlannedWorker[], llamaDriver: string | undefined) {
  const results = new Map<string, WorkerResult[]>();
  const errors: Record<string, string> = {};
  const failed = new Set<string>();
  // WASM runs in one pass only: the 1-thread pass if there is one, else the last.
  const wasmPass = opts.threads.includes(WASM_THREADS) ? WASM_THREADS : opts.threads[opts.threads.length - 1]!;
  for (const passThreads of opts.threads) {
    for (let run = 0; run < opts.runs; run++) {
      // Alternate the order so slow drifts in machine load hit every engine alike.
      const workers = plan.filter((w) => w.engine !== WASM || passThreads === wasmPass);
      const order = run % 2 === 0 ? workers : [...workers].reverse();
      for (const w of order) {
        if (failed.has(w.id)) continue;
        const threads = workerThreads(w.engine, passThreads);
        const ids = variantIds(opts, w.variant);
        process.stdout.write(`[bench] ${w.id} threads=${threads} run ${run + 1}/${opts.runs} ... `);
        try {
          const r = await runWorker(
            REPO_ROOT,
            {
              engine: w.engine,
              threads,
              hfDir: w.variant.hfDir,
              ggufPath: w.variant.ggufPath ?? '',
              llamaBuild: w.llamaBuild,
              llamaDriver,
              mode: 'bench',
              promptIds: ids,
              decodeSteps: opts.decodeTokens,
              iterations: opts.iterations,
              // The int8-activation prompt is timed beside the default on the quantized files (native).
              int8Prompt: w.engine === 'phoenix-local' && w.variant.crossCheckIds !== undefined,
              // So is the decode with an f16 KV cache (llama.cpp's default cache type).
              kvCacheF16: w.engine === 'phoenix-local' && w.variant.crossCheckIds !== undefined,
            },
            WORKER_TIMEOUT_MS,
          );
          const key = `${w.id}@${threads}`;
          results.set(key, [...(results.get(key) ?? []), r]);
          const pre = r.prefillMs.map((ms) => ((ids.length / ms) * 1000).toFixed(1)).join('/');
          const dec = r.generations.map((g) => ((g.decodeSteps / g.decodeMs) * 1000).toFixed(1)).join('/');
          const int8 = r.prefillInt8Ms?.length ? ` (int8 prompt ${r.prefillInt8Ms.map((ms) => ((ids.length / ms) * 1000).toFixed(1)).join('/')})` : '';
          const kvF16 = r.generationsKvF16?.length ? ` (f16 KV cache ${r.generationsKvF16.map((g) => ((g.decodeSteps / g.decodeMs) * 1000).toFixed(1)).join('/')})` : '';
          console.log(`load ${r.load.loadMs.toFixed(0)} ms, prefill ${pre} tok/s${int8}, decode ${dec} tok/s${kvF16}, peak RSS ${r.peakRssMb.toFixed(0)} MB`);
        } catch (error) {
          console.log('FAILED');
          errors[w.id] = (error as Error).message;
          failed.add(w.id);
          console.error(`[bench] ${(error as Error).message}`);
        }
      }
    }
  }
  return { results, errors };
}

/**
 * The context table: one greedy generation of `opts.decodeTokens` tokens after an `opts.contextTokens`-token
 * prompt per engine and model (f32 models with a GGUF), at the headline thread count.
 */
async function contextTable(opts: BenchOptions, plan: readonly PlannedWorker[], llamaDriver: string | undefined, mainRows: readonly ResultRow[]) {
  const threads = opts.threads[0]!;
  const rows: ContextRow[] = [];
  const errors: Record<string, string> = {};
  const workers = plan.filter((w) => w.engine !== WASM && w.variant.dtype === 'f32' && w.variant.ggufPath);
  for (const w of workers) {
    const ids = promptIds(opts.contextTokens, 4321, w.variant.vocabSize);
    process.stdout.write(`[bench] context ${opts.contextTokens}: ${w.id} threads=${threads} ... `);
    try {
      const r = await runWorker(
        REPO_ROOT,
        {
          engine: w.engine,
          threads,
          hfDir: w.variant.hfDir,
          ggufPath: w.variant.ggufPath ?? '',
          llamaBuild: w.llamaBuild,
          llamaDriver,
          mode: 'context',
          promptIds: ids,
          decodeSteps: opts.decodeTokens,
          iterations: 1,
        },
        WORKER_TIMEOUT_MS,
      );
      const row = contextRow(r, w.variant.model, w.variant.kind ?? 'ssm', ids.length, mainRows);
      rows.push(row);
      console.log(`prefill ${row.prefill_tps.toFixed(1)} tok/s, decode ${row.decode_tps.toFixed(1)} tok/s`);
    } catch (error) {
      console.log('FAILED');
      errors[w.id] = (error as Error).message;
      console.error(`[bench] ${(error as Error).message}`);
    }
  }
  return { rows: withLlamaRatios(rows), errors };
}

async function main(): Promise<number> {
  const parsed = parseArgs(process.argv.slice(2));
  if (parsed === 'help') {
    console.log(USAGE);
    return 0;
  }
  const opts = parsed;
  const machine = machineInfo(REPO_ROOT);
  const mamba1 = opts.models.includes('f32') || opts.models.includes('bf16');
  const model: BenchModel | undefined = mamba1 ? ensureBenchModel(REPO_ROOT) : undefined;
  const families = FAMILY_MODELS.filter((d) => opts.models.includes(d.key as never)).map((d) => ensureFamilyModel(REPO_ROOT, d));
  const headline = opts.threads[0]!;
  const skipped: Record<string, string> = {};
  if (opts.engines.includes(WASM)) {
    const wasmPath = process.env.PHOENIX_WASM_PATH || defaultWasmPath();
    if (!existsSync(wasmPath)) {
      skipped[WASM] = `WASM build not found at ${wasmPath} (run \`npm run build:wasm\`)`;
      console.log(`[bench] note: skipping phoenix-local WASM rows: ${skipped[WASM]}`);
      opts.engines = opts.engines.filter((e) => e !== WASM);
    }
  }
  let llamaDriver: string | undefined;
  const llamaBuilds: LlamaBuild[] = [...opts.llamaBuilds];
  if (opts.engines.includes('llama.cpp') && llamaBuilds.includes('native')) {
    const found = findNativeLlama(REPO_ROOT);
    if ('driver' in found) llamaDriver = found.driver;
    else {
      skipped['llama.cpp-native'] = `llama.cpp built from source is not available: ${found.missing}`;
      console.log(`[bench] NOTE: skipping the llama.cpp -march=native rows (ratios use the prebuilt build only): ${found.missing}`);
      llamaBuilds.splice(llamaBuilds.indexOf('native'), 1);
    }
  }
  const variants: BenchVariant[] = (model?.variants ?? []).filter((v) => opts.models.includes(v.dtype as 'f32' | 'bf16'));
  if (opts.models.includes('default')) {
    const v = defaultModelVariant(REPO_ROOT);
    if (typeof v === 'string') {
      skipped['default model'] = v;
      console.log(`[bench] note: no default-model row: ${v}`);
    } else variants.push(v);
  }
  // Quantized .gguf files both engines load: made from the f32 benchmark weights by llama.cpp's quantizer.
  const quantDefs = QUANTIZED_MODELS.filter((d) => opts.models.includes(d.key));
  const quantManifests: BenchModelManifest[] = [];
  const quantVariants: BenchVariant[] = [];
  if (quantDefs.length) {
    const found = findNativeLlama(REPO_ROOT);
    const quantizer = 'quantizer' in found ? found.quantizer : undefined;
    if (!quantizer) {
      const why = `llama.cpp's quantizer comes with the -march=native build (scripts/build-llama-native.sh; gguf-py has no Q4_K quantizer): ${'missing' in found ? found.missing : 'phoenix-llama-quantize not linked'}`;
      skipped[quantDefs.map((d) => d.key).join(', ')] = why;
      console.log(`[bench] NOTE: no quantized rows ${quantDefs.map((d) => d.key).join(', ')}: ${why}`);
    } else {
      const sources = new Map<QuantizedModelDef['source'], QuantSource>();
      const sourceOf = (key: QuantizedModelDef['source']): QuantSource => {
        if (!sources.has(key)) {
          if (key === 'mamba130m') {
            const m = model ?? ensureBenchModel(REPO_ROOT);
            sources.set(key, { model: MODEL_NAME, ggufPath: m.ggufPath, manifest: m.manifest });
          } else {
            const f = families.find((x) => x.def.key === 'smollm135m') ?? ensureFamilyModel(REPO_ROOT, FAMILY_MODELS.find((d) => d.key === 'smollm135m')!);
            sources.set(key, { model: f.def.name, ggufPath: f.variant.ggufPath!, manifest: f.manifest, vocabSize: f.variant.vocabSize });
          }
          quantManifests.push(sources.get(key)!.manifest);
        }
        return sources.get(key)!;
      };
      for (const def of quantDefs) {
        const source = sourceOf(def.source);
        quantVariants.push(quantizedVariant(source, ensureQuantizedFile(REPO_ROOT, def, source, quantizer, headline), def));
      }
    }
  }
  if (opts.models.includes(REAL_GGUF.key)) {
    const v = realGgufVariant(REPO_ROOT);
    if (typeof v === 'string') {
      skipped[REAL_GGUF.key] = v;
      console.log(`[bench] NOTE: no ${REAL_GGUF.key} rows: ${v}`);
    } else quantVariants.push(v);
  }
  for (const family of [...families.map((f) => f.variant), ...quantVariants]) {
    const variant = { ...family };
    if (opts.engines.includes('phoenix-local')) {
      const why = await phoenixSkipReason(variant);
      if (why !== null) {
        variant.phoenixSkip = why;
        const name = variant.dtype === 'f32' ? variant.model : `${variant.model} ${variant.dtype}`;
        skipped[`phoenix-local ${name}`] = why;
        console.log(`[bench] note: no phoenix-local rows for ${name} (llama.cpp only): ${why}`);
      }
    }
    if (variant.wasm && opts.engines.includes(WASM)) {
      // The Q8_0 files' WASM rows (simd128): only where this WASM build reads the file.
      const why = await phoenixSkipReason(variant, 'wasm');
      if (why !== null) {
        variant.wasm = false;
        skipped[`${WASM} ${variant.model} ${variant.dtype}`] = why;
        console.log(`[bench] note: no phoenix-local WASM row for ${variant.model} ${variant.dtype}: ${why}`);
      }
    }
    variants.push(variant);
  }
  const plan = planWorkers(opts.engines, variants, llamaBuilds);
  if (!plan.length) {
    console.log('[bench] nothing to run');
    return 0;
  }
  const ids = promptIds(opts.promptTokens);
  const params = [
    ...(model ? [`${MODEL_NAME} ${(model.manifest.param_count / 1e6).toFixed(1)}M params (${model.generated ? 'generated now' : 'reused'})`] : []),
    ...families.map((f) => `${f.def.name} ${(f.manifest.param_count / 1e6).toFixed(1)}M params (${f.generated ? 'generated now' : 'reused'})`),
    ...quantVariants.map((v) => `${v.model} ${v.dtype} (${path.relative(REPO_ROOT, v.ggufPath!)})`),
  ];
  console.log(
    `[bench] models ${params.join(', ')}; rows ${variants.map((v) => `${v.model} ${v.dtype}`).join(', ')}, random weights${quantVariants.some((v) => v.model === REAL_GGUF.model) ? ` (but ${REAL_GGUF.model})` : ''}; prompt ${ids.length} tokens, decode ${opts.decodeTokens}, ` +
      `threads ${opts.threads.join(',')}, ${opts.runs} run(s) x ${opts.iterations} iteration(s); ${machine.cpu}, ${machine.logicalCores} cores`,
  );

  // Before the engines, on an otherwise idle process tree: the memory limit each decode row runs against.
  console.log('[bench] measuring the machine\'s read bandwidth ...');
  const probeThreads = [...opts.threads, ...(opts.engines.includes(WASM) ? [WASM_THREADS] : [])];
  const bandwidthBefore: Bandwidth = measureBandwidth(REPO_ROOT, probeThreads);
  console.log(`[bench] ${formatBandwidth(bandwidthBefore)}`);
  // And the arithmetic limit each prefill row runs against.
  console.log('[bench] measuring the machine\'s f32 FMA peak ...');
  const computeBefore: Compute = measureCompute(REPO_ROOT, probeThreads);
  console.log(`[bench] ${formatCompute(computeBefore)}`);
  // What a prompt token costs each model in matrix products (its safetensors headers, else its GGUF's tensor infos).
  const matmul = new Map<string, MatmulCount | string>();
  for (const v of variants) if (!matmul.has(v.hfDir)) matmul.set(v.hfDir, await modelMatmulCount(v.hfDir, v.ggufPath));
  const flopsPerToken = (v: BenchVariant): number | null => {
    const m = matmul.get(v.hfDir);
    return m === undefined || typeof m === 'string' ? null : m.flops_per_token;
  };
  console.log(
    `[bench] matrix-product FLOPs per prompt token (embedding and LM head excluded): ${variants
      .map((v) => {
        const m = matmul.get(v.hfDir)!;
        return `${v.model} ${v.dtype} ${typeof m === 'string' ? `n/a (${m})` : `${(m.flops_per_token / 1e6).toFixed(1)} M`}`;
      })
      .join(', ')}`,
  );

  // Before any engine maps a weight file: every engine then reads its weights cold (see lib/page-cache.ts).
  const eviction = evictPageCache(REPO_ROOT, [...variants, ...quantVariants].flatMap((v) => weightFiles(v.hfDir, v.ggufPath)));
  console.log(`[bench] ${formatEviction(eviction)}`);

  let verification: Verification | undefined;
  if (opts.verify) {
    console.log(`[bench] checking logits of ${[...new Set(plan.filter((w) => w.variant.reference || w.variant.crossCheckIds).map((w) => w.id))].join(', ')} against each other and the float64 references ...`);
    // Every generator writes the same check prompt (make_weights.CHECK_IDS); each manifest states it.
    const manifests = [...(model ? [model.manifest] : []), ...families.map((f) => f.manifest)];
    const checkIds = manifests[0]?.check_ids ?? quantManifests[0]?.check_ids ?? [];
    if (manifests.some((m) => m.check_ids.join() !== checkIds.join())) throw new Error('bench: the models\' manifests state different check prompts');
    verification = await verifyLogits(REPO_ROOT, checkIds, plan, headline, llamaDriver);
  }

  const { results, errors } = await benchmark(opts, plan, llamaDriver);
  console.log('[bench] measuring the machine\'s read bandwidth again ...');
  const bandwidthAfter = measureBandwidth(REPO_ROOT, probeThreads);
  console.log(`[bench] ${formatBandwidth(bandwidthAfter)}`);
  const bandwidth = mergeBandwidth(bandwidthBefore, bandwidthAfter);
  console.log('[bench] measuring the machine\'s f32 FMA peak again ...');
  const computeAfter = measureCompute(REPO_ROOT, probeThreads);
  console.log(`[bench] ${formatCompute(computeAfter)}`);
  const compute = mergeCompute(computeBefore, computeAfter);
  const rows: ResultRow[] = [];
  const addRow = (w: PlannedWorker, threads: number) => {
    const r = results.get(`${w.id}@${threads}`);
    if (r?.length) {
      rows.push(
        summarise(r, w.variant.model, w.variant.dtype, opts.promptTokens, opts.decodeTokens, bandwidth.by_threads[String(threads)], bandwidth.last_level_cache_bytes, {
          flopsPerToken: flopsPerToken(w.variant),
          peak: compute.by_threads[String(threads)],
        }),
      );
    }
  };
  for (const threads of opts.threads) for (const w of plan) if (w.engine !== WASM) addRow(w, threads);
  for (const w of plan) if (w.engine === WASM) addRow(w, WASM_THREADS);

  const byThreads = Object.fromEntries(opts.threads.map((t) => [String(t), ratios(rows, t, 'f32', MODEL_NAME)]));
  const bf16 = opts.models.includes('bf16')
    ? Object.fromEntries(
        opts.threads.map((t) => [String(t), { vs_llama_cpp: ratios(rows, t, 'bf16', MODEL_NAME), vs_f32: halfRatios(rows, t, MODEL_NAME) }]),
      )
    : undefined;
  const wasm = opts.engines.includes(WASM) ? wasmRatios(rows, MODEL_NAME) : undefined;
  const headlineRatios = byThreads[String(headline)]!;
  // The newer families: each model against llama.cpp on its own weights, with its kind's targets.
  const byModel = Object.fromEntries(
    families.map((f) => [
      f.def.name,
      {
        kind: f.def.kind,
        by_threads: Object.fromEntries(opts.threads.map((t) => [String(t), ratios(rows, t, 'f32', f.def.name, TARGETS.by_kind[f.def.kind])])),
      },
    ]),
  );

  // Each prefill aim against the machine's arithmetic: the tok/s it needs and that rate's share of the FMA peak.
  const aimModels: { model: string; target: number }[] = [
    ...(model && opts.models.includes('f32') ? [{ model: MODEL_NAME, target: TARGETS.prefill }] : []),
    ...families.map((f) => ({ model: f.def.name, target: TARGETS.by_kind[f.def.kind].prefill })),
  ];
  const prefillAims: Record<string, Record<string, PrefillAim | null>> = Object.fromEntries(
    aimModels.map(({ model: name, target }) => {
      const variant = variants.find((v) => v.model === name && v.dtype === 'f32');
      const flops = variant ? flopsPerToken(variant) : null;
      return [name, Object.fromEntries(opts.threads.map((t) => [String(t), modelPrefillAim(rows, t, 'f32', name, target, flops, compute.by_threads[String(t)])]))];
    }),
  );

  const firstTokens = (id: string) => results.get(`${id}@${headline}`)?.[0]?.firstTokens;
  const phoenixTokens = firstTokens(`phoenix-local ${MODEL_NAME}/f32`);
  const llamaTokens = firstTokens(`llama.cpp-prebuilt ${MODEL_NAME}/f32`) ?? firstTokens(`llama.cpp-native ${MODEL_NAME}/f32`);
  const greedy = phoenixTokens && llamaTokens ? greedyAgreement(phoenixTokens, llamaTokens) : undefined;
  // The same decode-path cross-check on each newer family's weights.
  const familyGreedy = Object.fromEntries(
    families.flatMap((f) => {
      const p = firstTokens(`phoenix-local ${f.def.name}/f32`);
      const l = firstTokens(`llama.cpp-prebuilt ${f.def.name}/f32`) ?? firstTokens(`llama.cpp-native ${f.def.name}/f32`);
      return p && l ? [[f.def.name, { ...greedyAgreement(p, l), threads: headline, phoenix_first: p.slice(0, 16), llama_cpp_first: l.slice(0, 16) }]] : [];
    }),
  );

  // The quantized files: what each holds (the core's reading of its header), the aims, the greedy cross-check.
  const quantized = variants.filter((v) => v.crossCheckIds);
  const quantFacts: Record<string, GgufFacts | string> = {};
  for (const v of quantized) quantFacts[`${v.model} ${v.dtype}`] = await ggufFacts(v.ggufPath!);
  const quantAims = Object.fromEntries(
    quantized.map((v) => [`${v.model} ${v.dtype}`, Object.fromEntries(opts.threads.map((t) => [String(t), quantAim(rows, t, v.dtype, v.model)]))]),
  );
  const quantGreedy = Object.fromEntries(
    quantized.flatMap((v) => {
      const tag = `${v.model}/${v.dtype}`;
      const p = firstTokens(`phoenix-local ${tag}`);
      const l = firstTokens(`llama.cpp-native ${tag}`) ?? firstTokens(`llama.cpp-prebuilt ${tag}`);
      return p && l ? [[`${v.model} ${v.dtype}`, { ...greedyAgreement(p, l), threads: headline, phoenix_first: p.slice(0, 16), llama_cpp_first: l.slice(0, 16) }]] : [];
    }),
  );

  let context: { rows: ContextRow[]; errors: Record<string, string> } | undefined;
  if (opts.contextTokens > 0) {
    console.log(`[bench] context table: decode after a ${opts.contextTokens}-token prompt at ${headline} thread(s) ...`);
    context = await contextTable(opts, plan, llamaDriver, rows);
    for (const [id, error] of Object.entries(context.errors)) errors[`context ${id}`] = error;
  }

  machine.loadAvgEnd = os.loadavg()[0]!;
  const noisy = rows.filter((r) => r.detail.prefill_spread > 0.15 || r.detail.decode_spread > 0.15);
  const busy = machine.loadAvgStart > 0.5 * machine.logicalCores;
  const oversubscribed = oversubscriptionWarnings(rows);
  const sharedProbes = busyComputeProbes(compute);
  const caveats = [
    ...(busy ? [`machine busy at start (load average ${machine.loadAvgStart.toFixed(2)} on ${machine.logicalCores} cores)`] : []),
    ...(noisy.length ? [`sample spread > 15% in ${noisy.length} row(s)`] : []),
    ...oversubscribed,
    ...(sharedProbes.length ? [`the FMA-peak probe shared the cores with other work at ${sharedProbes.join(', ')} thread(s): its limit is understated`] : []),
  ];
  const output = {
    rows,
    // reliable=false: the ratios were measured on a busy machine and must not be quoted.
    ratios: {
      ...headlineRatios,
      by_threads: byThreads,
      ...(bf16 ? { bf16: { by_threads: bf16 } } : {}),
      ...(wasm ? { wasm_vs_native: wasm } : {}),
      ...(families.length ? { by_model: byModel } : {}),
      prefill_aims: prefillAims,
      reliable: caveats.length === 0,
      caveats,
    },
    bandwidth: { ...bandwidth, before: bandwidthBefore.by_threads, after: bandwidthAfter.by_threads },
    page_cache: { evicted_before_engines: eviction, why: 'weights written (not read) into the page cache sit in 4 KiB pages; read cold they map as 2 MiB pages, which decode streams faster' },
    compute: { ...compute, before: computeBefore.by_threads, after: computeAfter.by_threads },
    machine,
    verification: verification && {
      ...verification,
      greedy_tokens: greedy && {
        ...greedy,
        threads: headline,
        phoenix_first: phoenixTokens!.slice(0, 16),
        llama_cpp_first: llamaTokens!.slice(0, 16),
      },
      ...(Object.keys(familyGreedy).length ? { greedy_tokens_by_model: familyGreedy } : {}),
      ...(Object.keys(quantGreedy).length ? { greedy_tokens_quantized: quantGreedy } : {}),
    },
    ...(quantized.length ? { quantized: { files: quantFacts, aims: quantAims, targets: QUANT_TARGETS } } : {}),
    ...(context ? { context: { prompt_tokens: opts.contextTokens, decode_tokens: opts.decodeTokens, threads: headline, rows: context.rows } } : {}),
    config: {
      model: MODEL_NAME,
      models: variants.map((v) => ({ model: v.model, dtype: v.dtype, hf: path.relative(REPO_ROOT, v.hfDir), gguf: v.ggufPath && path.relative(REPO_ROOT, v.ggufPath) })),
      model_spec: model?.manifest.spec,
      matmul_flops_per_token: Object.fromEntries(variants.map((v) => [`${v.model}/${v.dtype}`, matmul.get(v.hfDir) ?? null])),
      model_specs: Object.fromEntries(families.map((f) => [f.def.name, { family: f.def.family, kind: f.def.kind, params: f.manifest.param_count, ...f.manifest.spec }])),
      seed: model?.manifest.seed ?? families[0]?.manifest.seed,
      context_tokens: opts.contextTokens,
      prompt_tokens: ids.length,
      decode_tokens: opts.decodeTokens,
      threads: opts.threads,
      runs: opts.runs,
      iterations: opts.iterations,
      quick: opts.quick,
      llama_builds: llamaBuilds,
      llama_native_driver: llamaDriver,
      targets: TARGETS,
      definitions: {
        load_ms: 'model load until tokens can be evaluated (llama.cpp: loadModel + createContext; phoenix: loadModel)',
        prefill_tps: 'prompt tokens / wall time to consume the prompt from an empty state and pick the next token by argmax',
        ttft_ms: 'wall time from starting a greedy generation on the prompt to receiving its first token',
        decode_tps: 'greedy tokens after the first / their wall time, one token per step',
        peak_rss_mb: 'VmHWM of the process the engine computes in: its own Node worker (Node included), or for llama.cpp cpu-native the driver process (no Node)',
        weight_gbps: 'weight bytes as the engine reports them after load (phoenix info.weightBytes; llama.cpp llama_model_size) x decode_tps / 1e9: every weight is streamed once per decoded token (the tied embedding is the output head)',
        bandwidth_share: 'weight_gbps / the machine\'s read bandwidth at the same thread count, measured in this run (see bandwidth.method)',
        prefill_gflops:
          'matrix-product FLOPs per prompt token x prefill_tps / 1e9; FLOPs per token = 2 x the elements of every weight matrix (rank-2 *.weight tensors of the safetensors headers, else of the GGUF; not conv or norm weights) except the token embedding (a lookup) and the LM head (last prompt token only; a tied head counts once, as the lookup). Excluded: attention scores and values (transformer/hybrid), the scan, the depthwise conv, norms, so it is a lower bound of the work (config.matmul_flops_per_token)',
        compute_share: 'prefill_gflops / the machine\'s f32 FMA peak at the same thread count, measured in this run (see compute.method): a lower bound of the share of the arithmetic limit a prefill uses',
        prefill_aims: 'per model and thread count: the prefill tok/s its aim (target x the faster llama.cpp build) would need, the GFLOP/s of matrix products that is, and its share of the measured FMA peak (needed_share > 1: beyond the machine)',
        ratios: 'phoenix-local native over the faster llama.cpp build (prebuilt node-llama-cpp or built from source with -march=native) per metric, same weights, dtype and threads',
        by_model: 'ratios of each newer family\'s model on its own weights, against its kind\'s targets (ssm: prefill 3x, decode 1x; hybrid: prefill 2x, decode 1x; transformer: 1x both)',
        quantized:
          'phoenix-local and llama.cpp load the same .gguf (benches/.work/quantized: the f32 benchmark GGUFs quantized by llama.cpp\'s llama_model_quantize, which picks each tensor\'s type; models/SmolLM2-135M-Instruct.Q4_1.gguf). files: the core\'s reading of each header. aims: decode >= 1.2x the faster llama.cpp build, or where that would exceed 85% of the measured read bandwidth, 85% of it (phoenix weight bytes x tok/s); prefill >= 2x. Logits are checked phoenix vs llama.cpp (llama.cpp rounds activations to 8 bits in its quantized mat-vecs: differences reported, not failed). decode_kv_f16_tps / kvF16: phoenix decoding with kvCache f16, the cache type llama.cpp\'s rows run with (phoenix\'s default cache is f32)',
        context: 'decode_tps after a context_tokens-long prompt (one greedy generation per engine at the headline thread count; prefill_tps = context_tokens / time to the first token); vs_short = over the same engine\'s decode after the short bench prompt; llama.cpp runs with its default context settings (KV cache F16)',
      },
    },
    errors,
    ...(Object.keys(skipped).length ? { skipped } : {}),
  };
  const outPath = path.resolve(REPO_ROOT, opts.out);
  writeFileSync(`${outPath}.tmp`, JSON.stringify(output, null, 2) + '\n');
  renameSync(`${outPath}.tmp`, outPath);

  console.log('');
  console.log(formatTable(rows));
  if (rows.some((r) => r.backend === 'wasm')) console.log('(backend wasm = phoenix-local on its WASM binding: single-threaded, one row at 1 thread whatever --threads says)');
  console.log('(cpu-prebuilt = node-llama-cpp\'s generic binary; cpu-native = llama.cpp built from source with -march=native)');
  console.log(formatBandwidth(bandwidth));
  console.log(formatCompute(compute));
  console.log('');
  const unreliable = caveats.length ? '  [UNRELIABLE: busy machine]' : '';
  if (model) for (const t of opts.threads) console.log(formatRatios(byThreads[String(t)]!) + unreliable);
  if (bf16) {
    for (const t of opts.threads) {
      console.log(formatRatios(bf16[String(t)]!.vs_llama_cpp) + unreliable);
      console.log(formatHalfRatios(bf16[String(t)]!.vs_f32) + unreliable);
    }
  }
  if (wasm) console.log(formatWasmRatios(wasm) + unreliable);
  for (const [name, m] of Object.entries(byModel)) {
    for (const t of opts.threads) console.log(`${name} (${m.kind}): ${formatRatios(m.by_threads[String(t)]!)}${unreliable}`);
  }
  for (const [name, byT] of Object.entries(prefillAims)) console.log(formatPrefillAim(name, byT[String(headline)] ?? null) + unreliable);
  if (quantized.length) {
    console.log('');
    console.log('quantized files (both engines load the same .gguf; made by llama.cpp\'s quantizer, llama_model_quantize):');
    for (const [name, facts] of Object.entries(quantFacts)) console.log(`  ${formatGgufFacts(name, facts)}`);
    console.log('aims on the quantized files: decode >= 1.2x llama.cpp (or >= 85% of read BW where 1.2x would exceed it), prefill >= 2x:');
    for (const [name, byT] of Object.entries(quantAims)) {
      for (const t of opts.threads) {
        const a = byT[String(t)];
        console.log(`  ${a ? formatQuantAim(a) : `${name} @ ${t} thread(s): n/a (needs a phoenix-local native row and a llama.cpp row)`}${unreliable}`);
      }
    }
  }
  const short = bandwidthShortfalls(rows.filter((r) => r.engine === 'phoenix-local'));
  for (const r of short) {
    console.log(`decode below ${(TARGETS.decode_bandwidth_share * 100).toFixed(0)}% of read bandwidth: phoenix-local ${r.backend} ${r.model} ${r.dtype} @ ${r.threads}: ${(r.bandwidth_share! * 100).toFixed(0)}%`);
  }
  for (const [engine, why] of Object.entries(skipped)) console.log(`note: ${engine} skipped: ${why}`);
  if (verification) console.log(formatVerification(verification));
  if (greedy) console.log(`greedy continuation @ ${headline} threads: first ${greedy.identicalPrefix} of ${greedy.compared} tokens identical`);
  for (const [name, g] of Object.entries(quantGreedy)) {
    console.log(`greedy continuation ${name} (phoenix vs llama.cpp, same file) @ ${headline} threads: first ${g.identicalPrefix} of ${g.compared} tokens identical`);
  }
  for (const [name, g] of Object.entries(familyGreedy)) {
    console.log(`greedy continuation ${name} @ ${headline} threads: first ${g.identicalPrefix} of ${g.compared} tokens identical`);
  }
  if (context?.rows.length) {
    console.log('');
    console.log(`decode after a ${opts.contextTokens}-token prompt (transformer: KV cache grows with the context; SSM: constant state; hybrid: a few attention layers) @ ${headline} thread(s):`);
    console.log(formatContextTable(context.rows) + (unreliable ? `\n${unreliable.trim()}` : ''));
  }
  if (opts.profile) {
    for (const row of rows.filter((r) => r.detail.internal)) {
      const i = row.detail.internal!;
      const parts = Object.entries(i).map(([k, v]) => `${k} ${v}`).join(', ');
      console.log(`profile ${row.engine} ${row.model} ${row.dtype} @ ${row.threads} thread(s): ${parts}; wall prefill ${(opts.promptTokens / row.prefill_tps * 1000).toFixed(1)} ms`);
    }
    if (!rows.some((r) => r.detail.internal)) console.log('profile: no engine reported internal timings');
  }
  for (const caveat of caveats) console.log(`note: ${caveat}`);
  if (caveats.length) console.log('note: timings are not representative; rerun `npm run bench` on a quiet machine for numbers to quote');
  for (const [engine, error] of Object.entries(errors)) console.log(`error: ${engine} did not run: ${error.split('\n')[0]}`);
  console.log(`wrote ${path.relative(process.cwd(), outPath) || outPath}`);
  return Object.keys(errors).length ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    console.error(error instanceof Error ? error.message : String(error));
    process.exit(1);
  },
);
