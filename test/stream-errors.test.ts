/**
 * `engine.stream()` never throws: every error of a generation that cannot start (bad options, bad
 * prompt, a disposed or foreign model) surfaces from the iterator's first `next()` and from `result`,
 * as the docs promise, and consuming only one of the two leaves no unhandled rejection.
 */
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';

import type { ErrorCode } from '../ts/binding/errors.js';
import { loadBinding } from '../ts/binding/load.js';
import { MambaSSMEngine } from '../ts/engines/mamba-engine.js';
import type { GenerationInput, GenerationOptions, GenerationStream, LoadedModel } from '../ts/engines/types.js';
import { LocalModelManager } from '../ts/models/manager.js';
import { PhoenixError, TEST_BACKENDS, TINY, requireBackend, tempDir } from './helpers.js';

describe.each(TEST_BACKENDS)('stream() errors on the %s binding', (backend) => {
  let engine: MambaSSMEngine;
  let tiny: LoadedModel;
  let disposed: LoadedModel;
  let scratch: Awaited<ReturnType<typeof tempDir>>;
  const unhandled: unknown[] = [];
  const onUnhandled = (reason: unknown): void => void unhandled.push(reason);

  beforeAll(async () => {
    requireBackend(backend);
    scratch = await tempDir();
    engine = new MambaSSMEngine({ binding: await loadBinding({ backend }) });
    const manager = new LocalModelManager({ modelsDir: scratch.dir, engines: [engine], measurePerformance: false });
    const metadata = await manager.getModelMetadataAt(TINY);
    tiny = await engine.loadModel(metadata);
    disposed = await engine.loadModel(metadata);
    disposed.dispose();
  });

  afterAll(async () => {
    tiny?.dispose();
    await scratch?.cleanup();
  });

  beforeEach(() => {
    unhandled.length = 0;
    process.on('unhandledRejection', onUnhandled);
  });

  afterEach(() => {
    process.removeListener('unhandledRejection', onUnhandled);
  });

  const cases: [string, () => [LoadedModel, GenerationInput, GenerationOptions], ErrorCode][] = [
    ['negative temperature', () => [tiny, { ids: [1, 2] }, { temperature: -1 }], 'E_INVALID_OPTION'],
    ['zero maxTokens', () => [tiny, { ids: [1, 2] }, { maxTokens: 0 }], 'E_INVALID_OPTION'],
    ['negative topK', () => [tiny, { ids: [1, 2] }, { topK: -5 }], 'E_INVALID_OPTION'],
    ['a state that is not bytes', () => [tiny, { ids: [1, 2] }, { state: 'x' as unknown as Uint8Array }], 'E_INVALID_OPTION'],
    ['an empty prompt', () => [tiny, '', {}], 'E_INVALID_OPTION'],
    ['a negative token id', () => [tiny, { ids: [-1] }, {}], 'E_INVALID_OPTION'],
    ['a disposed model', () => [disposed, { ids: [1, 2] }, {}], 'E_INVALID_OPTION'],
    ['a model this engine did not load', () => [{ ...tiny } as LoadedModel, { ids: [1, 2] }, {}], 'E_INVALID_OPTION'],
  ];

  /** Lets every pending rejection reach the process's unhandled-rejection check. */
  const settle = (): Promise<void> => new Promise((resolve) => setTimeout(resolve, 20));

  it.each(cases)('%s: not thrown by stream(); from next() and from result', async (_name, args, code) => {
    let stream: GenerationStream | undefined;
    expect(() => (stream = engine.stream(...args()))).not.toThrow();
    const iterator = (stream as GenerationStream)[Symbol.asyncIterator]();
    const fromNext = await iterator.next().then(
      () => undefined,
      (error: unknown) => error,
    );
    expect(fromNext).toBeInstanceOf(PhoenixError);
    expect((fromNext as PhoenixError).code).toBe(code);
    const fromResult = await (stream as GenerationStream).result.then(
      () => undefined,
      (error: unknown) => error,
    );
    expect((fromResult as PhoenixError).code).toBe(code);
    await settle();
    expect(unhandled).toEqual([]);
  });

  it.each(cases)('%s: consuming only the iterator or only result leaves nothing unhandled', async (_name, args, code) => {
    const onlyIterated = engine.stream(...args());
    let iterated: unknown;
    try {
      for await (const _ of onlyIterated) {
        // nothing is produced
      }
    } catch (error) {
      iterated = error;
    }
    expect((iterated as PhoenixError).code).toBe(code);
    const onlyAwaited = engine.stream(...args());
    await expect(onlyAwaited.result).rejects.toMatchObject({ code });
    await settle();
    expect(unhandled).toEqual([]);
  });
});

describe('a step failing in the stream\'s own pulls after a cancel', () => {
  it('rejects result and is thrown by the loop when its reader resumes, not swallowed', async () => {
    const { BindingGenerationStream } = await import('../ts/engines/generation-stream.js');
    let cancelled = false;
    const failure = new Error('[E_INTERNAL] the worker stopped');
    // A generation whose step after the cancel fails (a worker that died, a step that threw).
    const generation = {
      next: async () => (cancelled ? Promise.reject(failure) : { tokenId: 7, text: 'a' }),
      cancel: () => void (cancelled = true),
      stats: () => ({ promptTokens: 1, restoredTokens: 0, generatedTokens: 1, prefillMs: 1, decodeMs: 0 }),
      exportState: () => new Uint8Array(0),
      tokenIds: () => [7],
      dispose: () => undefined,
    };
    const stream = new BindingGenerationStream(generation as never, { startedAt: performance.now() });
    const reader = stream[Symbol.asyncIterator]();
    expect((await reader.next()).value).toEqual({ text: 'a', tokenId: 7 });
    stream.cancel(); // the reader holds its chunk: the stream takes the next step itself, which fails
    await expect(stream.result).rejects.toMatchObject({ code: 'E_INTERNAL' });
    // Before, the resumed loop ended as if the generation had finished cleanly.
    await expect(reader.next()).rejects.toMatchObject({ code: 'E_INTERNAL' });
  });
});
