/**
 * A generation's model state (a transformer's KV cache) lives in the native addon until V8 collects
 * the generation's handle — finished or not, since `exportState()` may still be called. V8 saw only
 * a small object, so it let finished generations' caches pile up: a process running one SmolLM
 * prompt after another grew by about its whole KV cache per prompt. The addon now reports each
 * generation's state bytes to V8 as external memory (and gives them back when the handle is
 * collected), so V8's collector runs on their account.
 *
 * Checked by behaviour, in a plain Node process (the test runner's own allocations would trigger
 * collections anyway): many finished generations dropped in a loop, without forcing a collection;
 * the process's peak RSS growth must stay well under what they would hold if all were kept. Before
 * the report, 24 generations of a 200-token prompt grew the peak by 300–333 MB (24 × 8.8 MB of
 * KV cache, plus their buffers); with it, by ~130 MB.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

import { MODELS_DIR, ROOT, requireNativeAddon } from './helpers.js';

const FILE = path.join(MODELS_DIR, 'SmolLM2-135M-Instruct.Q4_1.gguf');
const PRESENT = existsSync(FILE);
if (!PRESENT) {
  if (process.env.CI) throw new Error(`${FILE} is missing: .ci/run must run \`npm run models:fetch\``);
  console.warn('SKIPPED native-memory.test.ts: models/SmolLM2-135M-Instruct.Q4_1.gguf is absent (run `npm run models:fetch`)');
}

const PROMPT_TOKENS = 200;
const GENERATIONS = 32;

/**
 * Runs `body` in a fresh tsx process after a prelude that loads the model on the native addon and
 * defines `ids` (the prompt) and `peakMb()`; returns the JSON object of its last stdout line.
 */
function runLoop<T>(body: string): T {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'phoenix-native-memory-'));
  try {
    const script = path.join(dir, 'loop.mts');
    writeFileSync(
      script,
      `import { readFileSync } from 'node:fs';
import { loadBinding } from ${JSON.stringify(path.join(ROOT, 'ts/binding/load.ts'))};
const peakMb = () => Number(/VmHWM:\\s+(\\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))![1]) / 1024;
const { binding } = await loadBinding({ backend: 'native' });
const model = await binding.loadModel(${JSON.stringify(FILE)});
const ids = Array.from({ length: ${PROMPT_TOKENS} }, (_, i) => 100 + ((i * 7919) % 40000));
const perGenerationMb = (model.info().stateBytes + ${PROMPT_TOKENS} * model.info().stateBytesPerToken) / 2 ** 20;
${body}
`,
    );
    const tsx = fileURLToPath(new URL('../node_modules/.bin/tsx', import.meta.url));
    const child = spawnSync(tsx, [script], { encoding: 'utf8', timeout: 120_000 });
    expect(child.status, child.stderr).toBe(0);
    return JSON.parse(child.stdout.trim().split('\n').pop() as string) as T;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

describe.skipIf(!PRESENT)('native generations report their state to V8', () => {
  it('so dropped, finished generations do not pile up in memory', () => {
    requireNativeAddon();
    const { growthMb, perGenerationMb } = runLoop<{ growthMb: number; perGenerationMb: number }>(`
const warm = model.generate({ ids: ids.slice(0, 8) }, { maxTokens: 2, temperature: 0 }, undefined);
while ((await warm.next()) !== null);
const base = process.memoryUsage().rss / 2 ** 20;
for (let i = 0; i < ${GENERATIONS}; i++) {
  const generation = model.generate({ ids }, { maxTokens: 1, temperature: 0 }, undefined);
  while ((await generation.next()) !== null);
  await new Promise((resolve) => setImmediate(resolve)); // an application's event loop turn
}
console.log(JSON.stringify({ growthMb: peakMb() - base, perGenerationMb }));`);
    console.log(`peak growth ${growthMb.toFixed(0)} MB, ${perGenerationMb.toFixed(1)} MB per generation`);
    expect(perGenerationMb).toBeGreaterThan(8);
    // Kept, they would hold GENERATIONS × perGenerationMb (282 MB); the peak stays near V8's
    // external-memory threshold for a collection (64 MB) plus the allocator's slack.
    expect(growthMb).toBeLessThan(0.6 * GENERATIONS * perGenerationMb);
  }, 180_000);

  it('dispose() frees a generation at once: disposed one after another, the peak stays near one state', () => {
    requireNativeAddon();
    const out = runLoop<{ growthMb: number; perGenerationMb: number; runningFinish: string | null; exportError: string; nextError: string; generated: number }>(`
const warm = model.generate({ ids }, { maxTokens: 1, temperature: 0 }, undefined);
while ((await warm.next()) !== null);
warm.dispose();
const base = process.memoryUsage().rss / 2 ** 20;
const kept = [];
for (let i = 0; i < ${GENERATIONS}; i++) {
  const generation = model.generate({ ids }, { maxTokens: 1, temperature: 0 }, undefined);
  while ((await generation.next()) !== null);
  generation.dispose();
  kept.push(generation); // still referenced: only dispose() can have freed its state
}
// A dispose while a step is queued or running on a worker: that step ends as cancelled (\`abort\`);
// when the dispose came before the worker took it, it fails as disposed; when the worker had already
// begun this one-piece prompt (cancellation is checked between pieces), it completes with its token
// (\`token\`) and the state is freed right after.
const running = model.generate({ ids }, { maxTokens: 4, temperature: 0 }, undefined);
const step = running.next();
running.dispose();
const runningFinish = await step.then((s) => s && (s.finishReason ?? (s.tokenId != null ? 'token' : null)), (e) => String(e.message));
let exportError = '';
try { running.exportState(); } catch (e) { exportError = String(e.message); }
let nextError = '';
try { await kept[0].next(); } catch (e) { nextError = String(e.message); }
console.log(JSON.stringify({ growthMb: peakMb() - base, perGenerationMb, runningFinish, exportError, nextError, generated: kept[0].stats().generatedTokens }));`);
    console.log(`disposed each: peak growth ${out.growthMb.toFixed(0)} MB, ${out.perGenerationMb.toFixed(1)} MB per generation`);
    expect(out.perGenerationMb).toBeGreaterThan(8);
    // Kept referenced, undisposed, they would hold GENERATIONS × perGenerationMb (282 MB).
    expect(out.growthMb).toBeLessThan(4 * out.perGenerationMb);
    expect(['abort', 'generation disposed', 'token']).toContain(out.runningFinish);
    expect(out.exportError).toBe('generation disposed');
    expect(out.nextError).toBe('generation disposed');
    expect(out.generated).toBe(1); // stats survive a dispose
  }, 180_000);

  it('a long chat gives each turn\'s freed state back to the OS: resident memory stays near the state it holds', () => {
    // mimalloc purges freed pages only when their thread allocates again, so every turn's KV cache,
    // snapshot and restored copy (tens of MB each) stayed resident while the process sat between
    // turns: 8 turns of a 1.2k-token conversation (a 68 MB state) left 215–300 MB of anonymous
    // memory behind, ~4× the state. Freeing a state of 32 MiB or more now purges the allocator.
    requireNativeAddon();
    const out = runLoop<{ growthMb: number[]; stateMb: number }>(`
const v8 = await import('node:v8');
const vm = await import('node:vm');
v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc');
const anonMb = () => Number(/Anonymous:\\s+(\\d+)/.exec(readFileSync('/proc/self/smaps_rollup', 'utf8'))[1]) / 1024;
const turnIds = (n, salt) => Array.from({ length: n }, (_, i) => 100 + ((i * 7919 + salt * 104729) % 40000));
const warm = model.generate({ ids: turnIds(8, 0) }, { maxTokens: 2, temperature: 0 }, undefined);
while ((await warm.next()) !== null);
warm.dispose();
gc();
const base = anonMb();
let state;
const growthMb = [];
for (let turn = 0; turn < 8; turn++) {
  const generation = model.generate({ ids: turnIds(turn === 0 ? 1200 : 40, turn) }, { maxTokens: 8, temperature: 0 }, state);
  while ((await generation.next()) !== null);
  state = generation.exportState();
  generation.dispose();
  await new Promise((resolve) => setTimeout(resolve, 20));
  gc();
  growthMb.push(anonMb() - base);
}
console.log(JSON.stringify({ growthMb, stateMb: state.byteLength / 2 ** 20 }));`);
    console.log(`anonymous memory growth per turn ${out.growthMb.map((g) => g.toFixed(0)).join(', ')} MB, state ${out.stateMb.toFixed(0)} MB`);
    expect(out.stateMb).toBeGreaterThan(40);
    // The state in JS (and the previous one until its finaliser runs) plus the allocator's slack:
    // 1.8–1.9× the state here, against 3.2–4.4× before.
    expect(Math.max(...out.growthMb.slice(1))).toBeLessThan(2.5 * out.stateMb);
  }, 180_000);
});
