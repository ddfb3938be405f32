/**
 * `.gguf` models on the WASM binding, as natively: a path to the file (CLI `<model>`, `loadModelAt`),
 * a folder holding one, files in memory, and a reader that lists its files (the browser's file
 * picker) all give the model; its token ids, logits and greedy output equal the native addon's.
 *
 * Runs whenever the WASM build exists (`npm run build:wasm`); PHOENIX_REQUIRE_WASM=1 makes a missing
 * build a failure. The real SmolLM2-135M-Instruct Q4_1 file (`npm run models:fetch`) is checked when
 * present and skipped, visibly, when not.
 */
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, realpathSync } from 'node:fs';
import { copyFile, mkdir, readFile, symlink } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { defaultNativePath, loadBinding } from '../ts/binding/load.js';
import type { ModelFileReader, RawBinding, RawModel } from '../ts/binding/types.js';
import { MODELS_DIR, ROOT, WASM_BUILT, WASM_REQUIRED, expectCode, requireBackend, tempDir } from './helpers.js';

const FIXTURES = path.join(ROOT, 'test/fixtures');
/** Every tiny GGUF fixture (f32 and f16; llama, qwen2, mamba1, mamba2, granite hybrid). */
const TINY_GGUFS = readdirSync(FIXTURES)
  .filter((dir) => dir.startsWith('gguf-') && dir !== 'gguf-tokenizer')
  .flatMap((dir) => readdirSync(path.join(FIXTURES, dir)).filter((f) => f.endsWith('.gguf')).map((f) => path.join(FIXTURES, dir, f)))
  .sort();
const SMOLLM2_NAMED = path.join(MODELS_DIR, 'SmolLM2-135M-Instruct.Q4_1.gguf');
const HAVE_SMOLLM2 = existsSync(SMOLLM2_NAMED);
/** Where the file really is (a checkout may link it from a shared cache; a link out of the folder is refused). */
const SMOLLM2 = HAVE_SMOLLM2 ? realpathSync(SMOLLM2_NAMED) : SMOLLM2_NAMED;
if (!HAVE_SMOLLM2) console.warn(`wasm-gguf.test.ts: SmolLM2 checks skipped: ${SMOLLM2} is absent (npm run models:fetch)`);

const TEXTS = ['Hello, world!', '  leading spaces and\ttabs\n', 'Ünïcödé — 日本語 🙂', 'x = [1, 22, 333]; // code', '12345678901234567890'];

/**
 * The native addon in a child process whose kernels run at the baseline level (PHOENIX_SIMD=baseline):
 * the portable loops the WASM build compiles with simd128. `logits`: the logits of `ids`; `chat`: the
 * greedy reply's token ids to one user message.
 */
function nativeBaseline(file: string, task: { logits: number[] } | { chat: string; maxTokens: number }): Float32Array | number[] {
  const script = [
    "import { createRequire } from 'node:module';",
    'const addon = createRequire(import.meta.url)(process.env.ADDON);',
    'const task = JSON.parse(process.env.TASK);',
    'const model = await addon.loadModel(process.env.MODEL);',
    'if (task.logits) {',
    '  const logits = await model.logits(task.logits);',
    "  process.stdout.write(Buffer.from(logits.buffer, logits.byteOffset, logits.byteLength).toString('base64'));",
    '} else {',
    "  const generation = model.generateChat([{ role: 'user', content: task.chat }], { maxTokens: task.maxTokens, temperature: 0 });",
    '  const ids = [];',
    '  for (let step = await generation.next(); step; step = await generation.next()) if (step.tokenId !== null) ids.push(step.tokenId);',
    '  process.stdout.write(JSON.stringify(ids));',
    '}',
  ].join('\n');
  const env = { ...process.env, PHOENIX_SIMD: 'baseline', ADDON: defaultNativePath(), MODEL: file, TASK: JSON.stringify(task) };
  const run = spawnSync(process.execPath, ['--input-type=module', '-e', script], { env, encoding: 'utf8', maxBuffer: 1 << 30 });
  if (run.status !== 0) throw new Error(`native baseline run failed: ${run.stderr}`);
  if ('chat' in task) return JSON.parse(run.stdout) as number[];
  const bytes = Buffer.from(run.stdout, 'base64');
  return new Float32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength / 4);
}

/**
 * Logits from {@link nativeBaseline}. They still differ from WASM's in the last bits: transcendental
 * functions come from different math libraries (glibc natively, Rust's libm on wasm32) and the
 * prefill GEMM (the `gemm` crate) picks its own x86 kernels at run time.
 */
function nativeBaselineLogits(file: string, ids: number[]): Float32Array {
  return nativeBaseline(file, { logits: ids }) as Float32Array;
}

const OBJDUMP = process.env.PHOENIX_WASM_OBJDUMP ?? 'wasm-objdump';
const HAVE_OBJDUMP = spawnSync(OBJDUMP, ['--version'], { encoding: 'utf8' }).status === 0;
if (!HAVE_OBJDUMP) console.warn(`wasm-gguf.test.ts: the quantized-kernel SIMD check is skipped: ${OBJDUMP} not found (apt-get install wabt)`);

/** SIMD instructions (`i32x4.mul`, …) per function of a wasm-objdump disassembly (names from its name section). */
function simdByFunction(disassembly: string): Map<string, Map<string, number>> {
  const byFunction = new Map<string, Map<string, number>>();
  let current = new Map<string, number>();
  for (const line of disassembly.split('\n')) {
    const header = /^[0-9a-f]+ func\[\d+\] <(.*)>:$/.exec(line);
    if (header) byFunction.set(header[1] as string, (current = new Map()));
    const op = /\b((?:i8x16|i16x8|i32x4|f32x4|v128)\.\w+)/.exec(line)?.[1];
    if (op && !header) current.set(op, (current.get(op) ?? 0) + 1);
  }
  return byFunction;
}

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let max = 0;
  for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs((a[i] as number) - (b[i] as number)));
  return max;
}

function argmaxes(logits: Float32Array, vocab: number): number[] {
  const out: number[] = [];
  for (let row = 0; row * vocab < logits.length; row++) {
    let best = 0;
    for (let v = 1; v < vocab; v++) if ((logits[row * vocab + v] as number) > (logits[row * vocab + best] as number)) best = v;
    out.push(best);
  }
  return out;
}

async function greedyIds(model: RawModel, ids: number[], maxTokens: number): Promise<number[]> {
  const generation = model.generate({ ids }, { maxTokens, temperature: 0 });
  const out: number[] = [];
  for (let step = await generation.next(); step; step = await generation.next()) if (step.tokenId != null) out.push(step.tokenId);
  return out;
}

async function chatAnswer(model: RawModel, question: string, maxTokens: number): Promise<{ ids: number[]; text: string }> {
  const generation = model.generateChat([{ role: 'user', content: question }], { maxTokens, temperature: 0 });
  const ids: number[] = [];
  let text = '';
  for (let step = await generation.next(); step; step = await generation.next()) {
    if (step.tokenId != null) ids.push(step.tokenId);
    text += step.text;
  }
  return { ids, text };
}

/** A reader of `files` that records what it was asked for; with `list`, it lists its names (a file picker). */
function recordingReader(files: Record<string, Uint8Array>, list: boolean): { read: ModelFileReader; asked: string[] } {
  const asked: string[] = [];
  const read = async (name: string) => {
    asked.push(name);
    return files[name] ?? null;
  };
  return { read: list ? Object.assign(read, { fileNames: Object.keys(files) }) : read, asked };
}

describe.runIf(WASM_BUILT || WASM_REQUIRED)('GGUF models on the WASM binding', () => {
  const bindings: Record<'native' | 'wasm', RawBinding> = {} as never;
  /** Max |Δ| of the logits, native vs WASM, per fixture (printed at the end). */
  const measured: string[] = [];

  afterAll(() => {
    if (measured.length > 0) console.info(`native vs WASM logits, max |Δ|:\n  ${measured.join('\n  ')}`);
  });

  beforeAll(async () => {
    requireBackend('native');
    requireBackend('wasm');
    bindings.native = (await loadBinding({ backend: 'native' })).binding;
    bindings.wasm = (await loadBinding({ backend: 'wasm' })).binding;
  });

  it('finds the tiny GGUF fixtures', () => {
    expect(TINY_GGUFS.length).toBeGreaterThanOrEqual(10);
  });

  it.each(TINY_GGUFS.map((file) => [path.relative(FIXTURES, file), file]))(
    '%s: a path to the file describes and loads as natively; ids, argmax and greedy output equal, logits within 1e-4',
    async (_, file) => {
      const [layoutNative, layoutWasm] = [await bindings.native.describeModel(file), await bindings.wasm.describeModel(file)];
      expect(layoutWasm).toEqual(layoutNative);
      expect(layoutWasm.format).toBe('gguf');
      expect(layoutWasm.weightFiles).toEqual([path.basename(file)]);

      const [native, wasm] = [await bindings.native.loadModel(file), await bindings.wasm.loadModel(file)];
      try {
        expect(wasm.info()).toEqual(native.info());
        for (const text of TEXTS) expect(await wasm.tokenize(text, true), text).toEqual(await native.tokenize(text, true));
        const ids = await native.tokenize(TEXTS.join(' '), true);
        const [ln, lw] = [await native.logits(ids), await wasm.logits(ids)];
        expect(lw.length).toBe(ln.length);
        // Native picks AVX2 / AVX-512 kernels (wider lanes, another summation order) and glibc's
        // exp; WASM the portable loops and libm: within f32 rounding, never a different choice.
        const diff = { simd: maxAbsDiff(ln, lw), baseline: maxAbsDiff(nativeBaselineLogits(file, ids), lw) };
        measured.push(`${path.basename(file)}: ${diff.simd.toExponential(1)} (native baseline ${diff.baseline.toExponential(1)})`);
        expect(diff.simd).toBeLessThan(1e-4);
        expect(diff.baseline).toBeLessThan(1e-4);
        expect(argmaxes(lw, native.info().vocabSize)).toEqual(argmaxes(ln, native.info().vocabSize));
        expect(await greedyIds(wasm, ids.slice(0, 8), 12)).toEqual(await greedyIds(native, ids.slice(0, 8), 12));
      } finally {
        native.dispose();
        wasm.dispose();
      }
    },
  );

  it('every source form gives the same model: folder holding one .gguf, bytes in memory, a listing reader', async () => {
    const file = TINY_GGUFS.find((f) => f.endsWith('llama-tiny.f32.gguf')) as string;
    const name = path.basename(file);
    const bytes = new Uint8Array(await readFile(file));
    const scratch = await tempDir();
    try {
      await copyFile(file, path.join(scratch.dir, name));
      const byPath = await bindings.wasm.loadModel(file);
      const ids = await byPath.tokenize('The quick brown fox', true);
      const expected = await byPath.logits(ids);
      byPath.dispose();

      const reader = recordingReader({ [name]: bytes, 'README.md': new Uint8Array([35]) }, true);
      const sources = [scratch.dir, { [name]: bytes }, new Map([[name, new Blob([bytes])]]), reader.read];
      for (const source of sources) {
        const model = await bindings.wasm.loadModel(source);
        expect(maxAbsDiff(await model.logits(ids), expected), String(source)).toBe(0);
        model.dispose();
      }
      // The reader is asked for the files beside a GGUF (tokenizer, chat template) and the file once;
      // never for config.json, a weight container of a folder, or files the model does not use.
      expect(reader.asked).toEqual(['tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja', name]);
      expect((await bindings.wasm.describeModel(scratch.dir)).gguf?.architecture).toBe('llama');
      expect((await bindings.wasm.describeModel(recordingReader({ [name]: bytes }, true).read)).weightFiles).toEqual([name]);
    } finally {
      await scratch.cleanup();
    }
  });

  it('fails as natively: a non-GGUF file path, a folder of two .gguf, a reader that cannot list its files', async () => {
    const notModel = path.join(ROOT, 'package.json');
    const two = path.join(FIXTURES, 'gguf-llama-tiny');
    for (const source of [notModel, two]) {
      const [n, w] = [await expectCode(bindings.native.loadModel(source), 'E_MODEL_NOT_FOUND'), await expectCode(bindings.wasm.loadModel(source), 'E_MODEL_NOT_FOUND')];
      expect(w.message).toBe(n.message);
      const d = await expectCode(bindings.wasm.describeModel(source), 'E_MODEL_NOT_FOUND');
      expect(d.message).toBe(n.message);
    }
    // A .gguf linked from outside the folder holding the link (and its parent): named by its path, it
    // is the model the caller chose and the link is followed (a Hugging Face cache snapshot links into
    // ../../blobs); found in a folder, it is refused, by both bindings alike.
    const scratch = await tempDir();
    try {
      const inner = path.join(scratch.dir, 'models', 'm');
      await mkdir(inner, { recursive: true });
      const link = path.join(inner, 'linked.gguf');
      await symlink(TINY_GGUFS[0] as string, link);
      const [n, w] = [await bindings.native.loadModel(link), await bindings.wasm.loadModel(link)];
      expect(w.info()).toEqual(n.info());
      expect(await w.tokenize('Hello, world!', false)).toEqual(await n.tokenize('Hello, world!', false));
      [n, w].forEach((m) => m.dispose());
      const nf = await expectCode(bindings.native.loadModel(inner), 'E_BAD_WEIGHTS');
      const wf = await expectCode(bindings.wasm.loadModel(inner), 'E_BAD_WEIGHTS');
      expect(wf.message).toBe(nf.message);
      expect(wf.message).toMatch(/resolves outside the model folder/);
    } finally {
      await scratch.cleanup();
    }
    // Without a listing the core cannot know a .gguf is there: it asks for a folder's files and says what is missing.
    const file = TINY_GGUFS[0] as string;
    const blind = recordingReader({ [path.basename(file)]: new Uint8Array(await readFile(file)) }, false);
    await expectCode(bindings.wasm.loadModel(blind.read), 'E_MODEL_NOT_FOUND');
    expect(blind.asked).not.toContain(path.basename(file));
  });

  it.runIf(HAVE_OBJDUMP)('the quantized kernels are vectorised in the WASM build (simd128)', () => {
    const run = spawnSync(OBJDUMP, ['-d', path.join(ROOT, 'wasm/node/phoenix_local_core_bg.wasm')], { encoding: 'utf8', maxBuffer: 1 << 30 });
    expect(run.status, run.stderr).toBe(0);
    const simd = simdByFunction(run.stdout);
    // Functions whose name holds `fragment` (the kernels are kept out of line under these names).
    const count = (fragment: string, ops: RegExp): number =>
      [...simd].filter(([name]) => name.includes(fragment)).reduce((sum, [, byOp]) => sum + [...byOp].filter(([op]) => ops.test(op)).reduce((n, [, c]) => n + c, 0), 0);
    // Quantized activation × quantized weights: 8-bit blocks widened to i16, multiplied and summed in
    // pairs by `i32x4.dot_i16x8_s` (the `pmaddwd` of WASM), then added in i32x4 lanes.
    expect(count('ops::quant::formats::rows', /^i32x4\.dot_i16x8_s$/), 'i32x4.dot_i16x8_s in the quantized mat-vec').toBeGreaterThan(8);
    expect(count('ops::quant::formats::rows', /^i32x4\.add$/), 'i32x4.add in the quantized mat-vec').toBeGreaterThan(8);
    // The logits head (f32 activation × dequantized blocks) and dequantization: f32x4 arithmetic.
    expect(count('ops::quant::formats::exact_rows', /^f32x4\.(add|mul)$/), 'f32x4 arithmetic in the exact quantized rows').toBeGreaterThan(32);
  });

  describe.runIf(HAVE_SMOLLM2)(`the real SmolLM2-135M-Instruct Q4_1 file${HAVE_SMOLLM2 ? '' : ' (skipped: absent, npm run models:fetch)'}`, () => {
    let native: RawModel;
    let wasm: RawModel;

    beforeAll(async () => {
      native = await bindings.native.loadModel(SMOLLM2);
      wasm = await bindings.wasm.loadModel(SMOLLM2);
    });

    afterAll(() => {
      native?.dispose();
      wasm?.dispose();
    });

    it('describes and tokenizes as natively', async () => {
      const [dn, dw] = [await bindings.native.describeModel(SMOLLM2), await bindings.wasm.describeModel(SMOLLM2)];
      expect(dw).toEqual(dn);
      expect(dw.gguf?.quantization).toBe('Q4_1');
      expect(wasm.info()).toEqual(native.info());
      for (const text of TEXTS) expect(await wasm.tokenize(text, false), text).toEqual(await native.tokenize(text, false));
    });

    it('logits on a chat-formatted prompt: the same argmax at every position, max |Δ| under 1e-3; greedy chat as native at the same SIMD level', async () => {
      const prompt = wasm.renderChat([{ role: 'user', content: 'What is the capital of France?' }], true);
      expect(prompt).toEqual(native.renderChat([{ role: 'user', content: 'What is the capital of France?' }], true));
      const ids = await native.tokenize(prompt.text, false);
      const [ln, lw] = [await native.logits(ids), await wasm.logits(ids)];
      const vocab = native.info().vocabSize;
      const diff = { simd: maxAbsDiff(ln, lw), baseline: maxAbsDiff(nativeBaselineLogits(SMOLLM2, ids), lw) };
      measured.push(`SmolLM2 Q4_1, ${ids.length} positions: ${diff.simd.toExponential(1)} (native baseline ${diff.baseline.toExponential(1)})`);
      // Quantized kernels: the integer block dots are exact everywhere; native's AVX2/AVX-512 loops
      // sum the blocks' f32 partials in another order than the portable loops WASM runs (simd128).
      expect(diff.simd).toBeLessThan(1e-3);
      expect(diff.baseline).toBeLessThan(1e-3);
      expect(argmaxes(lw, vocab)).toEqual(argmaxes(ln, vocab));

      // Later steps of a greedy reply are one-row products whose activation is rounded to 8 bits
      // (llama.cpp's way; the first sample keeps f32): native's AVX-512 VNNI loops and the portable
      // loops WASM shares with native's baseline level may pick differently at a near-tie. Against
      // the same loops, WASM's reply is the same token for token.
      const question = 'What is the capital of France?';
      const [an, aw] = [await chatAnswer(native, question, 24), await chatAnswer(wasm, question, 24)];
      const baseline = nativeBaseline(SMOLLM2, { chat: question, maxTokens: 24 });
      measured.push(`SmolLM2 chat: WASM ${JSON.stringify(aw.text)}; native ${JSON.stringify(an.text)}`);
      expect(aw.ids).toEqual(baseline);
      expect(aw.text).toMatch(/Paris/);
      expect(an.text).toMatch(/Paris/);
    });
  });
});
