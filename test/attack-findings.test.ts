/**
 * Attacks on the hardened TypeScript side that its first fixes missed (issue 8, attack share).
 */
import { cpSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readSync, openSync, writeFileSync, writeSync, closeSync, rmSync, statSync, utimesSync } from 'node:fs';
import { execFileSync, spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterEach, describe, expect, it } from 'vitest';

import { checkWritableFile, writeOutputFile } from '../ts/cli/destination.js';
import { main } from '../ts/cli/main.js';
import { LocalAIPipeline, LocalModelManager, MambaSSMEngine, MANIFEST_FILE_NAME, PhoenixError, ProcessingMode } from '../ts/index.js';
import type { ModelMetadata } from '../ts/index.js';

const BUNDLED = fileURLToPath(new URL('../models/phoenix-ssm-lite', import.meta.url));
const folders: string[] = [];

afterEach(() => {
  for (const dir of folders.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A models dir holding copies of the bundled model named `names` (default: `lite`). */
function modelsDirWithCopy(names: readonly string[] = ['lite']): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'phoenix-attack-'));
  folders.push(dir);
  for (const name of names) cpSync(BUNDLED, path.join(dir, name), { recursive: true });
  return dir;
}

/** Flips one byte of `file` in place and puts its mtime back (as an attacker covering tracks would). */
function flipByteKeepingMtime(file: string, at: number): void {
  const before = statSync(file);
  const fd = openSync(file, 'r+');
  try {
    const byte = Buffer.alloc(1);
    readSync(fd, byte, 0, 1, at);
    byte[0] = (byte[0] as number) ^ 0x40;
    writeSync(fd, byte, 0, 1, at);
  } finally {
    closeSync(fd);
  }
  utimesSync(file, before.atime, before.mtime);
}

describe('a weight file changed between its checksum and the engine reading it', () => {
  it('is refused with E_CHECKSUM instead of being loaded and handed out', async () => {
    const dir = modelsDirWithCopy();
    const weights = path.join(dir, 'lite', 'model.safetensors');
    const real = new MambaSSMEngine();
    let loads = 0;
    // The engine is the real one; only the moment is staged: the bytes change after the manager
    // hashed them and before the core reads them (a race an attacker can win on a slow disk).
    const racing = new Proxy(real, {
      get(target, prop, receiver) {
        if (prop === 'loadModel') {
          return async (metadata: ModelMetadata) => {
            loads++;
            flipByteKeepingMtime(weights, statSync(weights).size - 100);
            return target.loadModel(metadata);
          };
        }
        const value = Reflect.get(target, prop, receiver) as unknown;
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
    const manager = new LocalModelManager({ modelsDir: dir, engines: [racing], measurePerformance: false });
    try {
      await manager.listModels(); // records the trusted checksums
      const error = await manager.loadModel('lite').then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(loads).toBe(1);
      expect(error).toBeInstanceOf(PhoenixError);
      expect((error as PhoenixError).code).toBe('E_CHECKSUM');
      expect(manager.loadedModels()).toHaveLength(0);
      expect((await manager.getModelMetadata('lite')).status).toBe('corrupted');
    } finally {
      manager.dispose();
    }
  });
});

describe('a manifest lock that never goes away', () => {
  const models = ['a', 'b', 'c'];

  function recordedModels(dir: string): string[] {
    const manifest = JSON.parse(readFileSync(path.join(dir, MANIFEST_FILE_NAME), 'utf8')) as { models: Record<string, unknown> };
    return Object.keys(manifest.models).map((folder) => path.basename(folder)).sort();
  }

  it('is stale when its mtime lies in the future (planted), instead of costing every save 15 s', async () => {
    const dir = modelsDirWithCopy(models);
    const lock = path.join(dir, `${MANIFEST_FILE_NAME}.lock`);
    // A live pid (pid 1 always exists) and an mtime no save could have written.
    writeFileSync(lock, '1\n');
    utimesSync(lock, new Date('2030-01-01'), new Date('2030-01-01'));
    const manager = new LocalModelManager({ modelsDir: dir, measurePerformance: false });
    const started = performance.now();
    const listed = await manager.listModels();
    const elapsed = performance.now() - started;
    expect(listed.map((m) => m.status)).toEqual(['available', 'available', 'available']);
    expect(elapsed).toBeLessThan(10_000); // was 3 × 15 s
    expect((await manager.manifestStatus()).persistent).toBe(true);
    expect(recordedModels(dir)).toEqual(models);
    expect(existsSync(lock)).toBe(false);
  });

  it('held by a live process: one save waits for it, the following ones do not wait again', async () => {
    const dir = modelsDirWithCopy(models);
    const lock = path.join(dir, `${MANIFEST_FILE_NAME}.lock`);
    writeFileSync(lock, `${process.pid}\n`); // alive, fresh: not stale
    const manager = new LocalModelManager({ modelsDir: dir, measurePerformance: false });
    const started = performance.now();
    const listed = await manager.listModels();
    const elapsed = performance.now() - started;
    expect(listed).toHaveLength(3);
    expect(elapsed).toBeLessThan(25_000); // one wait of 15 s, not three (45 s)
    const status = await manager.manifestStatus();
    expect(status.persistent).toBe(false);
    expect(status.warning).toMatch(/ELOCKED/);
    // Once the lock is gone, the next save reaches the disk again.
    rmSync(lock);
    await manager.acceptChecksum('a');
    expect((await manager.manifestStatus()).persistent).toBe(true);
    expect(recordedModels(dir)).toEqual(models);
  });
});

describe('model folder names written to a terminal', () => {
  /** Runs the CLI in-process, capturing what it writes. */
  async function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
    let stdout = '';
    let stderr = '';
    const code = await main(args, { stdout: { write: (t) => void (stdout += t) }, stderr: { write: (t) => void (stderr += t) } });
    return { code, stdout, stderr };
  }
  const CONTROL = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f\u202e]/u;

  it('cannot inject escape sequences or forge rows of list, info or error output', async () => {
    // An ANSI colour, a newline that starts a fake row, and a right-to-left override.
    const forged = 'x\u001b[31mred\u001b[0m\nfake-model  mamba  hf-safetensors  1 B  available\u202e';
    const dir = modelsDirWithCopy([forged]);
    cpSync(BUNDLED, path.join(dir, `${forged}-broken`), { recursive: true });
    rmSync(path.join(dir, `${forged}-broken`, 'config.json'));

    const list = await cli(['list', '--models-dir', dir, '-q']);
    expect(list.code).toBe(0);
    expect(list.stdout).not.toMatch(CONTROL);
    // The header, one row per model, and the broken model's error line: nothing forged.
    expect(list.stdout.trimEnd().split('\n')).toHaveLength(4);
    expect(list.stdout).toContain('\\u{1b}[31mred');

    const info = await cli(['info', '--no-load', '--models-dir', dir, forged]);
    expect(info.code).toBe(0);
    expect(info.stdout).not.toMatch(CONTROL);
    expect(info.stdout.split('\n').filter((line) => line.startsWith('fake-model'))).toEqual([]);

    const failed = await cli(['info', '--no-load', '--models-dir', dir, `${forged}-broken`]);
    expect(failed.code).toBe(1);
    // No config.json: the core's code (the manager no longer keeps a rule of its own).
    expect(failed.stderr).toMatch(/^phoenix-local: E_MODEL_NOT_FOUND: /);
    expect(failed.stderr).not.toMatch(CONTROL);
    expect(failed.stderr.trimEnd().split('\n')).toHaveLength(1);
  });
});

describe('--save-state replaced by a FIFO while the model generated', () => {
  it('fails with a typed error instead of blocking forever on the write', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'phoenix-attack-'));
    folders.push(dir);
    const target = path.join(dir, 'state.bin');
    await checkWritableFile('save-state', target); // absent: fine when checked before the generation
    execFileSync('mkfifo', [target]); // planted during the generation; nobody reads it
    const outcome = await Promise.race([
      writeOutputFile('save-state', target, new Uint8Array([1, 2, 3])).then(
        () => 'written',
        (e: unknown) => e,
      ),
      new Promise((resolve) => setTimeout(() => resolve('still blocked after 5 s'), 5_000).unref()),
    ]);
    expect(outcome).toBeInstanceOf(PhoenixError);
    expect((outcome as PhoenixError).code).toBe('E_INVALID_OPTION');
    expect((outcome as PhoenixError).message).toContain(target);
  });

  it('still writes a regular file, replacing longer old contents', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'phoenix-attack-'));
    folders.push(dir);
    const target = path.join(dir, 'state.bin');
    writeFileSync(target, 'old contents that are longer');
    await writeOutputFile('save-state', target, new Uint8Array([1, 2, 3]));
    expect([...readFileSync(target)]).toEqual([1, 2, 3]);
  });
});

const WASM_BUILT = existsSync(fileURLToPath(new URL('../wasm/phoenix-local.js', import.meta.url)));

describe('engine.loadModel on the WASM backend with a FIFO for config.json', () => {
  // The public engine path has no manager in front of it; native refused the FIFO, WASM read it
  // forever with the JS thread blocked (no timer could fire), so the load runs in a child process.
  it.skipIf(!WASM_BUILT)('refuses it as native does instead of blocking forever (needs npm run build:wasm)', () => {
    const dir = modelsDirWithCopy();
    const folder = path.join(dir, 'lite');
    rmSync(path.join(folder, 'config.json'));
    execFileSync('mkfifo', [path.join(folder, 'config.json')]);
    const script = path.join(dir, 'load.mts');
    writeFileSync(
      script,
      `import { loadBinding, MambaSSMEngine } from ${JSON.stringify(fileURLToPath(new URL('../ts/index.ts', import.meta.url)))};
const metadata = { name: 'lite', path: ${JSON.stringify(folder)}, modelType: 'mamba', format: 'hf-safetensors', version: '1',
  sizeBytes: 0, checksum: '', weightFiles: [], status: 'available', hasTokenizer: true };
const out = {};
for (const backend of ['native', 'wasm']) {
  const engine = new MambaSSMEngine({ binding: loadBinding({ backend }) });
  out[backend] = await engine.loadModel(metadata).then(() => 'loaded', (e) => ({ code: e.code, message: e.message }));
}
console.log(JSON.stringify(out));
process.exit(0);
`,
    );
    const tsx = fileURLToPath(new URL('../node_modules/.bin/tsx', import.meta.url));
    const child = spawnSync(tsx, [script], { encoding: 'utf8', timeout: 30_000 });
    expect(child.signal, `the load blocked (stderr: ${child.stderr})`).toBeNull();
    const { native, wasm } = JSON.parse(child.stdout.trim().split('\n').pop() as string) as Record<string, { code: string; message: string }>;
    expect(native?.code).toBe('E_BAD_CONFIG');
    expect(native?.message).toContain('not a regular file');
    expect(wasm).toEqual(native);
  });
});

describe('the pipeline reporting a broken model it skipped', () => {
  it("gives the manager's error, not 'no-tokenizer' read off the placeholder metadata", async () => {
    const dir = modelsDirWithCopy(['broken', 'lite']);
    const weights = path.join(dir, 'broken', 'model.safetensors');
    rmSync(weights);
    mkdirSync(weights); // a folder where the weights belong: the manager lists the model as `error`
    const pipeline = new LocalAIPipeline({ modelsDir: dir });
    const result = await pipeline.process({
      id: 'skip-report',
      input: 'Once upon a time',
      taskType: 'generation',
      mode: ProcessingMode.OFFLINE_ONLY,
      options: { maxTokens: 2 },
    });
    expect(result.success).toBe(true);
    expect(result.modelUsed).toBe('lite');
    const skipped = result.skippedModels?.find((s) => s.name === 'broken');
    expect(skipped).toMatchObject({ reason: 'unusable', code: 'E_BAD_WEIGHTS', status: 'error' });
    expect(skipped?.message).toContain('model.safetensors');
  });

  it('still tries a broken preferred model first, and reports why it failed', async () => {
    const dir = modelsDirWithCopy(['broken', 'lite']);
    const weights = path.join(dir, 'broken', 'model.safetensors');
    rmSync(weights);
    mkdirSync(weights);
    const pipeline = new LocalAIPipeline({ modelsDir: dir });
    const result = await pipeline.process({
      id: 'skip-report-preferred',
      input: 'Once upon a time',
      taskType: 'generation',
      mode: ProcessingMode.OFFLINE_ONLY,
      modelPreference: 'broken',
      options: { maxTokens: 2 },
    });
    expect(result.modelUsed).toBe('lite');
    expect(result.fallbackUsed).toBe(true);
    expect(result.skippedModels?.find((s) => s.name === 'broken')?.code).toBe('E_BAD_WEIGHTS');
  });
});
