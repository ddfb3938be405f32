/**
 * Error typing and the binding loader: wire parsing, backend choice (and why), forced backends.
 */
import { spawnSync } from 'node:child_process';
import { copyFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { describe, expect, it } from 'vitest';

import { PhoenixError, isPhoenixError, parseWireError, toPhoenixError } from '../ts/binding/errors.js';
import { defaultNativePath, getDefaultBinding, loadBinding, nativePlatformSuffix } from '../ts/binding/load.js';
import { expectCode, NO_WASM, requireBackend, requireNativeAddon, ROOT, TEST_BACKENDS, TINY, tempDir } from './helpers.js';

describe('PhoenixError', () => {
  it('parses the wire form into code + message', () => {
    expect(parseWireError('[E_BAD_CONFIG] config.json: field `d_model` missing')).toEqual({ code: 'E_BAD_CONFIG', message: 'config.json: field `d_model` missing' });
    expect(parseWireError('[E_NOT_A_CODE] x')).toBeUndefined();
    expect(parseWireError('plain message')).toBeUndefined();
  });

  it('turns anything thrown into a typed error; unknown → E_INTERNAL', () => {
    const wire = toPhoenixError(new Error('[E_BAD_WEIGHTS] model.safetensors: tensor `x` missing'));
    expect(wire).toBeInstanceOf(PhoenixError);
    expect(wire.code).toBe('E_BAD_WEIGHTS');
    expect(wire.message).toBe('model.safetensors: tensor `x` missing');
    const other = toPhoenixError(new TypeError('boom'));
    expect(other.code).toBe('E_INTERNAL');
    expect(other.message).toContain('boom');
    expect(toPhoenixError('a string').code).toBe('E_INTERNAL');
    const coded = toPhoenixError(Object.assign(new Error('no such model'), { code: 'E_MODEL_NOT_FOUND' }));
    expect(coded.code).toBe('E_MODEL_NOT_FOUND');
    const same = new PhoenixError('E_ABORTED', 'x');
    expect(toPhoenixError(same)).toBe(same);
    expect(isPhoenixError(same, 'E_ABORTED')).toBe(true);
    expect(same.toWire()).toBe('[E_ABORTED] x');
    expect(JSON.parse(JSON.stringify(same))).toMatchObject({ code: 'E_ABORTED', message: 'x' });
  });
});

describe('binding loader', () => {
  it('picks the native addon for this platform and says why', async () => {
    requireNativeAddon();
    expect(defaultNativePath()).toMatch(new RegExp(`phoenix-local\\.${nativePlatformSuffix()}\\.node$`));
    const selection = await loadBinding({ env: {} });
    expect(selection.backend).toBe('native');
    expect(selection.path).toBe(defaultNativePath());
    expect(selection.reason).toMatch(/native/);
    expect(selection.attempts).toEqual([{ backend: 'native', path: defaultNativePath(), ok: true, reason: 'loaded' }]);
    expect(selection.buildInfo.version).toMatch(/^\d+\.\d+\.\d+/);
    expect(selection.buildInfo.threads).toBeGreaterThan(0);
  });

  it('PHOENIX_BACKEND=native or the option forces a backend (reason says so)', async () => {
    requireNativeAddon();
    expect((await loadBinding({ env: { PHOENIX_BACKEND: 'native' } })).reason).toBe('forced by PHOENIX_BACKEND=native');
    expect((await loadBinding({ backend: 'native', env: { PHOENIX_BACKEND: 'wasm' } })).reason).toBe('forced by backend option "native"');
  });

  it('forcing a backend that cannot load → E_BACKEND_UNAVAILABLE with the reason', async () => {
    const wasm = await expectCode(loadBinding({ env: { PHOENIX_BACKEND: 'wasm', PHOENIX_WASM_PATH: NO_WASM } }), 'E_BACKEND_UNAVAILABLE');
    expect(wasm.message).toMatch(/PHOENIX_BACKEND=wasm.*WASM build not found/);
    const native = await expectCode(loadBinding({ backend: 'native', nativePath: '/nonexistent/phoenix.node' }), 'E_BACKEND_UNAVAILABLE');
    expect(native.message).toContain('/nonexistent/phoenix.node');
    const all = await expectCode(loadBinding({ env: {}, nativePath: '/nonexistent/phoenix.node', wasmPath: NO_WASM }), 'E_BACKEND_UNAVAILABLE');
    expect(all.message).toMatch(/native: .*wasm: /);
    expect((all.details.attempts as unknown[]).length).toBe(2);
  });

  it('a file that is not a phoenix binding is refused with a reason', async () => {
    const scratch = await tempDir('phoenix-binding-files-');
    try {
      // Only a .node file is handed to require(): anything else would run as JavaScript.
      const script = path.join(scratch.dir, 'not-an-addon.js');
      await writeFile(script, 'globalThis.__phoenixRanIt = true; module.exports = {};');
      const js = await expectCode(loadBinding({ backend: 'native', nativePath: script }), 'E_BACKEND_UNAVAILABLE');
      expect(js.message).toContain(`${script} is not a native addon (a .node file)`);
      expect((globalThis as { __phoenixRanIt?: boolean }).__phoenixRanIt).toBeUndefined();
      // Given explicitly, a missing addon gets no advice to build this checkout.
      const missing = await expectCode(loadBinding({ backend: 'native', nativePath: path.join(scratch.dir, 'absent.node') }), 'E_BACKEND_UNAVAILABLE');
      expect(missing.message).not.toContain('npm run build:native');
      // A file Node cannot load at all: the reason names the file, whatever Node's own error says.
      const garbage = path.join(scratch.dir, 'garbage.node');
      await copyFile(new URL('../README.md', import.meta.url), garbage);
      const error = await expectCode(loadBinding({ backend: 'native', nativePath: garbage }), 'E_BACKEND_UNAVAILABLE');
      expect(error.message).toContain(`${garbage} does not load as a native addon: `);
      // A module that loads but is no phoenix binding.
      const stranger = path.join(scratch.dir, 'stranger.mjs');
      await writeFile(stranger, 'export const hello = 1;');
      const shape = await expectCode(loadBinding({ backend: 'wasm', wasmPath: stranger }), 'E_BACKEND_UNAVAILABLE');
      expect(shape.message).toMatch(/does not export loadModel/);
    } finally {
      await scratch.cleanup();
    }
  });

  it('a bad PHOENIX_BACKEND value is E_INVALID_OPTION', async () => {
    await expectCode(loadBinding({ env: { PHOENIX_BACKEND: 'gpu' } }), 'E_INVALID_OPTION');
  });

  it('a PHOENIX_SIMD that names no level stops the native load (E_INVALID_OPTION), instead of running uncapped', () => {
    requireNativeAddon();
    // The core reads the variable from its own process environment: a child process with it set.
    const loader = path.join(ROOT, 'ts/binding/load.ts');
    const script = `const { loadBinding } = await import(${JSON.stringify(loader)});
loadBinding({ backend: 'native' }).then((s) => console.log('loaded ' + s.buildInfo.simd), (e) => console.log(e.code + ' ' + e.message));`;
    const run = (simd: string) => spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, PHOENIX_SIMD: simd }, timeout: 60_000 });
    const bogus = run('avx9000');
    expect(bogus.stdout.trim(), bogus.stderr).toBe('E_INVALID_OPTION PHOENIX_SIMD="avx9000" is not a SIMD level: use one of avx512, avx2, baseline (or leave it unset)');
    const baseline = run('baseline');
    expect(baseline.stdout.trim(), baseline.stderr).toBe('loaded baseline (sse2)');
    expect(run('').stdout.trim()).toMatch(/^loaded /);
  });

  it('every raw call of the loaded binding throws typed errors', async () => {
    requireNativeAddon();
    const { binding } = await getDefaultBinding();
    await expectCode(binding.loadModel('/nonexistent/model-folder'), 'E_MODEL_NOT_FOUND');
    const model = await binding.loadModel(TINY);
    await expectCode(model.logits([99999]), 'E_INVALID_OPTION');
    await expectCode(async () => model.generate({ ids: [1, 2] }, { maxTokens: 0 }).next(), 'E_INVALID_OPTION');
    model.dispose();
    await expectCode(model.logits([1]), 'E_INVALID_OPTION');
  });

  it.each(TEST_BACKENDS)('disposing a %s model while its tokenize, logits and score are pending does not throw; they settle typed', async (backend) => {
    requireBackend(backend);
    const { binding } = await loadBinding({ backend });
    const model = await binding.loadModel(TINY);
    const ids = Array.from({ length: 64 }, (_, i) => i % 100);
    const running = [model.tokenize('once upon a time '.repeat(200), true), model.logits(ids), model.score(ids, { includeLogits: false })];
    // napi-rs had refused this dispose (E_INTERNAL "cannot be borrowed mutably") while a promise was pending.
    const vocab = model.info().vocabSize;
    expect(() => model.dispose()).not.toThrow();
    if (backend === 'native') {
      // Running on libuv workers, each holds its own reference to the weights: they finish.
      const [tokens, logits, scored] = await Promise.all(running);
      expect((tokens as number[]).length).toBeGreaterThan(0);
      expect((logits as Float32Array).length).toBe(ids.length * vocab);
      expect((scored as { tokenLogprobs: number[] }).tokenLogprobs.length).toBe(ids.length - 1);
    } else {
      // WASM runs a call after yielding to the event loop; in its worker thread the dispose may arrive
      // before or after a call started: each one either completes or is "model disposed", never other.
      const settled = await Promise.allSettled(running);
      for (const outcome of settled) {
        if (outcome.status === 'rejected') {
          expect(outcome.reason).toBeInstanceOf(PhoenixError);
          expect((outcome.reason as PhoenixError).code).toBe('E_INVALID_OPTION');
          expect((outcome.reason as PhoenixError).message).toMatch(/disposed/);
        }
      }
      const [tokens, logits] = settled.map((o) => (o.status === 'fulfilled' ? o.value : null));
      if (tokens !== null) expect((tokens as number[]).length).toBeGreaterThan(0);
      if (logits !== null) expect((logits as Float32Array).length).toBe(ids.length * vocab);
    }
    await expectCode(model.logits([1]), 'E_INVALID_OPTION');
  });
});
