/**
 * The pipeline's token stream holds at most `streamBufferTokens` unread tokens: a slow reader pauses
 * generation instead of growing memory; reading only `result`, or leaving the loop early, still lets the
 * request finish; the deadline still ends a request whose reader stopped reading.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LocalModelManager } from '../ts/models/manager.js';
import { LocalAIPipeline } from '../ts/pipeline/pipeline.js';
import type { ProcessingRequest } from '../ts/pipeline/types.js';
import { TINY, expectCode, tempModelsDir } from './helpers.js';
import { ScriptedEngine } from './scripted-engine.js';

const TOKENS = 3000;
const BUFFER = 8;

let scratch: Awaited<ReturnType<typeof tempModelsDir>>;
let modelsDir: string;

beforeAll(async () => {
  scratch = await tempModelsDir({ 'a-small': TINY });
  modelsDir = scratch.modelsDir;
});

afterAll(async () => scratch?.cleanup());

function setup(): { engine: ScriptedEngine; pipeline: LocalAIPipeline } {
  const engine = new ScriptedEngine(new Set(), 1);
  engine.tokensPerStream = TOKENS;
  const manager = new LocalModelManager({ modelsDir, engines: [engine], measurePerformance: false });
  return { engine, pipeline: new LocalAIPipeline({ manager, streamBufferTokens: BUFFER }) };
}

const request = (id: string, extra: Partial<ProcessingRequest> = {}): ProcessingRequest => ({
  id,
  input: { ids: [1] },
  taskType: 'generation',
  options: { maxTokens: TOKENS },
  ...extra,
});

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

describe('stream backpressure', () => {
  it('a reader that pauses pauses generation: at most streamBufferTokens tokens wait unread', async () => {
    const { engine, pipeline } = setup();
    const stream = pipeline.stream(request('slow-reader'));
    const iterator = stream[Symbol.asyncIterator]();
    let text = '';
    const first = await iterator.next();
    text += first.done ? '' : first.value.text;
    await sleep(200); // long enough to generate every token if nothing held it back
    expect(engine.produced).toBeGreaterThan(1);
    expect(engine.produced).toBeLessThanOrEqual(1 + BUFFER + 1);
    let chunks = 1;
    for (let next = await iterator.next(); !next.done; next = await iterator.next()) {
      text += next.value.text;
      chunks++;
    }
    const result = await stream.result;
    expect(chunks).toBe(TOKENS);
    expect(result).toMatchObject({ success: true, generatedTokens: TOKENS });
    expect(result.text).toBe(text);
  });

  it('reading only `result` is not held back', async () => {
    const { engine, pipeline } = setup();
    const result = await pipeline.stream(request('result-only')).result;
    expect(result).toMatchObject({ success: true, generatedTokens: TOKENS });
    expect(engine.produced).toBe(TOKENS);
    expect(engine.disposedStreams).toBe(1); // the engine's stream (its state) is freed once the result is built
  });

  it('a reader that leaves the loop early does not hold the request back', async () => {
    const { pipeline } = setup();
    const stream = pipeline.stream(request('early-exit'));
    for await (const _ of stream) break;
    const result = await stream.result;
    expect(result).toMatchObject({ success: true, generatedTokens: TOKENS });
  });

  it('the deadline ends a request whose reader stopped reading', async () => {
    const { engine, pipeline } = setup();
    const stream = pipeline.stream(request('stalled', { maxProcessingTime: 300 }));
    await stream[Symbol.asyncIterator]().next(); // one token, then the reader stalls for good
    const started = performance.now();
    const result = await stream.result;
    expect(performance.now() - started).toBeLessThan(1000);
    expect(result).toMatchObject({ success: false, errorCode: 'E_ABORTED' });
    expect(result.metadata).toMatchObject({ stoppedBy: 'deadline', stoppedDuring: 'generation' });
    expect(engine.produced).toBeLessThanOrEqual(1 + BUFFER + 1);
    expect(engine.disposedStreams).toBe(1); // also when the generation was cut short
  });

  it('cancel() lets go of a stream whose reader stopped: the result is E_ABORTED and the slot is free for the next request', async () => {
    const { engine, pipeline } = setup();
    const stream = pipeline.stream(request('abandoned'));
    await stream[Symbol.asyncIterator]().next(); // one token, then the reader stalls
    const next = pipeline.process(request('next-in-line')); // waits for the only slot
    await sleep(50);
    stream.cancel();
    const started = performance.now();
    const result = await stream.result;
    expect(performance.now() - started).toBeLessThan(1000);
    expect(result).toMatchObject({ success: false, errorCode: 'E_ABORTED' });
    expect(result.metadata).toMatchObject({ stoppedBy: 'signal', stoppedDuring: 'generation' });
    expect(engine.produced).toBeLessThanOrEqual(1 + BUFFER + 1);
    expect(await next).toMatchObject({ success: true, generatedTokens: TOKENS });
    // Cancelled while still queued: nothing generated; with a signal of the caller's own, either stops it.
    const caller = new AbortController();
    const blocker = pipeline.stream(request('blocker'));
    await blocker[Symbol.asyncIterator]().next();
    const queued = pipeline.stream(request('queued', { options: { maxTokens: TOKENS, signal: caller.signal } }));
    queued.cancel();
    expect(await queued.result).toMatchObject({ success: false, errorCode: 'E_ABORTED' });
    blocker.cancel();
    expect((await blocker.result).success).toBe(false);
  });

  it('streamBufferTokens must be an integer ≥ 1', async () => {
    for (const bad of [0, 1.5, Number.NaN]) await expectCode(async () => new LocalAIPipeline({ modelsDir, streamBufferTokens: bad }), 'E_INVALID_OPTION');
  });
});

describe('dispose()', () => {
  it('ends a paused stream and a queued request with E_ABORTED naming the dispose, and refuses later requests', async () => {
    const { engine, pipeline } = setup();
    const paused = pipeline.stream(request('paused'));
    const iterator = paused[Symbol.asyncIterator]();
    await iterator.next(); // generating, then held by the unread buffer
    const queued = pipeline.process(request('queued')); // waits for the one slot
    await sleep(50);
    pipeline.dispose();
    const started = performance.now();
    const [first, second] = await Promise.all([paused.result, queued]);
    expect(performance.now() - started).toBeLessThan(2000);
    for (const result of [first, second]) {
      expect([result.success, result.errorCode]).toEqual([false, 'E_ABORTED']);
      expect(result.errorMessage).toMatch(/the pipeline was disposed/);
    }
    expect(engine.produced).toBeLessThan(TOKENS);
    const later = await pipeline.process(request('later'));
    expect([later.success, later.errorCode]).toEqual([false, 'E_ABORTED']);
    expect(later.errorMessage).toMatch(/the pipeline was disposed/);
  });
});
