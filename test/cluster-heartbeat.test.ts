/**
 * Worker adverts as read back from Redis (untrusted: malformed ones skipped, arrays capped) and the
 * affinity rule that decides whether a worker runs a job naming a model or leaves it to another.
 */
import { describe, expect, it } from 'vitest';

import { decideAffinity } from '../ts/pipeline/cluster/affinity.js';
import { aggregateCluster } from '../ts/pipeline/cluster/aggregate.js';
import { MAX_SAMPLES, decodeHeartbeat, type WorkerHeartbeat } from '../ts/pipeline/cluster/heartbeat.js';

const beat = (id: string, loaded: string[], available: string[], extra: Partial<WorkerHeartbeat> = {}): WorkerHeartbeat => ({
  id,
  host: 'h',
  pid: 1,
  startedAt: 0,
  updatedAt: 0,
  loaded: loaded.map((name) => ({ name, memoryBytes: 10 })),
  available,
  memory: { rssBytes: 100, heapUsedBytes: 50, loadedModelBytes: 10 * loaded.length },
  jobs: { done: 0, failed: 0, active: 0 },
  doneLastMinute: 0,
  latencyMs: [],
  requestsByModel: {},
  ...extra,
});

describe('decodeHeartbeat', () => {
  it('round-trips an advert and caps its samples', () => {
    const b = beat('w1', ['lite'], ['lite', 'tiny'], { latencyMs: Array.from({ length: 5000 }, (_, i) => i) });
    const decoded = decodeHeartbeat(JSON.stringify(b))!;
    expect(decoded.latencyMs).toHaveLength(MAX_SAMPLES);
    expect({ ...decoded, latencyMs: [] }).toEqual({ ...b, latencyMs: [] });
  });

  it.each([
    ['not JSON', '{'],
    ['not an object', '[1]'],
    ['a field of the wrong type', JSON.stringify({ ...beat('w', [], []), pid: 'x' })],
    ['missing memory', JSON.stringify({ ...beat('w', [], []), memory: undefined })],
    ['too large', JSON.stringify({ ...beat('w', [], []), host: 'x'.repeat(2 * 1024 * 1024) })],
  ])('skips %s', (_what, text) => {
    expect(decodeHeartbeat(text)).toBeUndefined();
  });

  it('drops malformed entries inside an advert', () => {
    const text = JSON.stringify({ ...beat('w', [], []), loaded: [{ name: 'a', memoryBytes: 1 }, { name: 3 }], available: ['a', 5], latencyMs: [1, 'x', 2] });
    const decoded = decodeHeartbeat(text)!;
    expect([decoded.loaded, decoded.available, decoded.latencyMs]).toEqual([[{ name: 'a', memoryBytes: 1 }], ['a'], [1, 2]]);
  });
});

describe('decideAffinity', () => {
  const self = { id: 'me', loaded: ['tiny'], available: ['lite', 'tiny'] };
  const decide = (model: string | undefined, workers: WorkerHeartbeat[], waitedMs = 0, me = self) => decideAffinity({ model, self: me, workers, waitedMs, affinityWaitMs: 2000 }).run;

  it('runs a job for a model it holds, or naming none', () => {
    expect(decide('tiny', [beat('other', ['tiny'], ['tiny'])])).toBe(true);
    expect(decide(undefined, [beat('other', ['lite'], ['lite'])])).toBe(true);
  });
  it('leaves a job to a live holder until it has waited affinityWaitMs', () => {
    const holder = [beat('me', ['tiny'], ['lite', 'tiny']), beat('other', ['lite'], ['lite'])];
    expect(decide('lite', holder, 0)).toBe(false);
    expect(decide('lite', holder, 1999)).toBe(false);
    expect(decide('lite', holder, 2000)).toBe(true);
  });
  it('runs a job for a model nobody holds', () => {
    expect(decide('lite', [beat('other', ['tiny'], ['lite', 'tiny'])])).toBe(true);
  });
  it('never takes a model missing from its dir while a live worker has it, however long it waited', () => {
    const me = { id: 'me', loaded: [], available: ['tiny'] };
    expect(decide('lite', [beat('other', [], ['lite'])], 60_000, me)).toBe(false);
    // Its idle peers check back less often the longer it waits (at most once a second).
    const retry = (waitedMs: number) => decideAffinity({ model: 'lite', self: me, workers: [beat('other', [], ['lite'])], waitedMs, affinityWaitMs: 2000 });
    expect([retry(0), retry(5000), retry(60_000)].map((d) => (d.run ? 0 : d.retryInMs))).toEqual([50, 500, 1000]);
    expect(decide('lite', [beat('other', [], ['tiny'])], 0, me)).toBe(true); // nobody has it: run, the pipeline reports why
  });
  it('leaves a job naming a model it lacks entirely to a worker whose dir has it, even broken (it falls back there as in-process)', () => {
    const me = { id: 'me', loaded: [], available: ['tiny'], present: ['tiny'] };
    const brokenThere = beat('other', [], ['lite'], { present: ['lite', 'broken'] });
    expect(decide('broken', [brokenThere], 60_000, me)).toBe(false);
    // A worker whose own folder of that name is broken runs it (its pipeline falls back), unless another has it usable.
    const brokenHere = { id: 'me', loaded: [], available: ['tiny'], present: ['tiny', 'broken'] };
    expect(decide('broken', [brokenThere], 0, brokenHere)).toBe(true);
    expect(decide('broken', [beat('other', [], ['broken'], { present: ['broken'] })], 0, brokenHere)).toBe(false);
    // Adverts of older workers (no `present`) change nothing.
    expect(decide('broken', [beat('other', [], ['lite'])], 0, me)).toBe(true);
    // The advert carries it through Redis.
    expect(decodeHeartbeat(JSON.stringify(brokenThere))!.present).toEqual(['lite', 'broken']);
  });
  it('does not count its own advert as another holder', () => {
    expect(decide('lite', [beat('me', ['lite'], ['lite', 'tiny'])])).toBe(true);
  });
});

describe('aggregateCluster', () => {
  it('sums throughput over the last minute and merges latencies', () => {
    const now = 120_000;
    const a = beat('a', ['lite'], [], { startedAt: 0, doneLastMinute: 30, latencyMs: [10, 20, 30] });
    const b = beat('b', ['tiny'], [], { startedAt: 0, doneLastMinute: 90, latencyMs: [40] });
    const c = aggregateCluster('q', { waiting: 2, prioritized: 1, active: 1, completed: 5 }, [b, a], now);
    expect(c.throughputPerSecond).toBe(2);
    expect(c.latencyMs).toMatchObject({ count: 4, max: 40, mean: 25 });
    expect(c.jobs).toEqual({ waiting: 3, active: 1, delayed: 0, completed: 5, failed: 0 });
    expect(c.workers.map((w) => w.id)).toEqual(['a', 'b']);
  });
  it('divides by the time since the oldest worker started when under a minute', () => {
    const c = aggregateCluster('q', {}, [beat('a', [], [], { startedAt: 10_000, doneLastMinute: 10 })], 15_000);
    expect(c.throughputPerSecond).toBe(2);
  });
});
