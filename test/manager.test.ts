/**
 * LocalModelManager: discovery, metadata, checksums + corruption, manifest, LRU budget, shared
 * concurrent loads, fallback choice, name resolution (path escapes) — on real model folders.
 */
import { existsSync } from 'node:fs';
import { mkdir, readdir, readFile, symlink, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { MambaSSMEngine } from '../ts/engines/mamba-engine.js';
import type { LoadedModel } from '../ts/engines/types.js';
import type { ModelMetadata } from '../ts/models/metadata.js';
import { LocalModelManager, type ModelProgressEvent } from '../ts/models/manager.js';
import { defaultManifestPath } from '../ts/models/models-dir.js';
import { defaultEngines } from '../ts/engines/default-engines.js';
import { LITE, ROOT, TINY, TINY_ORIGINAL, copyModel, expectCode, readSafetensors, requireNativeAddon, tempDir, writeSafetensors } from './helpers.js';

let scratch: Awaited<ReturnType<typeof tempDir>>;
let modelsDir: string;
const engine = new MambaSSMEngine();

beforeAll(async () => {
  requireNativeAddon();
  scratch = await tempDir();
  modelsDir = path.join(scratch.dir, 'models');
  await mkdir(modelsDir);
  await copyModel(LITE, path.join(modelsDir, 'lite'));
  await copyModel(TINY, path.join(modelsDir, 'tiny'));
  await copyModel(TINY_ORIGINAL, path.join(modelsDir, 'tiny-original'));
  await copyModel(TINY, path.join(modelsDir, 'tiny-copy'));
  await mkdir(path.join(modelsDir, '.hidden'));
  await writeFile(path.join(modelsDir, 'stray-file.txt'), 'not a model');
});

afterAll(async () => scratch?.cleanup());

function manager(options: ConstructorParameters<typeof LocalModelManager>[0] = {}): LocalModelManager {
  return new LocalModelManager({ modelsDir, engines: [engine], measurePerformance: false, ...options });
}

describe('discovery and metadata', () => {
  it('lists one entry per model folder with full metadata', async () => {
    const models = await manager().listModels();
    expect(models.map((m) => m.name)).toEqual(['lite', 'tiny', 'tiny-copy', 'tiny-original']);
    const lite = models.find((m) => m.name === 'lite');
    expect(lite).toMatchObject({
      modelType: 'mamba',
      format: 'hf-safetensors',
      version: '1',
      status: 'available',
      sizeBytes: 14_714_136,
      hasTokenizer: true,
      checksum: 'fa4054d97a452f4308b6230dbddde340afa4c7dff60000d3a5d47999da697896', // from the model's README
    });
    expect(lite?.path).toBe(path.join(modelsDir, 'lite'));
    const original = models.find((m) => m.name === 'tiny-original');
    expect(original).toMatchObject({ modelType: 'mamba', format: 'state-spaces-pth', hasTokenizer: false, status: 'available' });
  });

  it('reads the version from config.json or the README', async () => {
    const dir = path.join(scratch.dir, 'versions');
    await mkdir(dir);
    const a = await copyModel(TINY, path.join(dir, 'a'));
    const config = JSON.parse(await readFile(path.join(a, 'config.json'), 'utf8')) as Record<string, unknown>;
    await writeFile(path.join(a, 'config.json'), JSON.stringify({ ...config, version: '2.1' }));
    const b = await copyModel(TINY, path.join(dir, 'b'));
    await writeFile(path.join(b, 'README.md'), '# b\n\nVersion: 3.0.1\n');
    const m = new LocalModelManager({ modelsDir: dir, engines: [engine] });
    expect((await m.getModelMetadata('a')).version).toBe('2.1');
    expect((await m.getModelMetadata('b')).version).toBe('3.0.1');
  });

  it('an absent models dir lists nothing; PHOENIX_MODELS_DIR sets the default dir', async () => {
    expect(await manager({ modelsDir: path.join(scratch.dir, 'nope') }).listModels()).toEqual([]);
    const saved = process.env.PHOENIX_MODELS_DIR;
    process.env.PHOENIX_MODELS_DIR = modelsDir;
    try {
      expect(new LocalModelManager().modelsDir).toBe(modelsDir);
    } finally {
      if (saved === undefined) delete process.env.PHOENIX_MODELS_DIR;
      else process.env.PHOENIX_MODELS_DIR = saved;
    }
  });

  it('unknown names are E_MODEL_NOT_FOUND', async () => {
    const m = manager();
    await expectCode(m.getModelMetadata('does-not-exist'), 'E_MODEL_NOT_FOUND');
    await expectCode(m.loadModel('does-not-exist'), 'E_MODEL_NOT_FOUND');
    await expectCode(m.loadModelAt(path.join(scratch.dir, 'does-not-exist')), 'E_MODEL_NOT_FOUND');
  });

  it('names that leave the models dir are E_INVALID_OPTION naming them', async () => {
    const outside = await copyModel(TINY, path.join(scratch.dir, 'outside-model'));
    await symlink(outside, path.join(modelsDir, 'escape-link'));
    await symlink(path.join(modelsDir, 'tiny'), path.join(modelsDir, 'inside-link'));
    const m = manager();
    for (const name of ['../outside-model', '..', '.', '/etc', 'a/b', 'tiny/../../outside-model', '..\\x', '.hidden', '', 'escape-link']) {
      const error = await expectCode(m.loadModel(name), 'E_INVALID_OPTION');
      expect(error.message).toContain(JSON.stringify(name));
    }
    await expectCode(m.getModelMetadata('../outside-model'), 'E_INVALID_OPTION');
    // A symlink that stays inside the models dir is fine; one that leaves it is listed as an error
    // saying why (not hidden: it looks like a model to whoever made it).
    expect((await m.getModelMetadata('inside-link')).status).toBe('available');
    const listed = new Map((await m.listModels()).map((x) => [x.name, x]));
    expect(listed.get('inside-link')?.status).toBe('available');
    expect([listed.get('escape-link')?.status, listed.get('escape-link')?.error?.code]).toEqual(['error', 'E_INVALID_OPTION']);
    expect(listed.get('escape-link')?.error?.message).toMatch(/symlink to .*outside-model escapes/);
    // An explicit folder path (the CLI's `<model>` as a path) is allowed anywhere.
    const model = await m.loadModelAt(outside);
    expect(model.name).toBe('outside-model');
    m.dispose();
  });
});

describe('checksums and the manifest', () => {
  it('records checksums in <modelsDir>/.phoenix-manifest.json and reuses them while size/mtime hold', async () => {
    const events: ModelProgressEvent[] = [];
    await manager({ onProgress: (e) => events.push(e) }).listModels();
    const manifest = JSON.parse(await readFile(path.join(modelsDir, '.phoenix-manifest.json'), 'utf8')) as { models: Record<string, { checksum: string }> };
    expect(manifest.models[path.join(modelsDir, 'lite')]?.checksum).toBe('fa4054d97a452f4308b6230dbddde340afa4c7dff60000d3a5d47999da697896');
    const again: ModelProgressEvent[] = [];
    await manager({ onProgress: (e) => again.push(e) }).listModels();
    expect(again.filter((e) => e.kind === 'checksum')).toEqual([]); // nothing re-hashed
  });

  it('a models dir inside node_modules (an installed package\'s) keeps its manifest in the user\'s cache, not in the package', async () => {
    const installed = path.join(scratch.dir, 'app', 'node_modules', 'phoenix-local', 'models');
    await copyModel(TINY, path.join(installed, 'tiny'));
    const outside = await copyModel(TINY, path.join(scratch.dir, 'by-path-model'));
    const cache = path.join(scratch.dir, 'xdg-cache');
    const saved = process.env.XDG_CACHE_HOME;
    process.env.XDG_CACHE_HOME = cache;
    try {
      const m = manager({ modelsDir: installed });
      await m.listModels();
      (await m.loadModelAt(outside)).dispose(); // a model named by path is recorded there too
      m.dispose();
      expect(existsSync(path.join(installed, '.phoenix-manifest.json'))).toBe(false);
      const [file, ...more] = await readdir(path.join(cache, 'phoenix-local'));
      expect(more).toEqual([]);
      const manifest = JSON.parse(await readFile(path.join(cache, 'phoenix-local', file as string), 'utf8')) as { models: Record<string, unknown> };
      expect(Object.keys(manifest.models).sort()).toEqual([path.join(installed, 'tiny'), outside].sort());
      // A relative $XDG_CACHE_HOME is ignored, as the XDG spec says (not a folder under the cwd).
      expect(defaultManifestPath(installed, { XDG_CACHE_HOME: 'relative-cache' }).startsWith(path.join(os.homedir(), '.cache', 'phoenix-local'))).toBe(true);
      expect(defaultManifestPath(modelsDir, { XDG_CACHE_HOME: cache })).toBe(path.join(modelsDir, '.phoenix-manifest.json'));
      // The next process finds it: nothing is hashed again.
      const again: ModelProgressEvent[] = [];
      await manager({ modelsDir: installed, onProgress: (e) => again.push(e) }).listModels();
      expect(again.filter((e) => e.kind === 'checksum')).toEqual([]);
    } finally {
      if (saved === undefined) delete process.env.XDG_CACHE_HOME;
      else process.env.XDG_CACHE_HOME = saved;
    }
  });

  it('changed weights → corrupted; loading throws E_CHECKSUM until the new checksum is accepted', async () => {
    const folder = await copyModel(TINY, path.join(modelsDir, 'tamper'));
    const m = manager();
    const before = await m.getModelMetadata('tamper');
    expect(before.status).toBe('available');
    // Same size, different bytes, new mtime.
    const file = path.join(folder, 'model.safetensors');
    const bytes = await readFile(file);
    bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 0xff;
    await writeFile(file, bytes);
    await utimes(file, new Date(), new Date(Date.now() + 5_000));
    const after = await m.getModelMetadata('tamper');
    expect(after.status).toBe('corrupted');
    expect(after.expectedChecksum).toBe(before.checksum);
    expect(after.checksum).not.toBe(before.checksum);
    const error = await expectCode(m.loadModel('tamper'), 'E_CHECKSUM');
    expect(error.message).toContain('tamper');
    expect(await m.getFallbackModel('mamba', { exclude: ['lite', 'tiny', 'tiny-copy', 'tiny-original', 'inside-link'] })).toBeUndefined();
    const accepted = await m.acceptChecksum('tamper');
    expect(accepted.status).toBe('available');
    const model = await m.loadModel('tamper');
    expect(model.disposed).toBe(false);
    m.dispose();
  });

  it('an unwritable manifest is kept in memory and says so', async () => {
    const blocker = path.join(scratch.dir, 'blocker');
    await writeFile(blocker, 'a file where a folder would be');
    const m = manager({ manifestPath: path.join(blocker, 'manifest.json') });
    const models = await m.listModels();
    expect(models.length).toBeGreaterThan(0);
    const status = await m.manifestStatus();
    expect(status.persistent).toBe(false);
    expect(status.warning).toMatch(/not writable.*in memory/);
    // Still works: corruption detection uses the in-memory records.
    expect((await m.getModelMetadata('tiny')).status).toBe('available');
  });
});

describe('loading, caching, budget', () => {
  it('loads through the engine that accepts the model, caches it, and shares concurrent loads', async () => {
    const events: ModelProgressEvent[] = [];
    const m = manager({ onProgress: (e) => events.push(e) });
    const [a, b, c] = await Promise.all([m.loadModel('tiny'), m.loadModel('tiny'), m.loadModel('tiny')]);
    expect(a).toBe(b);
    expect(b).toBe(c);
    expect(events.filter((e) => e.kind === 'load-start')).toHaveLength(1);
    expect(await m.loadModel('tiny')).toBe(a);
    expect((await m.getModelMetadata('tiny')).status).toBe('loaded');
    expect(m.loadedModels()).toEqual([a]);
    await m.unloadModel('tiny');
    expect(a.disposed).toBe(true);
    expect((await m.getModelMetadata('tiny')).status).toBe('available');
    const reloaded = await m.loadModel('tiny');
    expect(reloaded).not.toBe(a);
    m.dispose();
    expect(reloaded.disposed).toBe(true);
  });

  it('unloads least-recently-used models beyond the memory budget', async () => {
    const tinyBytes = (await manager().getModelMetadata('tiny')).sizeBytes;
    const m = manager({ memoryBudgetBytes: Math.floor(tinyBytes * 2.5) });
    const tiny = await m.loadModel('tiny');
    const copy = await m.loadModel('tiny-copy');
    expect(tiny.disposed || copy.disposed).toBe(false);
    await m.loadModel('tiny'); // touch: tiny-copy becomes least recently used
    const original = await m.loadModel('tiny-original');
    expect(copy.disposed).toBe(true);
    expect(tiny.disposed).toBe(false);
    expect(original.disposed).toBe(false);
    expect(m.loadedBytes()).toBeLessThanOrEqual(tinyBytes * 2.5);
    // A model bigger than the whole budget still loads (alone).
    const lite = await m.loadModel('lite');
    expect(lite.disposed).toBe(false);
    expect(m.loadedModels()).toEqual([lite]);
    m.dispose();
  });

  it('a leased model is not unloaded by the budget until released', async () => {
    const tinyBytes = (await manager().getModelMetadata('tiny')).sizeBytes;
    const m = manager({ memoryBudgetBytes: tinyBytes });
    const lease = await m.acquireModel('tiny');
    const other = await m.loadModel('tiny-copy');
    expect(lease.model.disposed).toBe(false); // over budget, but leased
    expect(m.loadedModels()).toHaveLength(2);
    lease.release(); // now the budget applies: the least recently used (tiny-copy) goes
    expect(m.loadedModels()).toEqual([lease.model]);
    expect(other.disposed).toBe(true);
    m.dispose();
  });

  it('measures a performance profile after the first load and stores it in the manifest', async () => {
    const m = new LocalModelManager({ modelsDir, engines: [engine] });
    await m.loadModel('tiny-copy');
    const meta = await m.getModelMetadata('tiny-copy');
    expect(meta.performance?.decodeTokensPerSecond).toBeGreaterThan(0);
    expect(meta.performance?.prefillTokensPerSecond).toBeGreaterThan(0);
    expect(meta.performance?.loadMs).toBeGreaterThan(0);
    m.dispose();
    const fresh = await new LocalModelManager({ modelsDir }).getModelMetadata('tiny-copy');
    expect(fresh.performance).toEqual(meta.performance);
  });

  it('the speed probe fits a short context, and a model that cannot generate fails its load without staying loaded', async () => {
    const dir = path.join(scratch.dir, 'probe-models');
    await mkdir(dir);
    // A 6-token context: the probe takes 3 tokens in and 3 out instead of 16 + 8.
    const short = await copyModel(path.join(ROOT, 'test/fixtures/llama-tiny'), path.join(dir, 'short'));
    const config = JSON.parse(await readFile(path.join(short, 'config.json'), 'utf8')) as Record<string, unknown>;
    await writeFile(path.join(short, 'config.json'), JSON.stringify({ ...config, max_position_embeddings: 6 }));
    // Logits that overflow: every generation fails with E_BAD_WEIGHTS.
    const overflow = await copyModel(TINY, path.join(dir, 'overflow'));
    const file = path.join(overflow, 'model.safetensors');
    const { tensors, metadata } = await readSafetensors(file);
    const norm = tensors.get('backbone.norm_f.weight')!;
    tensors.set('backbone.norm_f.weight', { ...norm, data: Buffer.from(new Float32Array(norm.data.length / 4).fill(3e38).buffer) });
    await writeSafetensors(file, tensors, metadata);

    const m = new LocalModelManager({ modelsDir: dir, engines: defaultEngines() });
    try {
      await m.loadModel('short');
      const profile = (await m.getModelMetadata('short')).performance;
      expect([profile?.probePromptTokens, profile?.probeGeneratedTokens]).toEqual([3, 3]);
      for (let attempt = 0; attempt < 2; attempt++) {
        const error = await expectCode(m.loadModel('overflow'), 'E_BAD_WEIGHTS');
        expect(error.message).toMatch(/"overflow" loaded but could not generate .*speed probe.*non-finite logit/);
        expect(m.loadedModels().map((x) => x.name)).toEqual(['short']);
        const listed = await m.getModelMetadata('overflow');
        expect([listed.status, listed.error?.code]).toEqual(['error', 'E_BAD_WEIGHTS']);
      }
    } finally {
      m.dispose();
    }
  });

  it('dispose() during a load frees the model that load makes instead of leaving it cached; later loads are refused', async () => {
    const made: LoadedModel[] = [];
    class Recording extends MambaSSMEngine {
      override async loadModel(metadata: ModelMetadata): Promise<LoadedModel> {
        const model = await super.loadModel(metadata);
        made.push(model);
        return model;
      }
    }
    let m: LocalModelManager | undefined;
    m = new LocalModelManager({ modelsDir, engines: [new Recording()], measurePerformance: false, onProgress: (e) => e.kind === 'load-start' && m?.dispose() });
    const error = await expectCode(m.loadModel('tiny'), 'E_ABORTED');
    expect(error.message).toMatch(/loading "tiny" was aborted: the model manager was disposed/);
    expect(made.map((x) => x.disposed)).toEqual([true]);
    expect(m.loadedModels()).toEqual([]);
    expect((await m.getModelMetadata('tiny')).status).toBe('available');
    // dispose() is the end: a load asked in the same tick, or later, hands out nothing.
    const other = new LocalModelManager({ modelsDir, engines: [new Recording()], measurePerformance: false });
    const sameTick = other.loadModel('tiny');
    other.dispose();
    await expectCode(sameTick, 'E_ABORTED');
    await expectCode(other.acquireModel('tiny'), 'E_ABORTED');
    expect(other.loadedModels()).toEqual([]);
    expect(made.every((x) => x.disposed)).toBe(true);
  });

  it('getFallbackModel returns the smallest other usable model of the type', async () => {
    const m = manager();
    const fallback = await m.getFallbackModel('mamba', 'tiny');
    expect(fallback?.modelType).toBe('mamba');
    expect(fallback?.name).not.toBe('tiny');
    expect(fallback?.sizeBytes).toBeLessThan(1_000_000);
    expect((await m.getFallbackModel('mamba', { exclude: ['tiny', 'tiny-copy', 'inside-link', 'tamper'], requireTokenizer: true }))?.name).toBe('lite');
    expect(await m.getFallbackModel('falcon_mamba')).toBeUndefined();
  });

  it('without an engine for the model type the model is unusable (E_UNSUPPORTED_MODEL)', async () => {
    const m = new LocalModelManager({ modelsDir, measurePerformance: false });
    await expectCode(m.loadModel('tiny'), 'E_UNSUPPORTED_MODEL');
  });
});
