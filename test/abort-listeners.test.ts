/**
 * One caller signal shared by many calls (a server's shutdown signal) must not trip Node's
 * 10-listener warning, and must still stop every call watching it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { loadBinding } from '../ts/binding/load.js';
import { MambaSSMEngine } from '../ts/engines/mamba-engine.js';
import type { LoadedModel } from '../ts/engines/types.js';
import { LocalModelManager } from '../ts/models/manager.js';
import { listenAbort, unlistenAbort } from '../ts/util/abort-listeners.js';
import { TINY, requireNativeAddon, tempDir } from './helpers.js';

/** Warnings Node emits while `work` runs (and the ticks after it). */
async function warningsDuring(work: () => Promise<unknown>): Promise<string[]> {
  const seen: string[] = [];
  const onWarning = (warning: Error): void => {
    seen.push(`${warning.name}: ${warning.message}`);
  };
  process.on('warning', onWarning);
  try {
    await work();
    await new Promise((resolve) => setTimeout(resolve, 20));
  } finally {
    process.off('warning', onWarning);
  }
  return seen;
}

describe('abort listeners', () => {
  it('relay: each listener runs once at the abort, removed ones never; the signal holds one listener', async () => {
    const controller = new AbortController();
    const calls: number[] = [];
    const listeners = Array.from({ length: 30 }, (_, i) => () => calls.push(i));
    const warnings = await warningsDuring(async () => {
      for (const listener of listeners) listenAbort(controller.signal, listener);
      unlistenAbort(controller.signal, listeners[3]!);
      controller.abort();
      controller.abort();
    });
    expect(warnings).toEqual([]);
    expect(calls).toEqual(Array.from({ length: 30 }, (_, i) => i).filter((i) => i !== 3));
  });

  describe('through the engine', () => {
    let scratch: Awaited<ReturnType<typeof tempDir>>;
    let engine: MambaSSMEngine;
    let model: LoadedModel;

    beforeAll(async () => {
      requireNativeAddon();
      scratch = await tempDir();
      engine = new MambaSSMEngine({ binding: await loadBinding({ backend: 'native' }) });
      const manager = new LocalModelManager({ modelsDir: scratch.dir, engines: [engine], measurePerformance: false });
      model = await engine.loadModel(await manager.getModelMetadataAt(TINY));
    });
    afterAll(async () => {
      model?.dispose();
      await scratch?.cleanup();
    });

    it('16 concurrent calls on one signal: no MaxListenersExceededWarning, and its abort stops them all', async () => {
      const shared = new AbortController();
      const warnings = await warningsDuring(() =>
        Promise.all([
          ...Array.from({ length: 12 }, () => engine.predict(model, { ids: [1, 2, 3] }, { maxTokens: 2, signal: shared.signal })),
          ...Array.from({ length: 4 }, () => engine.score(model, { ids: [1, 2, 3] }, { signal: shared.signal })),
        ]),
      );
      expect(warnings.filter((w) => w.includes('MaxListeners'))).toEqual([]);
      const running = Array.from({ length: 12 }, () => engine.predict(model, { ids: [1, 2, 3] }, { maxTokens: 4000, signal: shared.signal }));
      setTimeout(() => shared.abort(), 50);
      const results = await Promise.all(running);
      expect(results.map((r) => r.finishReason)).toEqual(Array(12).fill('abort'));
    });
  });
});
