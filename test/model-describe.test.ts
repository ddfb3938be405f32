/**
 * The model manager reports what the core says a model is — family, engine kind, format name, the
 * weight files and the other files a load reads — on each binding, instead of rules of its own (the
 * TypeScript copy had drifted: a `pytorch_model.bin` beside a Hugging Face config was
 * `state-spaces-pth` here and `hf-pth` in the core). What the manager lists must equal the binding's
 * `describeModel` and the loaded model's `info`.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { PhoenixError } from '../ts/binding/errors.js';
import { loadBinding, type BindingSelection } from '../ts/binding/load.js';
import type { RawModelLayout } from '../ts/binding/types.js';
import { MambaSSMEngine } from '../ts/engines/mamba-engine.js';
import { LocalModelManager } from '../ts/models/manager.js';
import {
  LITE,
  TEST_BACKENDS,
  TINY,
  TINY_ORIGINAL,
  copyModel,
  readSafetensors,
  requireBackend,
  tempModelsDir,
  writeSafetensors,
  type TensorEntry,
} from './helpers.js';

const SHARDS = ['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors'];

/** mamba1-tiny with its weights split over two shards and an index naming them. */
async function shardedTiny(folder: string): Promise<void> {
  await copyModel(TINY, folder);
  const file = path.join(folder, 'model.safetensors');
  const { tensors } = await readSafetensors(file);
  const parts = [new Map<string, TensorEntry>(), new Map<string, TensorEntry>()];
  const weightMap: Record<string, string> = {};
  [...tensors].forEach(([name, tensor], i) => {
    (parts[i % 2] as Map<string, TensorEntry>).set(name, tensor);
    weightMap[name] = SHARDS[i % 2] as string;
  });
  for (const [i, shard] of SHARDS.entries()) await writeSafetensors(path.join(folder, shard), parts[i] as Map<string, TensorEntry>);
  await writeFile(path.join(folder, 'model.safetensors.index.json'), JSON.stringify({ metadata: {}, weight_map: weightMap }));
  await import('node:fs/promises').then((fs) => fs.rm(file));
}

/** A Hugging Face config.json (mamba1-tiny's) beside the state-spaces checkpoint of the same weights. */
async function hfConfigWithBin(folder: string): Promise<void> {
  await copyModel(TINY_ORIGINAL, folder);
  await copyModel(path.join(TINY, 'config.json'), path.join(folder, 'config.json'));
}

describe.each(TEST_BACKENDS)('on the %s binding', (backend) => {
  let selection: BindingSelection;
  let manager: LocalModelManager;
  let scratch: Awaited<ReturnType<typeof tempModelsDir>>;

  beforeAll(async () => {
    requireBackend(backend);
    selection = await loadBinding({ backend });
    scratch = await tempModelsDir({ lite: LITE, tiny: TINY, 'tiny-original': TINY_ORIGINAL });
    await shardedTiny(path.join(scratch.modelsDir, 'tiny-sharded'));
    await hfConfigWithBin(path.join(scratch.modelsDir, 'hf-bin'));
    manager = new LocalModelManager({
      modelsDir: scratch.modelsDir,
      engines: [new MambaSSMEngine({ binding: selection })],
      binding: selection,
      measurePerformance: false,
    });
  });

  afterAll(async () => {
    manager?.dispose();
    await scratch?.cleanup();
  });

  it('lists each model as the core describes it, and loads it as listed', async () => {
    const models = await manager.listModels();
    expect(models.map((m) => m.name)).toEqual(['hf-bin', 'lite', 'tiny', 'tiny-original', 'tiny-sharded']);
    const families = selection.binding.supportedFamilies();
    for (const metadata of models) {
      const layout = await selection.binding.describeModel(path.join(scratch.modelsDir, metadata.name));
      expect(metadata.status, `${metadata.name}: ${metadata.error?.message}`).toBe('available');
      expect({
        modelType: metadata.modelType,
        family: metadata.family,
        engine: metadata.engine,
        format: metadata.format,
        weightFiles: metadata.weightFiles.map((f) => f.name),
        sideFiles: metadata.sideFiles?.map((f) => f.name),
        hasTokenizer: metadata.hasTokenizer,
      }).toEqual(layout);
      // The family the core names is one of its registry's, for this model_type and engine kind.
      expect(families).toContainEqual(expect.objectContaining({ name: layout.family, engine: layout.engine }));
      expect(families.find((f) => f.name === layout.family)?.modelTypes).toContain(layout.modelType);

      const model = await manager.loadModel(metadata.name);
      const { info } = model;
      expect({ modelType: info.modelType, family: info.family, engine: info.engine, format: info.format, hasTokenizer: info.hasTokenizer }, metadata.name).toEqual({
        modelType: metadata.modelType,
        family: metadata.family,
        engine: metadata.engine,
        format: metadata.format,
        hasTokenizer: metadata.hasTokenizer,
      });
      await manager.unloadModel(metadata.name);
    }
  });

  it('a pytorch_model.bin beside a Hugging Face config is reported under the core format name, shards by their index', async () => {
    const hfBin = await manager.getModelMetadata('hf-bin');
    expect(hfBin).toMatchObject({ format: 'hf-pth', weightFiles: [expect.objectContaining({ name: 'pytorch_model.bin' })] });
    const sharded = await manager.getModelMetadata('tiny-sharded');
    expect(sharded.format).toBe('hf-safetensors-sharded');
    expect(sharded.weightFiles.map((f) => f.name)).toEqual(SHARDS);
    expect(sharded.sideFiles?.map((f) => f.name)).toContain('model.safetensors.index.json');
  });

  it('the engine takes models by the engine kind the core reports', async () => {
    const engine = new MambaSSMEngine({ binding: selection });
    const tiny = await manager.getModelMetadata('tiny');
    expect(tiny.engine).toBe('ssm');
    expect(engine.canLoad(tiny)).toBe(true);
    expect(engine.canLoad({ ...tiny, engine: 'transformer' })).toBe(false);
  });
});

describe.runIf(TEST_BACKENDS.includes('wasm'))('the WASM binding describes every source the browser has', () => {
  it('a reader and in-memory files give the folder description, reading only config.json and the shard index', async () => {
    const { binding } = await loadBinding({ backend: 'wasm' });
    const scratch = await tempModelsDir({});
    try {
      const folder = path.join(scratch.modelsDir, 'tiny-sharded');
      await shardedTiny(folder);
      const fromFolder = await binding.describeModel(folder);
      const { readdir, readFile } = await import('node:fs/promises');
      const files = new Map<string, Uint8Array>();
      for (const name of await readdir(folder)) files.set(name, await readFile(path.join(folder, name)));

      const read: string[] = [];
      const reader = async (name: string, how?: { probe?: boolean }): Promise<Uint8Array | null> => {
        if (!how?.probe) read.push(name);
        return files.get(name) ?? null;
      };
      const fromReader: RawModelLayout = await binding.describeModel(reader);
      const fromMemory: RawModelLayout = await binding.describeModel(files);
      expect(fromReader).toEqual(fromFolder);
      expect(fromMemory).toEqual(fromFolder);
      expect(read.sort()).toEqual(['config.json', 'model.safetensors.index.json']);
    } finally {
      await scratch.cleanup();
    }
  });
});

describe('without a binding', () => {
  it('every model is listed with status error E_BACKEND_UNAVAILABLE (nothing describes it)', async () => {
    const scratch = await tempModelsDir({ tiny: TINY });
    try {
      const unavailable = Promise.reject(new PhoenixError('E_BACKEND_UNAVAILABLE', 'no backend could be loaded: test'));
      unavailable.catch(() => undefined);
      const manager = new LocalModelManager({ modelsDir: scratch.modelsDir, binding: unavailable, measurePerformance: false });
      const [tiny] = await manager.listModels();
      expect(tiny).toMatchObject({ name: 'tiny', status: 'error', error: { code: 'E_BACKEND_UNAVAILABLE' } });
    } finally {
      await scratch.cleanup();
    }
  });
});
