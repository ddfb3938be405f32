/**
 * LocalModelManager against hostile or changing model folders: FIFOs, devices, folders and symlinks
 * where files belong; adversarial READMEs; files edited behind its back; concurrent processes sharing
 * a manifest; loads racing unloads; aborts; and where the default models dir is.
 */
import { execFile, execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { mkdir, readFile, readdir, stat, symlink, utimes, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { MambaSSMEngine } from '../ts/engines/mamba-engine.js';
import { LocalAIPipeline } from '../ts/pipeline/pipeline.js';
import { bundledModelsDir } from '../ts/models/bundled.js';
import { defaultModelsDir, LocalModelManager, type ModelProgressEvent } from '../ts/models/manager.js';
import { MANIFEST_FILE_NAME } from '../ts/models/manifest.js';
import { LITE, ROOT, TINY, copyModel, expectCode, requireNativeAddon, tempDir, writeSafetensors } from './helpers.js';

const run = promisify(execFile);
let scratch: Awaited<ReturnType<typeof tempDir>>;
const engine = new MambaSSMEngine();

beforeAll(async () => {
  requireNativeAddon();
  scratch = await tempDir('phoenix-manager-hardening-');
});
afterAll(async () => scratch?.cleanup());

/** A fresh models dir under the scratch dir. */
async function modelsDirNamed(name: string): Promise<string> {
  const dir = path.join(scratch.dir, name);
  await mkdir(dir);
  return dir;
}

function manager(modelsDir: string, options: ConstructorParameters<typeof LocalModelManager>[0] = {}): LocalModelManager {
  return new LocalModelManager({ modelsDir, engines: [engine], measurePerformance: false, ...options });
}

/** Fails (instead of hanging the suite) when `work` takes longer than `ms`. */
async function within<T>(ms: number, work: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`still running after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([work, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

describe('hostile files in a model folder', () => {
  it('a FIFO, folder or escaping symlink where a model file belongs → status error naming the file; list returns the others', async () => {
    const dir = await modelsDirNamed('hostile');
    await copyModel(TINY, path.join(dir, 'good'));
    const replace = async (model: string, file: string, make: (full: string) => Promise<void> | void): Promise<void> => {
      const folder = await copyModel(TINY, path.join(dir, model));
      await import('node:fs/promises').then((fs) => fs.rm(path.join(folder, file), { force: true }));
      await make(path.join(folder, file));
    };
    const fifo = (full: string): void => void execFileSync('mkfifo', [full]);
    await replace('fifo-config', 'config.json', fifo);
    await replace('fifo-tokenizer', 'tokenizer.json', fifo);
    await replace('fifo-weights', 'model.safetensors', fifo);
    await replace('folder-weights', 'model.safetensors', (full) => mkdir(full).then(() => undefined));
    await replace('zero-weights', 'model.safetensors', (full) => symlink('/dev/zero', full));
    await replace('passwd-config', 'config.json', (full) => symlink('/etc/passwd', full));
    // A sharded model whose index is a FIFO.
    await replace('fifo-index', 'model.safetensors.index.json', fifo);
    // A README that is a FIFO is not needed by anything: the model stays usable.
    await replace('fifo-readme', 'README.md', fifo);
    // Loose entries: a FIFO named like a GGUF model is listed as an error; links to files that are not
    // models (or to nothing) are not models.
    fifo(path.join(dir, 'pipe.gguf'));
    await symlink('/etc/hostname', path.join(dir, 'notes'));
    await symlink(path.join(dir, 'nowhere'), path.join(dir, 'dangling'));

    const models = await within(10_000, manager(dir).listModels());
    const byName = new Map(models.map((m) => [m.name, m]));
    expect([...byName.keys()]).toEqual(['fifo-config', 'fifo-index', 'fifo-readme', 'fifo-tokenizer', 'fifo-weights', 'folder-weights', 'good', 'passwd-config', 'pipe.gguf', 'zero-weights']);
    expect([byName.get('pipe.gguf')?.status, byName.get('pipe.gguf')?.error?.code]).toEqual(['error', 'E_BAD_WEIGHTS']);
    expect(byName.get('pipe.gguf')?.error?.message).toMatch(/pipe\.gguf is not a regular file/);
    expect(byName.get('good')?.status).toBe('available');
    expect(byName.get('fifo-readme')?.status).toBe('available');
    const expected: [string, string, string][] = [
      ['fifo-config', 'E_BAD_CONFIG', 'config.json'],
      // The shard index belongs to the weights in the core (a load of this folder says E_BAD_WEIGHTS too).
      ['fifo-index', 'E_BAD_WEIGHTS', 'model.safetensors.index.json'],
      ['fifo-tokenizer', 'E_TOKENIZER', 'tokenizer.json'],
      ['fifo-weights', 'E_BAD_WEIGHTS', 'model.safetensors'],
      ['folder-weights', 'E_BAD_WEIGHTS', 'model.safetensors'],
      ['zero-weights', 'E_BAD_WEIGHTS', 'model.safetensors'],
      ['passwd-config', 'E_BAD_CONFIG', 'config.json'],
    ];
    for (const [name, code, file] of expected) {
      const meta = byName.get(name);
      expect(meta?.status, name).toBe('error');
      expect(meta?.error?.code, name).toBe(code);
      expect(meta?.error?.message, name).toContain(path.join(dir, name, file));
      expect(meta?.error?.message, name).not.toContain('root:'); // never the contents of what it points at
    }
    // Loading one is the same typed error, at once.
    await within(10_000, expectCode(manager(dir).loadModel('fifo-weights'), 'E_BAD_WEIGHTS'));
    await within(10_000, expectCode(manager(dir).loadModel('fifo-config'), 'E_BAD_CONFIG'));
  });

  it('a modelsDir that is not a string is E_INVALID_OPTION, not a raw Node error', () => {
    for (const modelsDir of [42, null, { path: '/tmp' }]) {
      expect(() => new LocalModelManager({ modelsDir: modelsDir as unknown as string })).toThrow(/option modelsDir must be a path string/);
    }
  });

  it('a config.json that is not JSON is named without quoting its contents', async () => {
    const dir = await modelsDirNamed('leaky');
    const folder = await copyModel(TINY, path.join(dir, 'm'));
    await writeFile(path.join(folder, 'config.json'), 'SECRET-CONTENT that is not json');
    const meta = await manager(dir).getModelMetadata('m');
    expect(meta.error?.code).toBe('E_BAD_CONFIG');
    expect(meta.error?.message).toContain(path.join(folder, 'config.json'));
    expect(meta.error?.message).not.toContain('SECRET');
  });

  it('a 160 KB adversarial README is listed fast, and its version line is still found', async () => {
    const dir = await modelsDirNamed('readme');
    const slow = await copyModel(TINY, path.join(dir, 'slow'));
    // Quadratic for a backtracking `^[\s…]*version` regex: every line start re-scans the rest.
    await writeFile(path.join(slow, 'README.md'), '\n'.repeat(160_000) + 'x');
    const found = await copyModel(TINY, path.join(dir, 'found'));
    await writeFile(path.join(found, 'README.md'), `# m\n\n${' '.repeat(20_000)}\n**Version**: v4.2-beta\n`);
    const started = performance.now();
    const models = await manager(dir).listModels();
    expect(performance.now() - started).toBeLessThan(2_000);
    expect(models.map((m) => [m.name, m.version])).toEqual([
      ['found', '4.2-beta'],
      ['slow', '1'],
    ]);
  });
});

describe('integrity: every file the model reads, changes beyond size + mtime', () => {
  it('weights edited in place with the mtime restored → corrupted, E_CHECKSUM', async () => {
    const dir = await modelsDirNamed('restored-mtime');
    const folder = await copyModel(TINY, path.join(dir, 'm'));
    const file = path.join(folder, 'model.safetensors');
    const when = Math.floor(Date.now() / 1000) - 3600; // whole seconds: restorable exactly
    await utimes(file, when, when);
    const m = manager(dir);
    expect((await m.getModelMetadata('m')).status).toBe('available');
    const before = await stat(file);
    const bytes = await readFile(file);
    bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 0xff;
    await writeFile(file, bytes);
    await utimes(file, when, when); // size and mtime as recorded; ctime cannot be restored
    expect((await stat(file)).mtimeMs).toBe(before.mtimeMs);
    expect((await manager(dir).getModelMetadata('m')).status).toBe('corrupted');
    await expectCode(manager(dir).loadModel('m'), 'E_CHECKSUM');
  });

  for (const file of ['config.json', 'tokenizer.json']) {
    it(`a changed ${file} → corrupted naming it, until accepted`, async () => {
      const dir = await modelsDirNamed(`side-${file}`);
      const folder = await copyModel(TINY, path.join(dir, 'm'));
      const m = manager(dir);
      const before = await m.getModelMetadata('m');
      expect(before.status).toBe('available');
      expect(before.sideFiles?.map((f) => f.name)).toContain(file);
      const text = await readFile(path.join(folder, file), 'utf8');
      await writeFile(path.join(folder, file), text.replace(/}\s*$/, ', "x_injected": 1}'));
      const after = await m.getModelMetadata('m');
      expect(after.status).toBe('corrupted');
      expect(after.error?.code).toBe('E_CHECKSUM');
      expect(after.error?.message).toContain(path.join(folder, file));
      expect(after.checksum).toBe(before.checksum); // the weights' checksum itself is unchanged
      await expectCode(m.loadModel('m'), 'E_CHECKSUM');
      expect((await m.acceptChecksum('m')).status).toBe('available');
    });
  }

  it('a side file an older version did not read is adopted when it predates the record; one added later is a change', async () => {
    const dir = await modelsDirNamed('side-adopted');
    const folder = await copyModel(TINY, path.join(dir, 'm'));
    await writeFile(path.join(folder, 'tokenizer_config.json'), '{"eos_token": "<|endoftext|>"}');
    expect((await manager(dir).getModelMetadata('m')).sideFiles?.map((f) => f.name)).toContain('tokenizer_config.json');
    const manifestFile = path.join(dir, MANIFEST_FILE_NAME);
    // What a version that did not read tokenizer_config.json recorded: the same entry without it.
    const forget = async (updatedAt: string) => {
      const manifest = JSON.parse(await readFile(manifestFile, 'utf8')) as { models: Record<string, { sideFiles: { name: string }[]; updatedAt: string }> };
      for (const entry of Object.values(manifest.models)) {
        entry.sideFiles = entry.sideFiles.filter((f) => f.name !== 'tokenizer_config.json');
        entry.updatedAt = updatedAt;
      }
      await writeFile(manifestFile, JSON.stringify(manifest));
    };
    await forget(new Date(Date.now() + 1_000).toISOString());
    const adopted = await manager(dir).getModelMetadata('m');
    expect(adopted.status).toBe('available');
    expect(adopted.sideFiles?.map((f) => f.name)).toContain('tokenizer_config.json');
    expect(await readFile(manifestFile, 'utf8')).toContain('tokenizer_config.json'); // recorded from now on
    // Recorded before the file's inode last changed: it appeared (or changed) after the record.
    await forget(new Date(0).toISOString());
    const added = await manager(dir).getModelMetadata('m');
    expect(added.status).toBe('corrupted');
    expect(added.error?.message).toContain(path.join(folder, 'tokenizer_config.json'));
  });

  it('a loaded model whose weights change is not served from the cache (E_CHECKSUM, as listModels says)', async () => {
    const dir = await modelsDirNamed('cached');
    const folder = await copyModel(TINY, path.join(dir, 'm'));
    const m = manager(dir);
    const model = await m.loadModel('m');
    // Touching without changing bytes keeps the cached model.
    const file = path.join(folder, 'model.safetensors');
    await utimes(file, new Date(), new Date(Date.now() + 3_000));
    expect(await m.loadModel('m')).toBe(model);
    const bytes = await readFile(file);
    bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 0xff;
    await writeFile(file, bytes);
    expect((await m.listModels())[0]?.status).toBe('corrupted');
    await expectCode(m.loadModel('m'), 'E_CHECKSUM');
    expect(model.disposed).toBe(true); // not kept in memory for anyone else either
    expect(m.loadedModels()).toEqual([]);
    m.dispose();
  });
});

describe('a leased model whose files change', () => {
  it('stays with its holder, is refused to new callers, and is unloaded at release', async () => {
    const dir = await modelsDirNamed('leased-change');
    const folder = await copyModel(TINY, path.join(dir, 'm'));
    const m = manager(dir);
    const lease = await m.acquireModel('m');
    const file = path.join(folder, 'model.safetensors');
    const bytes = await readFile(file);
    bytes[bytes.length - 1] = (bytes[bytes.length - 1] as number) ^ 0xff;
    await writeFile(file, bytes);
    await expectCode(m.loadModel('m'), 'E_CHECKSUM');
    expect(lease.model.disposed).toBe(false);
    lease.release();
    expect(lease.model.disposed).toBe(true);
    expect(m.loadedModels()).toEqual([]);
  });
});

describe('the manifest shared between processes', () => {
  it('a damaged manifest entry is dropped, not a crash (the model is recorded afresh)', async () => {
    const dir = await modelsDirNamed('damaged-manifest');
    await copyModel(TINY, path.join(dir, 'm'));
    const manifest = path.join(dir, MANIFEST_FILE_NAME);
    await writeFile(manifest, JSON.stringify({ version: 1, models: { [path.join(dir, 'm')]: { checksum: 'x', files: 'not a list' } } }));
    const meta = await manager(dir).getModelMetadata('m');
    expect(meta.error).toBeUndefined();
    expect(meta.status).toBe('available');
    const saved = JSON.parse(await readFile(manifest, 'utf8')) as { models: Record<string, { checksum: string }> };
    expect(saved.models[path.join(dir, 'm')]?.checksum).toBe(meta.checksum);
  });

  it('entries of models whose path is gone are dropped when the manifest is next written', async () => {
    const dir = await modelsDirNamed('gone-entries');
    await copyModel(TINY, path.join(dir, 'm'));
    const manifest = path.join(dir, MANIFEST_FILE_NAME);
    const gone = path.join(dir, 'deleted-model');
    const entry = { checksum: 'x', files: [], sideFiles: [], updatedAt: new Date(0).toISOString() };
    await writeFile(manifest, JSON.stringify({ version: 1, models: { [gone]: entry, [path.join(tmpdir(), 'no-such-dir', 'x.gguf')]: entry } }));
    await manager(dir).getModelMetadata('m');
    const saved = JSON.parse(await readFile(manifest, 'utf8')) as { models: Record<string, unknown> };
    expect(Object.keys(saved.models)).toEqual([path.join(dir, 'm')]);
  });

  it('never writes through a planted symlink at a temp-file name', async () => {
    const dir = await modelsDirNamed('planted');
    await copyModel(TINY, path.join(dir, 'm'));
    const victim = path.join(scratch.dir, 'victim.txt');
    await writeFile(victim, 'precious');
    const manifest = path.join(dir, MANIFEST_FILE_NAME);
    await symlink(victim, `${manifest}.${process.pid}.tmp`); // the name the old code used
    await symlink(victim, `${manifest}.tmp`);
    const m = manager(dir);
    expect((await m.getModelMetadata('m')).status).toBe('available');
    expect((await m.manifestStatus()).persistent).toBe(true);
    expect(await readFile(victim, 'utf8')).toBe('precious');
    expect(JSON.parse(await readFile(manifest, 'utf8')).models[path.join(dir, 'm')]).toBeDefined();
    // No temp or lock files are left behind (the two planted links are untouched).
    const left = (await readdir(dir)).filter((f) => f.startsWith('.') && f !== MANIFEST_FILE_NAME).sort();
    expect(left).toEqual([`${MANIFEST_FILE_NAME}.${process.pid}.tmp`, `${MANIFEST_FILE_NAME}.tmp`].sort());
  });

  it('a lock left by a dead process does not block saving', async () => {
    const dir = await modelsDirNamed('stale-lock');
    await copyModel(TINY, path.join(dir, 'm'));
    const dead = execFileSync(process.execPath, ['-e', 'console.log(process.pid)']).toString().trim();
    await writeFile(path.join(dir, `${MANIFEST_FILE_NAME}.lock`), `${dead}\n`);
    const m = manager(dir);
    await within(10_000, m.getModelMetadata('m'));
    expect((await m.manifestStatus()).persistent).toBe(true);
    expect(existsSync(path.join(dir, `${MANIFEST_FILE_NAME}.lock`))).toBe(false);
  });

  it('a folder planted at the lock path makes the manifest in-memory at once, not a hang', async () => {
    const dir = await modelsDirNamed('lock-folder');
    await copyModel(TINY, path.join(dir, 'm'));
    await mkdir(path.join(dir, `${MANIFEST_FILE_NAME}.lock`));
    await writeFile(path.join(dir, `${MANIFEST_FILE_NAME}.lock`, 'keep'), 'x');
    const m = manager(dir);
    expect((await within(5_000, m.getModelMetadata('m'))).status).toBe('available');
    const status = await m.manifestStatus();
    expect(status.persistent).toBe(false);
    expect(status.warning).toMatch(/not writable.*in memory/);
  });

  it('three processes describing 20 models each keep all 60 entries', async () => {
    const dir = await modelsDirNamed('concurrent');
    const names: string[][] = [[], [], []];
    // A real config (describe checks it as a load would); the weights are a header only (describe
    // checks it against the file's length), never loaded here.
    const config = await readFile(path.join(TINY, 'config.json'), 'utf8');
    for (let p = 0; p < 3; p++) {
      for (let i = 0; i < 20; i++) {
        const name = `m-${p}-${i}`;
        await mkdir(path.join(dir, name));
        await writeFile(path.join(dir, name, 'config.json'), config);
        await writeSafetensors(path.join(dir, name, 'model.safetensors'), new Map(), { name });
        names[p]?.push(name);
      }
    }
    const script = path.join(ROOT, 'test/manifest-writer.ts');
    const startAt = String(Date.now() + 5_000); // after all three have started up (tsx compiles first)
    const outputs = await Promise.all(names.map((list) => run(process.execPath, ['--import', 'tsx', script, startAt, dir, ...list], { cwd: ROOT })));
    expect(outputs.map((o) => o.stdout.trim())).toEqual(['20', '20', '20']);
    const manifest = JSON.parse(await readFile(path.join(dir, MANIFEST_FILE_NAME), 'utf8')) as { models: Record<string, unknown> };
    expect(Object.keys(manifest.models).sort()).toEqual(names.flat().map((n) => path.join(dir, n)).sort());
  });
});

describe('leases: a model handed out is never already disposed', () => {
  it('loadModel racing unloadModel: 50 runs, the caller always gets a live model', async () => {
    const dir = await modelsDirNamed('race');
    await copyModel(TINY, path.join(dir, 'm'));
    const m = manager(dir);
    let live = 0;
    for (let i = 0; i < 50; i++) {
      if (i % 2 === 1) await m.loadModel('m'); // half the runs race against a cached model
      // The guarantee: the model is live when loadModel's promise resolves (checked right then; by the
      // time Promise.all resumes, the unload the caller asked for may legitimately have run).
      const load = m.loadModel('m').then((model) => {
        if (!model.disposed && model.info.vocabSize > 0) live++;
        return model;
      });
      const [model] = await Promise.all([load, m.unloadModel('m')]);
      // Afterwards the unload has happened (after the hand-over) or came first (the load then stands):
      // never a disposed model in the cache, never a live one missing from it.
      await new Promise((resolve) => setImmediate(resolve));
      expect(m.loadedModels().includes(model)).toBe(!model.disposed);
    }
    expect(live).toBe(50);
    m.dispose();
  });

  it('unloadModel of a leased model waits for the release; the budget takes only idle models', async () => {
    const dir = await modelsDirNamed('leased');
    await copyModel(TINY, path.join(dir, 'a'));
    await copyModel(TINY, path.join(dir, 'b'));
    const m = manager(dir, { memoryBudgetBytes: 1 });
    const lease = await m.acquireModel('a');
    await m.unloadModel('a');
    expect(lease.model.disposed).toBe(false);
    const other = await m.acquireModel('b'); // over budget: neither leased model may go
    expect(lease.model.disposed).toBe(false);
    expect(other.model.disposed).toBe(false);
    lease.release(); // the deferred unload happens now
    expect(lease.model.disposed).toBe(true);
    expect(other.model.disposed).toBe(false);
    other.release();
    m.dispose();
  });
});

describe('abort signals', () => {
  it('an aborted signal stops listModels / getModelMetadata / loadModel / acquireModel with E_ABORTED', async () => {
    const dir = await modelsDirNamed('abort');
    await copyModel(TINY, path.join(dir, 'm'));
    const signal = AbortSignal.abort();
    const m = manager(dir);
    await expectCode(m.listModels({ signal }), 'E_ABORTED');
    await expectCode(m.getModelMetadata('m', { signal }), 'E_ABORTED');
    await expectCode(m.loadModel('m', { signal }), 'E_ABORTED');
    await expectCode(m.acquireModel('m', { signal }), 'E_ABORTED');
    await expectCode(m.getFallbackModel('mamba', { signal }), 'E_ABORTED');
    expect(m.loadedModels()).toEqual([]);
    expect((await m.loadModel('m')).disposed).toBe(false); // nothing stuck afterwards
    m.dispose();
  });

  it('aborting during checksums stops the load before the engine starts', async () => {
    const dir = await modelsDirNamed('abort-hash');
    await copyModel(LITE, path.join(dir, 'lite'));
    const controller = new AbortController();
    const events: ModelProgressEvent[] = [];
    const m = manager(dir, {
      onProgress: (e) => {
        events.push(e);
        if (e.kind === 'checksum') controller.abort();
      },
    });
    await expectCode(m.loadModel('lite', { signal: controller.signal }), 'E_ABORTED');
    expect(events.filter((e) => e.kind === 'checksum')).toHaveLength(1); // the side files were not hashed
    expect(events.some((e) => e.kind === 'load-start')).toBe(false);
    expect(m.loadedModels()).toEqual([]);
  });

  it('a caller that stops waiting leaves the load running in the background; it stays cached', async () => {
    const dir = await modelsDirNamed('abort-wait');
    await copyModel(TINY, path.join(dir, 'm'));
    const events: ModelProgressEvent[] = [];
    const m = manager(dir, { onProgress: (e) => events.push(e) });
    const controller = new AbortController();
    const patient = m.loadModel('m');
    const impatient = m.loadModel('m', { signal: controller.signal });
    controller.abort();
    await expectCode(impatient, 'E_ABORTED');
    const model = await patient;
    expect(model.disposed).toBe(false);
    expect(m.loadedModels()).toEqual([model]);
    expect(events.filter((e) => e.kind === 'load-start')).toHaveLength(1);
    m.dispose();
  });
});

describe('the default models dir', () => {
  it('is PHOENIX_MODELS_DIR, else ./models when present, else the bundled models of the package', async () => {
    expect(bundledModelsDir()).toBe(path.join(ROOT, 'models'));
    expect(existsSync(path.join(bundledModelsDir(), 'phoenix-ssm-lite', 'config.json'))).toBe(true);
    const empty = await modelsDirNamed('cwd-without-models');
    const withModels = await modelsDirNamed('cwd-with-models');
    await mkdir(path.join(withModels, 'models'));
    const saved = process.cwd();
    try {
      process.chdir(empty);
      expect(defaultModelsDir({})).toBe(bundledModelsDir());
      expect(defaultModelsDir({ PHOENIX_MODELS_DIR: withModels })).toBe(withModels);
      process.chdir(withModels);
      expect(defaultModelsDir({})).toBe(path.join(process.cwd(), 'models'));
    } finally {
      process.chdir(saved);
    }
  });

  it('a ./models without the name does not hide the bundled model (unless a models dir is given)', async () => {
    const project = await modelsDirNamed('cwd-with-unrelated-models');
    await mkdir(path.join(project, 'models', 'unrelated'), { recursive: true });
    const saved = process.cwd();
    const savedEnv = process.env.PHOENIX_MODELS_DIR;
    try {
      process.chdir(project);
      delete process.env.PHOENIX_MODELS_DIR;
      const m = new LocalModelManager({ engines: [engine], measurePerformance: false });
      expect(m.modelsDir).toBe(path.join(process.cwd(), 'models'));
      const metadata = await m.getModelMetadata('phoenix-ssm-lite');
      expect(metadata.path).toBe(path.join(bundledModelsDir(), 'phoenix-ssm-lite'));
      expect(metadata.status).toBe('available');
      const model = await m.loadModel('phoenix-ssm-lite');
      expect(model.disposed).toBe(false);
      // Listed as found by name: ./models' entries first, then the bundled ones it lacks.
      const listed = await m.listModels();
      expect(listed[0]?.name).toBe('unrelated');
      expect(listed.find((x) => x.name === 'phoenix-ssm-lite')).toMatchObject({ path: path.join(bundledModelsDir(), 'phoenix-ssm-lite'), status: 'loaded' });
      m.dispose();
      // A pipeline over that default dir serves the preference from the bundled models.
      const defaulted = new LocalModelManager({ engines: [engine], measurePerformance: false });
      const pipeline = new LocalAIPipeline({ manager: defaulted });
      try {
        const result = await pipeline.process({ id: 'bundled', input: 'Once upon a time', taskType: 'generation', modelPreference: 'phoenix-ssm-lite', options: { maxTokens: 2 } });
        expect(result).toMatchObject({ success: true, modelUsed: 'phoenix-ssm-lite', fallbackUsed: false });
        expect(result.metadata.selection).toBe('preferred model "phoenix-ssm-lite"');
      } finally {
        pipeline.dispose();
        defaulted.dispose();
      }
      // A manager that lists less than it finds by name: the preference is still served, not passed over.
      class ListsOnlyItsDir extends LocalModelManager {
        override async listModels(): Promise<Awaited<ReturnType<LocalModelManager['listModels']>>> {
          return (await super.listModels()).filter((x) => x.name === 'unrelated');
        }
      }
      const partial = new ListsOnlyItsDir({ engines: [engine], measurePerformance: false });
      const partialPipeline = new LocalAIPipeline({ manager: partial });
      try {
        const result = await partialPipeline.process({ id: 'listed-less', input: 'Once upon a time', taskType: 'generation', modelPreference: 'phoenix-ssm-lite', options: { maxTokens: 2 } });
        expect(result).toMatchObject({ success: true, modelUsed: 'phoenix-ssm-lite' });
      } finally {
        partialPipeline.dispose();
        partial.dispose();
      }
      const explicit = new LocalModelManager({ modelsDir: path.join(project, 'models'), engines: [engine] });
      await expectCode(explicit.getModelMetadata('phoenix-ssm-lite'), 'E_MODEL_NOT_FOUND');
      expect((await explicit.listModels()).map((x) => x.name)).toEqual(['unrelated']);
    } finally {
      process.chdir(saved);
      if (savedEnv !== undefined) process.env.PHOENIX_MODELS_DIR = savedEnv;
    }
  });

  it('E_MODEL_NOT_FOUND names the folders searched', async () => {
    const missing = path.join(scratch.dir, 'no-such-models-dir');
    const error = await expectCode(manager(missing).loadModel('nope'), 'E_MODEL_NOT_FOUND');
    expect(error.message).toContain(missing);
    expect(error.message).toContain('does not exist');
    const saved = process.cwd();
    const savedEnv = process.env.PHOENIX_MODELS_DIR;
    try {
      process.chdir(await modelsDirNamed('cwd-for-not-found'));
      delete process.env.PHOENIX_MODELS_DIR;
      const error2 = await expectCode(new LocalModelManager({ engines: [engine] }).getModelMetadata('nope'), 'E_MODEL_NOT_FOUND');
      expect(error2.message).toContain(bundledModelsDir());
      expect(error2.message).toContain(path.join(process.cwd(), 'models'));
    } finally {
      process.chdir(saved);
      if (savedEnv !== undefined) process.env.PHOENIX_MODELS_DIR = savedEnv;
    }
  });
});
