/**
 * Failures inside WASM: a core panic and a hard trap (`unreachable`) must reach JS as typed
 * `E_INTERNAL` errors, never kill the process, and leave the binding usable — the same instance when
 * the panic was caught (panic=unwind builds), a fresh instance after a trap (its memory may be
 * mid-update, so every handle from it is refused). Faults are injected through the module's
 * `injectFault` test hook; everything else is the real module and model.
 */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';

import { defaultWasmPath, loadBinding } from '../ts/binding/load.js';
import { defaultEngines } from '../ts/engines/default-engines.js';
import { LocalModelManager } from '../ts/models/manager.js';
import type { RawBinding, RawModel } from '../ts/binding/types.js';
import { TINY, WASM_BUILT, WASM_REQUIRED, expectCode, rawFailure, requireBackend, tempDir } from './helpers.js';

interface WasmEntry extends RawBinding {
  instances(): number;
  injectFault(kind: 'panic' | 'trap' | string): void;
}


describe.runIf(WASM_BUILT || WASM_REQUIRED)('faults inside the WASM module', () => {
  let wasm: WasmEntry;
  let reference: Float32Array;

  beforeAll(async () => {
    requireBackend('wasm');
    wasm = (await import(pathToFileURL(defaultWasmPath()).href)) as WasmEntry;
    const model = await wasm.loadModel(TINY);
    reference = await model.logits([0, 1, 2]);
    model.dispose();
  });

  async function stillComputes(model: RawModel): Promise<void> {
    expect(Array.from(await model.logits([0, 1, 2]))).toEqual(Array.from(reference));
  }

  it('a core panic is E_INTERNAL with the panic message; the binding keeps working', async () => {
    const model = await wasm.loadModel(TINY);
    const before = wasm.instances();
    const error = await rawFailure(() => wasm.injectFault('panic'));
    expect(error.code).toBe('E_INTERNAL');
    expect(error.message).toContain('fault injected on request');
    if (error.message.includes('caught panic')) {
      // panic=unwind: caught in the core like natively; same instance, same models.
      expect(wasm.instances()).toBe(before);
      await stillComputes(model);
    } else {
      // panic=abort: a trap; the instance is replaced and its handles are refused.
      expect((await rawFailure(() => model.logits([0]))).code).toBe('E_INTERNAL');
      await stillComputes(await wasm.loadModel(TINY));
      expect(wasm.instances()).toBe(before + 1);
    }
  });

  it('a trap is E_INTERNAL; handles of the trapped instance are refused; the next load gets a fresh instance', async () => {
    const model = await wasm.loadModel(TINY);
    const generation = model.generate({ ids: [0, 1] }, { maxTokens: 8, temperature: 0 }, null);
    expect(await generation.next()).not.toBeNull();
    const before = wasm.instances();

    const trap = await rawFailure(() => wasm.injectFault('trap'));
    expect(trap.code).toBe('E_INTERNAL');
    expect(trap.message).toMatch(/WebAssembly trap|unreachable/i);

    const stale = await rawFailure(() => model.logits([0, 1, 2]));
    expect(stale.code).toBe('E_INTERNAL');
    expect(stale.message).toContain('trapped earlier');
    expect((await rawFailure(() => generation.next())).code).toBe('E_INTERNAL');
    // Lost handles say so, and freeing or cancelling them is a no-op (their memory went with the instance).
    expect(model.lost?.()).toMatch(/WebAssembly trap|unreachable/i);
    expect(() => generation.cancel()).not.toThrow();
    expect(() => generation.dispose()).not.toThrow();
    expect(() => model.dispose()).not.toThrow();

    const fresh = await wasm.loadModel(TINY);
    expect(wasm.instances()).toBe(before + 1);
    expect(fresh.lost?.()).toBeNull();
    await stillComputes(fresh);
    fresh.dispose();
  });

  it('a manager on WASM reloads a model its trapped instance took along, and disposes without throwing', async () => {
    const binding = loadBinding({ backend: 'wasm' });
    const scratch = await tempDir();
    // The manifest goes to a scratch dir, not into the fixtures.
    const manifestPath = path.join(scratch.dir, 'manifest.json');
    const manager = new LocalModelManager({ modelsDir: path.dirname(TINY), manifestPath, binding, engines: defaultEngines({ binding }), measurePerformance: false });
    const name = path.basename(TINY);
    const first = await manager.loadModel(name);
    expect((await manager.getModelMetadata(name)).status).toBe('loaded');
    await rawFailure(() => wasm.injectFault('trap'));
    // Gone with the instance: not listed as loaded, and the next load is a fresh, working model.
    expect(first.disposed).toBe(true);
    expect((await manager.getModelMetadata(name)).status).not.toBe('loaded');
    const second = await manager.loadModel(name);
    expect(second).not.toBe(first);
    expect(second.disposed).toBe(false);
    expect(() => first.dispose()).not.toThrow();
    expect(() => manager.dispose()).not.toThrow();
    expect(second.disposed).toBe(true);
    await scratch.cleanup();
  });

  it('an unknown fault kind is a plain E_INVALID_OPTION (no trap, same instance)', async () => {
    const before = wasm.instances();
    await expectCode(rawFailure(() => wasm.injectFault('meteor')).then((e) => Promise.reject(e)), 'E_INVALID_OPTION');
    expect(wasm.instances()).toBe(before);
  });
});
