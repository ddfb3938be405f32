/**
 * The pipeline's deadline covers every phase of a request (selection with its checksums, loading,
 * scoring), not only generation: a slow or hanging step ends the request on time with E_ABORTED naming
 * the phase, and whatever the step yields later is released (no lease left behind, no model disposed
 * while still in use).
 */
import { constants, openSync, closeSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import { execFileSync } from 'node:child_process';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LocalModelManager, type ModelLease } from '../ts/models/manager.js';
import type { ModelMetadata } from '../ts/models/metadata.js';
import { LocalAIPipeline } from '../ts/pipeline/pipeline.js';
import { ProcessingMode } from '../ts/pipeline/modes.js';
import type { ProcessingRequest } from '../ts/pipeline/types.js';
import { TINY, copyModel, expectCode, tempModelsDir } from './helpers.js';
import { Gate, ScriptedEngine } from './scripted-engine.js';

/** Deadline of the requests below, and how late past it a result may come. */
const DEADLINE_MS = 300;
const SLACK_MS = 700;

let scratch: Awaited<ReturnType<typeof tempModelsDir>>;
let modelsDir: string;

beforeAll(async () => {
  scratch = await tempModelsDir({ 'a-small': TINY });
  modelsDir = scratch.modelsDir;
});

afterAll(async () => scratch?.cleanup());

/** A manager whose listing is held until `gate` opens: a models dir that takes long to list and hash. */
class SlowListingManager extends LocalModelManager {
  constructor(
    options: ConstructorParameters<typeof LocalModelManager>[0],
    readonly gate: Gate,
  ) {
    super(options);
  }
  override async listModels(): Promise<ModelMetadata[]> {
    await this.gate.opened;
    return super.listModels();
  }
}

/** Counts the leases it hands out that are not yet released, and the acquisitions still in flight. */
class CountingManager extends LocalModelManager {
  outstanding = 0;
  inFlight = 0;
  override async acquireModel(name: string, options?: { signal?: AbortSignal }): Promise<ModelLease> {
    this.inFlight++;
    try {
      // Passes the options on to a manager that takes them (the call is typed for either signature).
      const acquire = LocalModelManager.prototype.acquireModel as (this: LocalModelManager, name: string, options?: { signal?: AbortSignal }) => Promise<ModelLease>;
      const lease = await acquire.call(this, name, options);
      this.outstanding++;
      let released = false;
      return {
        model: lease.model,
        release: () => {
          if (!released) this.outstanding--;
          released = true;
          lease.release();
        },
      };
    } finally {
      this.inFlight--;
    }
  }
}

function request(id: string, extra: Partial<ProcessingRequest> = {}): ProcessingRequest {
  return { id, input: { ids: [1, 2, 3] }, taskType: 'generation', mode: ProcessingMode.FULL_CAPABILITY, maxProcessingTime: DEADLINE_MS, ...extra };
}

/** Waits until `check` holds (polling), or fails after `ms`. */
async function eventually(check: () => boolean, ms = 5000): Promise<void> {
  const until = performance.now() + ms;
  while (!check()) {
    if (performance.now() > until) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('deadlines past Node\'s longest timer', () => {
  it('a maxProcessingTime beyond 2^31−1 ms (~25 days) is a long deadline, not one that fires at once', async () => {
    const manager = new LocalModelManager({ modelsDir, engines: [new ScriptedEngine(new Set(), 5)], measurePerformance: false });
    const pipeline = new LocalAIPipeline({ manager, modeLimits: { FULL_CAPABILITY: { maxProcessingTimeMs: Number.POSITIVE_INFINITY } } });
    for (const maxProcessingTime of [3e9, 1e10, 2 ** 31]) {
      const result = await pipeline.process(request(`long-${maxProcessingTime}`, { maxProcessingTime, mode: ProcessingMode.FULL_CAPABILITY }));
      expect({ maxProcessingTime, success: result.success, error: result.errorMessage }).toEqual({ maxProcessingTime, success: true, error: undefined });
    }
    pipeline.dispose();
  });
});

describe('the deadline covers selection', () => {
  it('a listing that takes far longer than maxProcessingTime ends the request on time, naming the phase', async () => {
    const gate = new Gate();
    const manager = new SlowListingManager({ modelsDir, engines: [new ScriptedEngine(new Set(), 5)], measurePerformance: false }, gate);
    const pipeline = new LocalAIPipeline({ manager });
    const opener = setTimeout(() => gate.open(), 4000); // so that a pipeline without the fix ends too (late)
    try {
      const started = performance.now();
      const result = await pipeline.process(request('slow-list'));
      const elapsed = performance.now() - started;
      expect(result).toMatchObject({ success: false, errorCode: 'E_ABORTED' });
      expect(result.errorMessage).toMatch(new RegExp(`maxProcessingTime of ${DEADLINE_MS} ms exceeded during selection`));
      expect(result.metadata).toMatchObject({ stoppedBy: 'deadline', stoppedDuring: 'selection', deadlineMs: DEADLINE_MS });
      expect(elapsed).toBeGreaterThanOrEqual(DEADLINE_MS - 5);
      expect(elapsed).toBeLessThan(DEADLINE_MS + SLACK_MS);
      expect(pipeline.getMetrics().aborted).toBe(1);
    } finally {
      clearTimeout(opener);
      gate.open();
    }
  });

  it('a model folder whose weight file is a FIFO does not hold the request past its deadline', async () => {
    const dir = path.join(scratch.dir, 'fifo-models');
    await mkdir(dir);
    await copyModel(TINY, path.join(dir, 'good'));
    const fifoModel = await copyModel(TINY, path.join(dir, 'piped'));
    const fifo = path.join(fifoModel, 'model.safetensors');
    await rm(fifo);
    execFileSync('mkfifo', [fifo]);
    const pipeline = new LocalAIPipeline({ manager: new LocalModelManager({ modelsDir: dir, engines: [new ScriptedEngine(new Set(), 5)], measurePerformance: false }) });
    try {
      const started = performance.now();
      const result = await pipeline.process(request('fifo', { modelPreference: 'piped', input: 'Once upon a time' }));
      expect(performance.now() - started).toBeLessThan(DEADLINE_MS + SLACK_MS);
      expect(result.modelUsed).not.toBe('piped');
      if (result.success) {
        // A manager that refuses non-regular files: the FIFO model is skipped, and said so.
        expect(result.modelUsed).toBe('good');
        expect(result.skippedModels.map((s) => s.name)).toContain('piped');
      } else {
        // A manager that blocks reading it: the deadline ends the request while selecting or loading.
        expect(result.errorCode).toBe('E_ABORTED');
        expect(['selection', 'loading']).toContain(result.metadata.stoppedDuring);
      }
    } finally {
      // Unblock a reader still waiting on the FIFO (if any), so no thread stays stuck after the test.
      try {
        closeSync(openSync(fifo, constants.O_WRONLY | constants.O_NONBLOCK));
      } catch {
        // ENXIO: nobody is reading it
      }
    }
  });
});

describe('the deadline covers loading', () => {
  it('a load slower than maxProcessingTime ends the request on time; a lease that arrives late is released', async () => {
    const engine = new ScriptedEngine(new Set(), 5);
    engine.loadGate = new Gate();
    const manager = new CountingManager({ modelsDir, engines: [engine], measurePerformance: false });
    const pipeline = new LocalAIPipeline({ manager });
    const opener = setTimeout(() => engine.loadGate?.open(), 4000);
    try {
      const started = performance.now();
      const result = await pipeline.process(request('slow-load'));
      const elapsed = performance.now() - started;
      expect(result).toMatchObject({ success: false, errorCode: 'E_ABORTED' });
      expect(result.errorMessage).toMatch(new RegExp(`maxProcessingTime of ${DEADLINE_MS} ms exceeded during loading \\(loading model "a-small"\\)`));
      expect(result.metadata).toMatchObject({ stoppedBy: 'deadline', stoppedDuring: 'loading' });
      expect(elapsed).toBeLessThan(DEADLINE_MS + SLACK_MS);
      // The load finishes after the request ended: whatever the manager hands out then goes back.
      engine.loadGate.open();
      await eventually(() => engine.loaded.length === 1 && manager.inFlight === 0);
      expect(manager.outstanding).toBe(0);
      // Nobody holds it: it can be unloaded.
      await manager.unloadModel('a-small');
      expect(engine.loaded[0]?.disposed).toBe(true);
      expect(manager.loadedModels()).toEqual([]);
      // The pipeline is still usable: the next request is served, and gives its lease back.
      engine.loadGate = undefined;
      const next = await pipeline.process(request('after', { maxProcessingTime: undefined }));
      expect(next).toMatchObject({ success: true, modelUsed: 'a-small' });
      expect(manager.outstanding).toBe(0);
    } finally {
      clearTimeout(opener);
      engine.loadGate?.open();
    }
  });

  it('the caller signal ends a request stuck in loading just as promptly', async () => {
    const engine = new ScriptedEngine(new Set(), 5);
    engine.loadGate = new Gate();
    const manager = new CountingManager({ modelsDir, engines: [engine], measurePerformance: false });
    const pipeline = new LocalAIPipeline({ manager });
    const controller = new AbortController();
    const opener = setTimeout(() => engine.loadGate?.open(), 4000);
    try {
      const pending = pipeline.process(request('caller', { maxProcessingTime: undefined, options: { signal: controller.signal } }));
      await eventually(() => engine.loadAttempts.length === 1); // the engine is loading
      const abortedAt = performance.now();
      controller.abort();
      const result = await pending;
      expect(performance.now() - abortedAt).toBeLessThan(SLACK_MS);
      expect(result).toMatchObject({ success: false, errorCode: 'E_ABORTED' });
      expect(result.errorMessage).toMatch(/aborted by the caller during loading/);
      expect(result.metadata).toMatchObject({ stoppedBy: 'signal', stoppedDuring: 'loading' });
      engine.loadGate.open();
      await eventually(() => engine.loaded.length === 1 && manager.inFlight === 0);
      expect(manager.outstanding).toBe(0);
    } finally {
      clearTimeout(opener);
      engine.loadGate?.open();
    }
  });
});

describe('the deadline covers scoring', () => {
  it('a scoring call past the deadline ends the request; the model stays leased until the call returns', async () => {
    const engine = new ScriptedEngine(new Set(), 5);
    engine.scoreGate = new Gate();
    // Budget 0: a model nobody leases is unloaded at once, so an early release would unload it mid-call.
    const manager = new CountingManager({ modelsDir, engines: [engine], measurePerformance: false, memoryBudgetBytes: 0 });
    const pipeline = new LocalAIPipeline({ manager, maxConcurrency: 1 });
    const opener = setTimeout(() => engine.scoreGate?.open(), 4000);
    try {
      const started = performance.now();
      const result = await pipeline.process(request('slow-score', { taskType: 'scoring' }));
      expect(performance.now() - started).toBeLessThan(DEADLINE_MS + SLACK_MS);
      expect(result).toMatchObject({ success: false, errorCode: 'E_ABORTED' });
      expect(result.metadata.stoppedDuring).toBe('scoring');
      // Still computing: the model must not be unloaded under it, and the slot stays busy.
      expect(engine.scoring).toBe(1);
      expect(manager.outstanding).toBe(1);
      expect(manager.loadedModels().map((m) => m.name)).toEqual(['a-small']);
      expect((await pipeline.getSystemStatus()).queue.running).toBe(1);
      engine.scoreGate.open();
      await eventually(() => engine.scoring === 0 && manager.outstanding === 0);
      expect(manager.loadedModels()).toEqual([]); // budget 0: released, then unloaded
      expect((await pipeline.getSystemStatus()).queue.running).toBe(0);
    } finally {
      clearTimeout(opener);
      engine.scoreGate?.open();
    }
  });
});

describe('the system status is bounded too', () => {
  it('a models dir slow to list gives modelsError E_ABORTED naming the folder, on time; the rest of the status is there', async () => {
    const gate = new Gate();
    const manager = new SlowListingManager({ modelsDir, engines: [new ScriptedEngine(new Set(), 5)], measurePerformance: false }, gate);
    const pipeline = new LocalAIPipeline({ manager, defaultMode: ProcessingMode.OFFLINE_ONLY });
    try {
      const started = performance.now();
      const status = await pipeline.getSystemStatus({ modelsTimeoutMs: 200 });
      expect(performance.now() - started).toBeLessThan(200 + SLACK_MS);
      expect(status.models).toEqual([]);
      expect(status.modelsError?.code).toBe('E_ABORTED');
      expect(status.modelsError?.message).toBe(`listing the models in ${modelsDir} took longer than 200 ms`);
      expect(status.queue).toMatchObject({ running: 0, waiting: 0 });
      gate.open();
      await expectCode(pipeline.getSystemStatus({ modelsTimeoutMs: 0 }), 'E_INVALID_OPTION');
      const later = await pipeline.getSystemStatus({ modelsTimeoutMs: 5000 });
      expect(later.modelsError).toBeUndefined();
      expect(later.models.map((m) => [m.name, m.status])).toEqual([['a-small', 'available']]);
    } finally {
      gate.open();
    }
  });
});
