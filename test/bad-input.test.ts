/**
 * Every bad input gives its typed error code, and the process keeps working afterwards.
 * Broken model folders are built from the real fixtures in a temp dir.
 */
import { spawnSync } from 'node:child_process';
import { chmod, mkdir, readFile, rm, symlink, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import type { ErrorCode, PhoenixError } from '../ts/binding/errors.js';
import { loadBinding } from '../ts/binding/load.js';
import { MambaSSMEngine } from '../ts/engines/mamba-engine.js';
import { readStateFile } from '../ts/engines/state-file.js';
import type { GenerationOptions, LoadedModel } from '../ts/engines/types.js';
import { LocalModelManager } from '../ts/models/manager.js';
import {
  DAMAGES,
  LITE,
  ROOT,
  TINY,
  TINY_ORIGINAL,
  brokenTiny,
  copyModel,
  expectCode,
  readJson,
  readSafetensors,
  TEST_BACKENDS,
  requireBackend,
  tempDir,
  writeSafetensors,
} from './helpers.js';

describe.each(TEST_BACKENDS)('on the %s binding', (backend) => {
  let scratch: Awaited<ReturnType<typeof tempDir>>;
  let modelsDir: string;
  let manager: LocalModelManager;
  let engine: MambaSSMEngine;
  let lite: LoadedModel;

  beforeAll(async () => {
    requireBackend(backend);
    scratch = await tempDir();
    modelsDir = path.join(scratch.dir, 'models');
    await mkdir(modelsDir);
    for (const { name, damage } of DAMAGES) await brokenTiny(modelsDir, name, damage);
    await copyModel(TINY_ORIGINAL, path.join(modelsDir, 'no-tokenizer'));
    await copyModel(LITE, path.join(modelsDir, 'lite'));
    engine = new MambaSSMEngine({ binding: await loadBinding({ backend }) });
    manager = new LocalModelManager({ modelsDir, engines: [engine], measurePerformance: false });
    lite = await manager.loadModel('lite');
  });

  afterAll(async () => {
    manager?.dispose();
    await scratch?.cleanup();
  });

  /** After each failure the same process must still generate correctly. */
  async function stillAlive(): Promise<void> {
    const result = await engine.predict(lite, 'Once upon a time', { maxTokens: 3, temperature: 0 });
    expect(result.generatedTokens).toBe(3);
  }

  describe('broken model folders', () => {
    for (const { name, code } of DAMAGES) {
      it(`${name} → ${code} (manager and binding), process alive`, async () => {
        const error = await expectCode(manager.loadModel(name), code);
        expect(error.message.length).toBeGreaterThan(10);
        const metadata = await manager.getModelMetadata(name);
        expect(metadata.status).toBe('error');
        expect(metadata.error?.code).toBe(code);
        await stillAlive();
      });
    }

    // Native only: a WASM reader hands describe no weight bytes (its load checks the same header).
    it.runIf(backend === 'native')('a truncated safetensors is listed as an error before any load: describe checks the header against the file', async () => {
      const fresh = new LocalModelManager({ modelsDir, engines: [engine], measurePerformance: false });
      try {
        const metadata = await fresh.getModelMetadata('truncated-safetensors');
        expect(metadata.status).toBe('error');
        expect(metadata.error?.code).toBe('E_BAD_WEIGHTS');
        expect(metadata.error?.message).toMatch(/model\.safetensors.*truncated/);
        const listed = (await fresh.listModels()).find((m) => m.name === 'truncated-safetensors');
        expect(listed?.status).toBe('error');
      } finally {
        fresh.dispose();
      }
    });

    it.runIf(backend === 'native')('useMmap: false reads the weights into memory: a file truncated in place under the loaded model changes nothing', async () => {
      const own = path.join(scratch.dir, 'no-mmap-models');
      await mkdir(own);
      const dir = await copyModel(TINY, path.join(own, 'tiny'));
      const metadata = await new LocalModelManager({ modelsDir: own, engines: [engine], measurePerformance: false }).getModelMetadata('tiny');
      const binding = await loadBinding({ backend });
      const greedy = { maxTokens: 6, temperature: 0 };
      const mapped = await new MambaSSMEngine({ binding }).loadModel(metadata);
      const expected = (await engine.predict(mapped, { ids: [1, 2, 3] }, greedy)).tokenIds;
      mapped.dispose();
      const reading = new MambaSSMEngine({ binding, useMmap: false });
      const held = await reading.loadModel(metadata);
      await truncate(path.join(dir, 'model.safetensors'), 100);
      expect((await reading.predict(held, { ids: [1, 2, 3] }, greedy)).tokenIds).toEqual(expected);
      held.dispose();
      await expectCode(reading.loadModel(metadata), 'E_BAD_WEIGHTS');
      await expectCode(new MambaSSMEngine({ binding, useMmap: 'no' } as never).loadModel(metadata), 'E_INVALID_OPTION');
      await stillAlive();
    });

    it('the core itself reports the weight/config errors with the file or tensor named', async () => {
      const { binding } = await engine.binding();
      const missing = await expectCode(binding.loadModel(path.join(modelsDir, 'missing-tensor')), 'E_BAD_WEIGHTS');
      expect(missing.message).toContain('backbone.layers.1.mixer.x_proj.weight');
      const shape = await expectCode(binding.loadModel(path.join(modelsDir, 'wrong-tensor-shape')), 'E_BAD_WEIGHTS');
      expect(shape.message).toContain('norm_f');
      const truncated = await expectCode(binding.loadModel(path.join(modelsDir, 'truncated-safetensors')), 'E_BAD_WEIGHTS');
      expect(truncated.message).toContain('model.safetensors');
      const config = await expectCode(binding.loadModel(path.join(modelsDir, 'malformed-config')), 'E_BAD_CONFIG');
      expect(config.message).toContain('config.json');
      await expectCode(binding.loadModel(path.join(modelsDir, 'unknown-model-type')), 'E_UNSUPPORTED_MODEL');
      await stillAlive();
    });

    it('a missing folder → E_MODEL_NOT_FOUND', async () => {
      await expectCode(manager.loadModel('not-there'), 'E_MODEL_NOT_FOUND');
      await expectCode(manager.loadModelAt(path.join(scratch.dir, 'not-there')), 'E_MODEL_NOT_FOUND');
      const { binding } = await engine.binding();
      await expectCode(binding.loadModel(path.join(scratch.dir, 'not-there')), 'E_MODEL_NOT_FOUND');
      await stillAlive();
    });

    it('an unreadable folder → E_MODEL_NOT_FOUND naming it (checked as an unprivileged user when run as root)', async () => {
      const folder = await copyModel(TINY, path.join(scratch.dir, 'unreadable'));
      await chmod(folder, 0o000);
      try {
        const isRoot = process.getuid?.() === 0;
        if (!isRoot) {
          const error = await expectCode(manager.loadModelAt(folder), 'E_MODEL_NOT_FOUND');
          expect(error.message).toContain(folder);
        } else {
          // Root reads anything: run the CLI (compiled by the cli test, or here) as `nobody`.
          spawnSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', path.join(ROOT, 'tsconfig.json')], { cwd: ROOT });
          const child = spawnSync(process.execPath, [path.join(ROOT, 'bin/phoenix-local.js'), 'info', folder, '--no-load'], {
            cwd: scratch.dir,
            uid: 65534,
            gid: 65534,
            encoding: 'utf8',
            env: { ...process.env, PHOENIX_MODELS_DIR: modelsDir, PHOENIX_BACKEND: backend },
          });
          expect(child.stderr).toContain('E_MODEL_NOT_FOUND');
          expect(child.stderr).toContain(folder);
          expect(child.status).toBe(1);
        }
      } finally {
        await chmod(folder, 0o755);
      }
      await stillAlive();
    });

    it('a text prompt on a model without tokenizer.json → E_TOKENIZER; ids work', async () => {
      const model = await manager.loadModel('no-tokenizer');
      expect(model.info.hasTokenizer).toBe(false);
      const error = await expectCode(engine.predict(model, 'hello', { maxTokens: 2 }), 'E_TOKENIZER');
      expect(error.message).toMatch(/tokenizer/);
      await expectCode(engine.score(model, 'hello'), 'E_TOKENIZER');
      await expectCode(async () => model.tokenize('hello'), 'E_TOKENIZER');
      await expectCode(async () => model.detokenize([1, 2]), 'E_TOKENIZER');
      expect((await engine.predict(model, { ids: [1, 2, 3] }, { maxTokens: 2 })).generatedTokens).toBe(2);
      await stillAlive();
    });

    it('names that leave the models dir → E_INVALID_OPTION naming them', async () => {
      await symlink('/etc', path.join(modelsDir, 'etc-link'));
      for (const name of ['../models', '../../etc', '/etc/passwd', 'lite/../../x', 'etc-link']) {
        const error = await expectCode(manager.loadModel(name), 'E_INVALID_OPTION');
        expect(error.message).toContain(JSON.stringify(name));
      }
      await stillAlive();
    });

    it('hostile folders (huge layer count, shard outside the folder, NaN in A_log) → typed core errors, process alive', async () => {
      const { binding } = await engine.binding();
      const hostile = path.join(scratch.dir, 'hostile');
      await mkdir(hostile, { recursive: true });
      const layers = await brokenTiny(hostile, 'layers', async (f) => {
        const config = JSON.parse(await readFile(path.join(f, 'config.json'), 'utf8'));
        await writeFile(path.join(f, 'config.json'), JSON.stringify({ ...config, num_hidden_layers: 100_000_000 }));
      });
      expect((await expectCode(binding.loadModel(layers), 'E_BAD_CONFIG')).message).toContain('num_hidden_layers');
      const outside = path.join(scratch.dir, 'outside.safetensors');
      const shard = await brokenTiny(hostile, 'shard', async (f) => {
        const { tensors } = await readSafetensors(path.join(f, 'model.safetensors'));
        await writeSafetensors(outside, tensors);
        const weight_map = Object.fromEntries([...tensors.keys()].map((name) => [name, outside]));
        await writeFile(path.join(f, 'model.safetensors.index.json'), JSON.stringify({ weight_map }));
        await rm(path.join(f, 'model.safetensors'));
      });
      expect((await expectCode(binding.loadModel(shard), 'E_BAD_WEIGHTS')).message).toContain('plain file name');
      const nan = await brokenTiny(hostile, 'nan', async (f) => {
        const file = path.join(f, 'model.safetensors');
        const { tensors, metadata } = await readSafetensors(file);
        tensors.get('backbone.layers.0.mixer.A_log')!.data.writeFloatLE(Number.NaN, 4);
        await writeSafetensors(file, tensors, metadata);
      });
      expect((await expectCode(binding.loadModel(nan), 'E_BAD_WEIGHTS')).message).toContain('backbone.layers.0.mixer.A_log');
      await stillAlive();
    });

    it('files that are FIFOs, folders, dangling links or links out of the folder → the core typed error (native and WASM alike), no hang', async () => {
      const { binding } = await engine.binding();
      const native = await loadBinding({ backend: 'native' });
      const hostile = path.join(scratch.dir, 'hostile-files');
      await mkdir(hostile, { recursive: true });
      const cases: { name: string; code: ErrorCode; says: string; damage: (f: string) => Promise<void> }[] = [
        {
          name: 'fifo-tokenizer',
          code: 'E_TOKENIZER',
          says: 'not a regular file',
          damage: async (f) => {
            await rm(path.join(f, 'tokenizer.json'), { force: true });
            spawnSync('mkfifo', [path.join(f, 'tokenizer.json')]);
          },
        },
        {
          name: 'fifo-weights',
          code: 'E_BAD_WEIGHTS',
          says: 'not a regular file',
          damage: async (f) => {
            await rm(path.join(f, 'model.safetensors'));
            spawnSync('mkfifo', [path.join(f, 'model.safetensors')]);
          },
        },
        {
          name: 'folder-config',
          code: 'E_BAD_CONFIG',
          says: 'not a regular file',
          damage: async (f) => {
            await rm(path.join(f, 'config.json'));
            await mkdir(path.join(f, 'config.json'));
          },
        },
        {
          name: 'config-outside',
          code: 'E_BAD_CONFIG',
          says: 'resolves outside the model folder',
          damage: async (f) => {
            await rm(path.join(f, 'config.json'));
            await symlink('/etc/passwd', path.join(f, 'config.json'));
          },
        },
        {
          name: 'fifo-index',
          code: 'E_BAD_WEIGHTS',
          says: 'not a regular file',
          damage: async (f) => {
            await rm(path.join(f, 'model.safetensors'));
            spawnSync('mkfifo', [path.join(f, 'model.safetensors.index.json')]);
          },
        },
        {
          name: 'dangling-weights',
          code: 'E_MODEL_NOT_FOUND',
          says: 'dangling link',
          damage: async (f) => {
            await rm(path.join(f, 'model.safetensors'));
            await symlink(path.join(f, 'nowhere'), path.join(f, 'model.safetensors'));
          },
        },
      ];
      for (const { name, code, says, damage } of cases) {
        const folder = await brokenTiny(hostile, name, damage);
        const error = await expectCode(binding.loadModel(folder), code);
        expect(error.message, name).toContain(says);
        expect(error.message, name).not.toContain('root:');
        // The WASM reader applies the core's rules where the files are and lets the core word the error.
        const reference = await expectCode(native.binding.loadModel(folder), code);
        expect(error.message, name).toBe(reference.message);
        // Describing (no weights read) agrees too: the same layout, or the same error.
        const outcome = (describing: Promise<unknown>): Promise<unknown> => describing.catch((e: PhoenixError) => ({ code: e.code, message: e.message }));
        expect(await outcome(binding.describeModel(folder)), name).toEqual(await outcome(native.binding.describeModel(folder)));
      }
      await stillAlive();
    });
  });

  describe('bad prompts and options', () => {
    it('engine.checkOptions refuses out-of-range options without a model', async () => {
      for (const options of [{ temperature: -1 }, { seed: -3 }, { topK: -5 }, { maxTokens: 0 }] as GenerationOptions[]) {
        const error = await expectCode(engine.checkOptions(options), 'E_INVALID_OPTION');
        expect(error.message).toMatch(new RegExp(`option \`${Object.keys(options)[0]}\``));
      }
      await engine.checkOptions({ temperature: 0.7, seed: 3, stopTokenIds: [1_000_000] });
    });

    it('empty prompt → E_INVALID_OPTION (text or ids, with or without a tokenizer)', async () => {
      const error = await expectCode(engine.predict(lite, '', { maxTokens: 2 }), 'E_INVALID_OPTION');
      expect(error.message).toMatch(/empty/);
      await expectCode(engine.predict(lite, { text: '' }, { maxTokens: 2 }), 'E_INVALID_OPTION');
      await expectCode(engine.predict(lite, { ids: [] }, { maxTokens: 2 }), 'E_INVALID_OPTION');
      await expectCode(engine.score(lite, { ids: [] }), 'E_INVALID_OPTION');
      await expectCode(engine.score(lite, ''), 'E_INVALID_OPTION');
      const tiny = await manager.loadModel('no-tokenizer');
      await expectCode(engine.predict(tiny, { ids: [] }, { maxTokens: 2 }), 'E_INVALID_OPTION');
      // Unconditional generation is explicit: the BOS id as the prompt.
      expect((await engine.predict(lite, { ids: [0] }, { maxTokens: 2 })).promptTokens).toBe(1);
      await stillAlive();
    });

    const outOfRange: [string, GenerationOptions][] = [
      ['maxTokens', { maxTokens: 0 }],
      ['maxTokens', { maxTokens: -5 }],
      ['maxTokens', { maxTokens: 1.5 }],
      ['maxTokens', { maxTokens: Number.POSITIVE_INFINITY }],
      ['temperature', { temperature: -1 }],
      ['temperature', { temperature: Number.NaN }],
      ['topK', { topK: -1 }],
      ['topP', { topP: 0 }],
      ['topP', { topP: 1.5 }],
      ['minP', { minP: -0.1 }],
      ['minP', { minP: 2 }],
      ['repeatPenalty', { repeatPenalty: 0 }],
      ['repeatLastN', { repeatLastN: -1 }],
      ['seed', { seed: -1 }],
      ['seed', { seed: 0.5 }],
      ['stopTokenIds', { stopTokenIds: [4096] }],
      ['stop', { stop: [''] }],
      ['maxTokens', { maxTokens: '10' as unknown as number }],
      ['stop', { stop: 'x' as unknown as string[] }],
      ['stopTokenIds', { stopTokenIds: [-1] }],
      ['state', { state: 'bytes' as unknown as Uint8Array }],
      ['signal', { signal: {} as AbortSignal }],
    ];
    for (const [option, options] of outOfRange) {
      it(`${option} ${JSON.stringify(options, (_k, v) => (typeof v === 'number' && !Number.isFinite(v) ? String(v) : v))} → E_INVALID_OPTION naming it`, async () => {
        const error = await expectCode(engine.predict(lite, 'Once', options), 'E_INVALID_OPTION');
        const named = option === 'stop' ? /stop/ : new RegExp(option);
        expect(error.message).toMatch(named);
      });
    }

    it('an out-of-range number is quoted as the caller wrote it, not as converted (Infinity, 1e+300, 2^64)', async () => {
      const cases: [GenerationOptions, string][] = [
        [{ maxTokens: 1e300 }, 'got 1e+300'],
        [{ maxTokens: 2 ** 64 }, `got ${String(2 ** 64)}`],
        [{ topK: 2 ** 64 }, `got ${String(2 ** 64)}`],
        [{ temperature: Number.POSITIVE_INFINITY }, 'got Infinity'],
        [{ topP: Number.NaN }, 'got NaN'],
        [{ seed: 1e300 }, 'got 1e+300'],
      ];
      for (const [options, quoted] of cases) {
        const error = await expectCode(engine.predict(lite, 'Once', options), 'E_INVALID_OPTION');
        expect(error.message.endsWith(quoted), `${error.message} (wanted …${quoted})`).toBe(true);
      }
      // A finite temperature beyond f32's range is a very flat distribution, not infinity.
      expect((await engine.predict(lite, 'Once', { temperature: 1e300, maxTokens: 2, seed: 1 })).generatedTokens).toBe(2);
      // …and a positive topP below f32's smallest is still inside (0, 1], not rounded to 0 and refused.
      expect((await engine.predict(lite, 'Once', { topP: 1e-300, temperature: 1, maxTokens: 2, seed: 1 })).generatedTokens).toBe(2);
    });

    it('prompt ids outside the vocabulary or of the wrong type → E_INVALID_OPTION', async () => {
      await expectCode(engine.predict(lite, { ids: [4096] }), 'E_INVALID_OPTION');
      await expectCode(engine.predict(lite, { ids: [-1] }), 'E_INVALID_OPTION');
      await expectCode(engine.score(lite, { ids: [1, 99999] }), 'E_INVALID_OPTION');
      await expectCode(engine.predict(lite, 42 as unknown as string), 'E_INVALID_OPTION');
      await stillAlive();
    });

    it('a model from another engine instance is still accepted; a foreign object is not', async () => {
      const other = new MambaSSMEngine({ binding: engine.binding() });
      expect((await other.predict(lite, 'Once', { maxTokens: 1 })).generatedTokens).toBe(1);
      await expectCode(engine.predict({ name: 'fake' } as unknown as LoadedModel, 'Once'), 'E_INVALID_OPTION');
    });
  });

  describe('hostile snapshots, tokenizers and weights', () => {
    /** A copy of mamba1-tiny whose tensor `name` has every value replaced by `f(value)`. */
    async function tinyWithTensor(name: string, folder: string, f: (v: number) => number): Promise<string> {
      const dir = await copyModel(TINY, path.join(scratch.dir, folder));
      const file = path.join(dir, 'model.safetensors');
      const { tensors, metadata } = await readSafetensors(file);
      const t = tensors.get(name);
      if (!t || t.dtype !== 'F32') throw new Error(`fixture lacks f32 ${name}`);
      const values = new Float32Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.length));
      tensors.set(name, { ...t, data: Buffer.from(Float32Array.from(values, f).buffer) });
      await writeSafetensors(file, tensors, metadata);
      return dir;
    }

    async function liteState(): Promise<Uint8Array> {
      const head = await engine.predict(lite, 'Once upon a time', { maxTokens: 2, temperature: 0, returnState: true });
      return head.state as Uint8Array;
    }

    it('state files are read as regular files of exactly the length their header announces', async () => {
      const state = await liteState();
      const file = path.join(scratch.dir, 'lite.state');
      await writeFile(file, state);
      expect(Buffer.from(await readStateFile(file, lite)).equals(Buffer.from(state))).toBe(true);

      // Never-ending or special files are refused without reading (before: read until out of memory / hang).
      await expectCode(readStateFile('/dev/zero', lite), 'E_INVALID_OPTION');
      await expectCode(readStateFile(scratch.dir, lite), 'E_INVALID_OPTION');
      // Without the model it belongs to (which bounds the read), or with a path that is not a string.
      expect((await expectCode(readStateFile(file, undefined as never), 'E_INVALID_OPTION')).message).toMatch(/give the loaded model the state belongs to/);
      await expectCode(readStateFile(42 as never, lite), 'E_INVALID_OPTION');
      const fifo = path.join(scratch.dir, 'state.fifo');
      expect(spawnSync('mkfifo', [fifo]).status).toBe(0);
      await expectCode(readStateFile(fifo, lite), 'E_INVALID_OPTION');

      // Longer or shorter than announced, or a header announcing a huge history: refused.
      await writeFile(file, Buffer.concat([state, Buffer.alloc(1 << 20)]));
      expect((await expectCode(readStateFile(file, lite), 'E_STATE_MISMATCH')).message).toContain(`${state.length}`);
      await writeFile(file, state.subarray(0, state.length - 1));
      await expectCode(readStateFile(file, lite), 'E_STATE_MISMATCH');
      const huge = Buffer.from(state);
      huge.writeUInt32LE(0xffffffff, 28);
      await writeFile(file, huge);
      await expectCode(readStateFile(file, lite), 'E_STATE_MISMATCH');
      await writeFile(file, Buffer.alloc(10));
      await expectCode(readStateFile(file, lite), 'E_STATE_MISMATCH');
      await stillAlive();
    });

    it('a snapshot with one flipped byte, or from the same shape with other weights → E_STATE_MISMATCH', async () => {
      const state = await liteState();
      for (const at of [20, 50, Math.floor(state.length / 2), state.length - 1]) {
        const bad = Uint8Array.from(state);
        bad[at] = (bad[at] as number) ^ 0x01;
        await expectCode(engine.predict(lite, '', { state: bad, maxTokens: 1 }), 'E_STATE_MISMATCH');
      }
      const tiny = await manager.loadModelAt(TINY);
      const other = await manager.loadModelAt(await tinyWithTensor('backbone.norm_f.weight', 'tiny-other-weights', (v) => v * 1.5));
      const tinyState = (await engine.predict(tiny, { ids: [1, 2, 3] }, { maxTokens: 2, temperature: 0, returnState: true })).state as Uint8Array;
      await expectCode(() => other.snapshotLength(tinyState.subarray(0, other.info.snapshotHeaderBytes)), 'E_STATE_MISMATCH');
      expect(tiny.snapshotLength(tinyState.subarray(0, tiny.info.snapshotHeaderBytes))).toBe(tinyState.length);
      const error = await expectCode(engine.predict(other, { ids: [] }, { state: tinyState, maxTokens: 1 }), 'E_STATE_MISMATCH');
      expect(error.message).toContain('other weights');
      expect((await engine.predict(tiny, { ids: [] }, { state: tinyState, maxTokens: 1 })).generatedTokens).toBe(1);
      await stillAlive();
    });

    it('weights whose logits overflow → E_BAD_WEIGHTS naming the position, never null or a skipped value', async () => {
      const dir = await tinyWithTensor('backbone.norm_f.weight', 'tiny-overflow', (v) => (v >= 0 ? 3e38 : -3e38));
      const model = await manager.loadModelAt(dir);
      const scored = await expectCode(engine.score(model, { ids: [1, 2, 3] }), 'E_BAD_WEIGHTS');
      expect(scored.message).toMatch(/non-finite logit \((NaN|\+inf|-inf)\) at position 0 of 3/);
      const greedy = await expectCode(engine.predict(model, { ids: [1, 2, 3] }, { maxTokens: 2, temperature: 0 }), 'E_BAD_WEIGHTS');
      expect(greedy.message).toContain('at position 2 of 3');
      await expectCode(engine.predict(model, { ids: [4] }, { maxTokens: 2, temperature: 0.7, seed: 1 }), 'E_BAD_WEIGHTS');
      await stillAlive();
    });

    it('a tokenizer whose normalizers explode the text → E_TOKENIZER at load; tokenizing is async', async () => {
      const dir = await copyModel(TINY, path.join(scratch.dir, 'tiny-exploding-tokenizer'));
      const tokenizer = await readJson<Record<string, unknown>>(path.join(dir, 'tokenizer.json'));
      const grow = { type: 'Replace', pattern: { String: 'e' }, content: 'eeeeeeeeeeeeeeee' };
      tokenizer.normalizer = { type: 'Sequence', normalizers: Array(8).fill(grow) };
      await writeFile(path.join(dir, 'tokenizer.json'), JSON.stringify(tokenizer));
      const error = await expectCode(manager.loadModelAt(dir), 'E_TOKENIZER');
      expect(error.message).toContain('tokenizer.json');
      expect(error.message).toContain('normalizer refused');

      const pending = lite.tokenize('Once upon a time');
      expect(pending).toBeInstanceOf(Promise);
      expect((await pending).length).toBeGreaterThan(0);
      await stillAlive();
    });
  });
});
