/**
 * Every way a model reaches the WASM binding — a folder (Node), files in memory, a reader of bytes
 * or Blobs (browsers, folder pickers), sharded safetensors — gives the same model (bit-identical
 * logits; native's within 1e-4); the core alone decides which files are read (each once, nothing it does not
 * need); errors name the file like natively. Real WASM build, real fixture models.
 */
import { copyFile, mkdir, readFile, truncate, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadBinding } from '../ts/binding/load.js';
import type { ModelFileData, RawBinding, RawModel, RawModelSource } from '../ts/binding/types.js';
import {
  TINY,
  TINY_ORIGINAL,
  WASM_BUILT,
  WASM_REQUIRED,
  expectCode,
  readSafetensors,
  requireBackend,
  tempDir,
  writeSafetensors,
} from './helpers.js';

const IDS = [0, 5, 17, 3, 42];

describe.runIf(WASM_BUILT || WASM_REQUIRED)('WASM model sources', () => {
  let wasm: RawBinding;
  let native: RawBinding;
  /** TINY's logits loaded from its folder: by the native addon, and by WASM. */
  let nativeLogits: number[];
  let expected: number[];
  let scratch: Awaited<ReturnType<typeof tempDir>>;
  /** TINY plus a pytorch_model.bin the core must not read (safetensors wins). */
  let both: string;
  /** TINY's weights split into two shards behind model.safetensors.index.json. */
  let sharded: string;

  async function logitsOf(model: RawModel): Promise<number[]> {
    try {
      return Array.from(await model.logits(IDS));
    } finally {
      model.dispose();
    }
  }

  /** A reader over a folder that records what it was asked for. */
  function recordingReader(dir: string, asBlob = false): { read: (name: string) => Promise<ModelFileData | null>; asked: string[] } {
    const asked: string[] = [];
    const read = async (name: string): Promise<ModelFileData | null> => {
      asked.push(name);
      const bytes = await readFile(path.join(dir, name)).catch(() => null);
      if (!bytes) return null;
      return asBlob ? new Blob([bytes]) : new Uint8Array(bytes);
    };
    return { read, asked };
  }

  beforeAll(async () => {
    requireBackend('native');
    requireBackend('wasm');
    wasm = (await loadBinding({ backend: 'wasm' })).binding;
    native = (await loadBinding({ backend: 'native' })).binding;
    nativeLogits = await logitsOf(await native.loadModel(TINY));
    expected = await logitsOf(await wasm.loadModel(TINY));
    scratch = await tempDir();

    both = path.join(scratch.dir, 'both');
    await mkdir(both);
    for (const file of ['config.json', 'tokenizer.json', 'model.safetensors']) await copyFile(path.join(TINY, file), path.join(both, file));
    await copyFile(path.join(TINY_ORIGINAL, 'pytorch_model.bin'), path.join(both, 'pytorch_model.bin'));

    sharded = path.join(scratch.dir, 'sharded');
    await mkdir(sharded);
    for (const file of ['config.json', 'tokenizer.json']) await copyFile(path.join(TINY, file), path.join(sharded, file));
    const { tensors } = await readSafetensors(path.join(TINY, 'model.safetensors'));
    const names = [...tensors.keys()];
    const half = Math.ceil(names.length / 2);
    const shards = [names.slice(0, half), names.slice(half)].map((part, i) => ({ file: `model-0000${i + 1}-of-00002.safetensors`, part }));
    const weightMap: Record<string, string> = {};
    for (const { file, part } of shards) {
      await writeSafetensors(path.join(sharded, file), new Map(part.map((name) => [name, tensors.get(name)!])));
      for (const name of part) weightMap[name] = file;
    }
    await writeFile(path.join(sharded, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  });

  afterAll(async () => {
    await scratch?.cleanup();
  });

  it('a folder: the logits of the native addon (within 1e-4: other SIMD kernels), the same on every load', async () => {
    const maxDiff = Math.max(...expected.map((v, i) => Math.abs(v - (nativeLogits[i] as number))));
    expect(maxDiff).toBeLessThan(1e-4);
    expect(await logitsOf(await wasm.loadModel(TINY))).toEqual(expected);
  });

  it('files in memory, as an object or a Map: the same model', async () => {
    const files: Record<string, Uint8Array> = {};
    for (const file of ['config.json', 'tokenizer.json', 'model.safetensors']) files[file] = new Uint8Array(await readFile(path.join(TINY, file)));
    expect(await logitsOf(await wasm.loadModel(files))).toEqual(expected);
    expect(await logitsOf(await wasm.loadModel(new Map(Object.entries(files))))).toEqual(expected);
  });

  it('a reader is asked for each needed file once, in the core order, and never for an unused container', async () => {
    for (const asBlob of [false, true]) {
      const { read, asked } = recordingReader(both, asBlob);
      expect(await logitsOf(await wasm.loadModel(read)), asBlob ? 'Blobs (streamed in chunks)' : 'bytes').toEqual(expected);
      // The chat template's files are looked for too (absent here).
      expect(asked).toEqual(['config.json', 'tokenizer.json', 'tokenizer_config.json', 'chat_template.jinja', 'model.safetensors.index.json', 'model.safetensors']);
    }
  });

  it('sharded safetensors: the index, then each shard, by folder and by reader; native agrees', async () => {
    expect(await logitsOf(await native.loadModel(sharded))).toEqual(nativeLogits);
    expect(await logitsOf(await wasm.loadModel(sharded))).toEqual(expected);
    const { read, asked } = recordingReader(sharded);
    expect(await logitsOf(await wasm.loadModel(read))).toEqual(expected);
    expect(asked).toEqual([
      'config.json',
      'tokenizer.json',
      'tokenizer_config.json',
      'chat_template.jinja',
      'model.safetensors.index.json',
      'model-00001-of-00002.safetensors',
      'model-00002-of-00002.safetensors',
    ]);
  });

  it('errors name the file with its folder, as natively; a missing shard is E_BAD_WEIGHTS', async () => {
    const broken = path.join(scratch.dir, 'broken-config');
    await mkdir(broken);
    await copyFile(path.join(TINY, 'model.safetensors'), path.join(broken, 'model.safetensors'));
    await writeFile(path.join(broken, 'config.json'), '{ "model_type": "mamba",\n  "hidden_size": }');
    const onWasm = await expectCode(wasm.loadModel(broken), 'E_BAD_CONFIG');
    const onNative = await expectCode(native.loadModel(broken), 'E_BAD_CONFIG');
    expect(onWasm.message).toContain(path.join(broken, 'config.json'));
    expect(onWasm.message).toBe(onNative.message);

    const noShard = path.join(scratch.dir, 'missing-shard');
    await mkdir(noShard);
    for (const file of ['config.json', 'model.safetensors.index.json', 'model-00001-of-00002.safetensors']) {
      await copyFile(path.join(sharded, file), path.join(noShard, file));
    }
    const missing = await expectCode(wasm.loadModel(noShard), 'E_BAD_WEIGHTS');
    expect(missing.message).toContain('model-00002-of-00002.safetensors');
    await expectCode(native.loadModel(noShard), 'E_BAD_WEIGHTS');

    await expectCode(wasm.loadModel(recordingReader(path.join(scratch.dir, 'nowhere')).read), 'E_MODEL_NOT_FOUND');
    await expectCode(wasm.loadModel({ 'config.json': 'not bytes' } as unknown as RawModelSource), 'E_INVALID_OPTION');
  });

  it('a file past the address space is E_UNSUPPORTED_MODEL saying how much of it is taken already', async () => {
    // A sparse 5 GiB weight file: no disk used, and WASM refuses it before reading a byte.
    const huge = path.join(scratch.dir, 'huge');
    await mkdir(huge);
    await copyFile(path.join(TINY, 'config.json'), path.join(huge, 'config.json'));
    await writeFile(path.join(huge, 'model.safetensors'), '');
    await truncate(path.join(huge, 'model.safetensors'), 5 * 2 ** 30);
    const held = await wasm.loadModel(TINY);
    try {
      const e = await expectCode(wasm.loadModel(huge), 'E_UNSUPPORTED_MODEL');
      const taken = Number(/of its 4 GiB address space, (\d+) bytes are taken/.exec(e.message)?.[1]);
      expect(taken, e.message).toBeGreaterThanOrEqual(held.info().weightBytes);
      expect(e.message).toContain('model.safetensors (5368709120 bytes) does not fit in WASM memory');
    } finally {
      held.dispose();
    }
  });

  it('the native addon loads folders only: other sources are E_INVALID_OPTION naming the WASM backend', async () => {
    const error = await expectCode(native.loadModel({ 'config.json': new Uint8Array(2) }), 'E_INVALID_OPTION');
    expect(error.message).toContain('WASM');
  });
});
