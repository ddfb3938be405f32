/**
 * Misspelt option and request field names are refused by name (`E_INVALID_OPTION`, with the likely
 * intended name), never ignored: `{ maxToken: 5 }` had run a generation to its end.
 */
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { PhoenixError } from '../ts/binding/errors.js';
import { toRawMessages } from '../ts/engines/chat.js';
import { toRawOptions, toRawPrompt } from '../ts/engines/options.js';
import type { GenerationOptions } from '../ts/engines/types.js';
import { LocalAIPipeline } from '../ts/pipeline/pipeline.js';
import type { ProcessingRequest } from '../ts/pipeline/types.js';
import { LITE } from './helpers.js';

function refusal(options: Record<string, unknown>): PhoenixError {
  try {
    toRawOptions(options as GenerationOptions);
  } catch (error) {
    return error as PhoenixError;
  }
  throw new Error(`accepted ${JSON.stringify(options)}`);
}

describe('unknown option names', () => {
  it('are refused with the nearest known name', () => {
    for (const [spelling, meant] of [
      ['maxToken', 'maxTokens'],
      ['max_tokens', 'maxTokens'],
      ['top_p', 'topP'],
      ['temprature', 'temperature'],
      ['stopStrings', 'stop'],
    ] as const) {
      const error = refusal({ [spelling]: 5 });
      expect(error).toBeInstanceOf(PhoenixError);
      expect(error.code).toBe('E_INVALID_OPTION');
      expect(error.message).toContain(`unknown option \`${spelling}\``);
      if (spelling !== 'stopStrings') expect(error.message).toContain(`did you mean \`${meant}\``);
    }
    expect(refusal({ bogus: 1 }).message).toMatch(/known: maxTokens, .*returnState/);
  });

  it('every documented option and an undefined value pass', () => {
    const raw = toRawOptions({
      maxTokens: 3,
      temperature: 0,
      topK: 1,
      topP: 1,
      minP: 0,
      repeatPenalty: 1,
      repeatLastN: 0,
      seed: 1,
      stop: ['x'],
      stopTokenIds: [1],
      addSpecialTokens: true,
      fitToContext: true,
      int8Prompt: false,
      signal: new AbortController().signal,
      returnState: false,
      ...({ maxToken: undefined } as object),
    });
    expect(raw.maxTokens).toBe(3);
  });
});

describe('unknown prompt and chat message fields', () => {
  const thrown = (fn: () => unknown): PhoenixError => {
    try {
      fn();
    } catch (error) {
      return error as PhoenixError;
    }
    throw new Error('accepted');
  };

  it('a prompt object is { text } or { ids } and nothing else; a message is { role, content }', () => {
    expect(toRawPrompt({ ids: [1, 2] })).toEqual({ ids: [1, 2] });
    expect(toRawPrompt({ text: 'hi' })).toEqual({ text: 'hi' });
    // `{ ids, text }` had run the ids and dropped the text without a word.
    const both = thrown(() => toRawPrompt({ ids: [1], text: 'Once upon a time' } as never));
    expect([both.code, both.message]).toEqual(['E_INVALID_OPTION', 'unknown prompt field `prompt.text` (known: ids)']);
    expect(thrown(() => toRawPrompt({ text: 'hi', extra: 1 } as never)).message).toBe('unknown prompt field `prompt.extra` (known: text)');
    expect(toRawMessages([{ role: 'user', content: 'hi' }])).toEqual([{ role: 'user', content: 'hi' }]);
    // A template would never see `name` or `tool_calls`: refused, not dropped.
    const extra = thrown(() => toRawMessages([{ role: 'user', content: 'hi' }, { role: 'assistant', content: '', tool_calls: [] } as never]));
    expect([extra.code, extra.message]).toEqual(['E_INVALID_OPTION', 'unknown message field `messages[1].tool_calls` (known: role, content)']);
  });
});

describe('unknown request fields and request options', () => {
  const pipeline = new LocalAIPipeline({ modelsDir: path.dirname(LITE) });
  afterAll(() => pipeline.dispose());
  const base: ProcessingRequest = { id: 'r', input: 'Once', taskType: 'generation', options: { maxTokens: 2, temperature: 0 } };

  it('fail the request, naming the field', async () => {
    const field = await pipeline.process({ ...base, ...({ preferredModel: 'lite' } as object) });
    expect([field.success, field.errorCode]).toEqual([false, 'E_INVALID_OPTION']);
    expect(field.errorMessage).toContain('unknown request field `request.preferredModel`');
    const option = await pipeline.process({ ...base, options: { ...({ maxToken: 2 } as object) } });
    expect(option.errorMessage).toContain('unknown request option `request.options.maxToken` (did you mean `maxTokens`?)');
    const signal = await pipeline.process({ ...base, ...({ signal: new AbortController().signal } as object) });
    expect(signal.errorMessage).toContain('`request.signal`');
  });

  it("a value error names the option as the caller wrote it (`stop`, not the binding's `stopStrings`)", async () => {
    const empty = await pipeline.process({ ...base, options: { ...base.options, stop: [''] } });
    expect(empty.errorCode).toBe('E_INVALID_OPTION');
    expect(empty.errorMessage).toContain('option `stop` must not contain an empty string');
  });

  it('a well-formed request with returnLogits still runs', async () => {
    const ok = await pipeline.process({ ...base, options: { ...base.options, returnLogits: false } });
    expect(ok.success, ok.errorMessage).toBe(true);
  });
});

describe('unknown constructor options', () => {
  it('engines, defaultEngines, the manager, the pipeline and startWorker refuse a misspelt option by name', async () => {
    const { MambaSSMEngine } = await import('../ts/engines/mamba-engine.js');
    const { TransformerEngine } = await import('../ts/engines/transformer-engine.js');
    const { defaultEngines } = await import('../ts/engines/default-engines.js');
    const { LocalModelManager } = await import('../ts/models/manager.js');
    const { startWorker } = await import('../ts/pipeline/cluster/worker.js');
    const cases: [string, () => unknown, string, string][] = [
      ['TransformerEngine', () => new TransformerEngine({ kvcache: 'f16' } as never), 'engine option `kvcache`', 'kvCache'],
      ['MambaSSMEngine', () => new MambaSSMEngine({ kvCash: 'f16' } as never), 'engine option `kvCash`', 'kvCache'],
      ['defaultEngines', () => defaultEngines({ threads: 4 } as never), 'engine option `threads`', 'known: binding, kvCache'],
      ['LocalModelManager', () => new LocalModelManager({ modelsDir: '/nonexistent', memoryBudget: 5 } as never), 'manager option `memoryBudget`', 'memoryBudgetBytes'],
      ['LocalAIPipeline', () => new LocalAIPipeline({ modelsDir: '/nonexistent', kvcache: 'f16' } as never), 'pipeline option `kvcache`', 'kvCache'],
      ['startWorker', () => startWorker({ redis: 'redis://127.0.0.1:1', concurency: 2 } as never), 'worker option `concurency`', 'concurrency'],
    ];
    for (const [what, build, named, hint] of cases) {
      let error: unknown;
      try {
        await build();
      } catch (e) {
        error = e;
      }
      expect({ what, code: (error as PhoenixError | undefined)?.code }).toEqual({ what, code: 'E_INVALID_OPTION' });
      expect((error as PhoenixError).message).toContain(`unknown ${named}`);
      expect((error as PhoenixError).message).toContain(hint);
    }
    // Every documented option, and an undefined value, still construct.
    new TransformerEngine({ binding: undefined, kvCache: 'f16' });
    new LocalModelManager({ modelsDir: '/nonexistent', manifestPath: undefined, memoryBudgetBytes: 1, engines: [], measurePerformance: false, onProgress: () => undefined }).dispose();
    new LocalAIPipeline({ modelsDir: '/nonexistent', maxConcurrency: 2, maxQueueSize: 4, streamBufferTokens: 8, kvCache: undefined }).dispose();
  });

  it('manager options and call options of the wrong kind, and sparse arrays, are E_INVALID_OPTION naming them', async () => {
    const { LocalModelManager } = await import('../ts/models/manager.js');
    const { MambaSSMEngine } = await import('../ts/engines/mamba-engine.js');
    const { toRawMessages } = await import('../ts/engines/chat.js');
    const refused = async (what: string, run: () => unknown, message: RegExp): Promise<void> => {
      let error: unknown;
      try {
        await run();
      } catch (e) {
        error = e;
      }
      expect({ what, code: (error as PhoenixError | undefined)?.code }).toEqual({ what, code: 'E_INVALID_OPTION' });
      expect((error as PhoenixError).message, what).toMatch(message);
    };
    const m = (extra: object) => new LocalModelManager({ modelsDir: '/nonexistent', engines: [], measurePerformance: false, ...extra });
    await refused('onProgress', () => m({ onProgress: 5 }), /option onProgress must be a function, got number/);
    await refused('measurePerformance', () => m({ measurePerformance: 'yes' }), /option measurePerformance must be a boolean, got string/);
    await refused('engines', () => m({ engines: {} }), /option engines must be an array of engines/);
    await refused('an engine', () => m({ engines: [{}] }), /an engine must implement InferenceEngine: a string `name` is missing/);
    await refused('an engine without score', () => m({ engines: [{ name: 'x', canLoad: () => true, loadModel: () => undefined, predict: () => undefined, stream: () => undefined }] }), /`score\(\)` is missing/);
    const manager = m({});
    await refused('signal', () => manager.loadModel('tiny', { signal: 'x' as never }), /option `signal` must be an AbortSignal/);
    await refused('call option typo', () => manager.listModels({ sigal: new AbortController().signal } as never), /unknown call option `sigal` \(did you mean `signal`\?\)/);
    await refused('engineFor', () => manager.engineFor({} as never), /engineFor needs a model this manager loaded/);
    await refused('fallback typo', () => manager.getFallbackModel('mamba', { exlude: ['a'] } as never), /unknown getFallbackModel option `exlude` \(did you mean `exclude`\?\)/);
    await refused('fallback NaN size', () => manager.getFallbackModel('mamba', { maxSizeBytes: Number.NaN }), /option `maxSizeBytes` must be a number ≥ 0/);
    // The option objects of a loaded model's calls are checked too.
    const { LocalModelManager: Manager } = await import('../ts/models/manager.js');
    const liteManager = new Manager({ modelsDir: path.dirname(LITE), engines: [new MambaSSMEngine()], measurePerformance: false });
    const lite = await liteManager.loadModel(path.basename(LITE));
    const engine = liteManager.engineFor(lite);
    await refused('score typo', () => engine.score(lite, { ids: [1, 2] }, { includeLogit: true } as never), /unknown score option `includeLogit` \(did you mean `includeLogits`\?\)/);
    await refused('tokenize typo', () => lite.tokenize('hi', { addSpecialToken: false } as never), /unknown tokenize option `addSpecialToken`/);
    await refused('tokenize flag type', () => lite.tokenize('hi', { addSpecialTokens: 'no' } as never), /tokenize: option `addSpecialTokens` must be a boolean/);
    await refused('detokenize of a string', () => lite.detokenize('abc' as never), /detokenize\(ids\): ids must be an array/);
    expect(await lite.tokenize('hi', { addSpecialTokens: true })).toEqual(await lite.tokenize('hi', {}));
    liteManager.dispose();
    const { loadBinding } = await import('../ts/binding/load.js');
    await refused('loadBinding(null)', () => loadBinding(null as never), /loadBinding options must be an object/);
    await refused('loadBinding typo', () => loadBinding({ backnd: 'wasm' } as never), /unknown loadBinding option `backnd` \(did you mean `backend`\?\)/);
    const { AsyncChannel } = await import('../ts/pipeline/channel.js');
    const channel = new AsyncChannel<number>(4);
    channel.close();
    for await (const _ of channel) break;
    await refused('a stream iterated twice', async () => {
      for await (const _ of channel) break;
    }, /a stream can be iterated only once/);
    // Holes in arrays are checked as undefined, not skipped into the binding.
    // eslint-disable-next-line no-sparse-arrays
    await refused('sparse ids', () => new MambaSSMEngine().checkOptions({ stopTokenIds: [1, , 2] as number[] }), /stopTokenIds/);
    // eslint-disable-next-line no-sparse-arrays
    await refused('sparse stop', () => new MambaSSMEngine().checkOptions({ stop: ['a', , 'b'] as string[] }), /stop/);
    // eslint-disable-next-line no-sparse-arrays
    await refused('sparse messages', () => toRawMessages([{ role: 'user', content: 'a' }, , { role: 'user', content: 'b' }] as never), /messages\[1\] must be an object/);
  });

  it('modeLimits are checked when the pipeline is built, naming mode and key; the defaults cannot be changed', async () => {
    const { DEFAULT_MODE_LIMITS } = await import('../ts/pipeline/modes.js');
    const cases: [unknown, string][] = [
      [{ MINIMAL_RESOURCES: { maxTokens: -1 } }, 'option `modeLimits.MINIMAL_RESOURCES.maxTokens` must be an integer ≥ 1, got -1'],
      [{ FULL_CAPABILITY: { maxProcessingTimeMs: Number.NaN } }, 'option `modeLimits.FULL_CAPABILITY.maxProcessingTimeMs` must be a number > 0 (Infinity for no limit), got NaN'],
      [{ OFFLINE_ONLY: { maxModelBytes: '1GB' } }, 'option `modeLimits.OFFLINE_ONLY.maxModelBytes` must be a number > 0 (Infinity for no limit), got "1GB"'],
      [{ ENERGY_EFFICIENT: { prefer: 'fastest' } }, 'option `modeLimits.ENERGY_EFFICIENT.prefer` must be "largest" or "smallest", got "fastest"'],
      [{ ENERGY_EFFICIENT: { allowConnectivityProbes: 1 } }, 'option `modeLimits.ENERGY_EFFICIENT.allowConnectivityProbes` must be a boolean, got 1'],
      [{ ENERGY_EFFICIENT: { maxToken: 5 } }, 'unknown mode limit `modeLimits.ENERGY_EFFICIENT.maxToken` (did you mean `maxTokens`?)'],
      [{ FAST: {} }, 'unknown mode `modeLimits.FAST`'],
      [{ FULL_CAPABILITY: 5 }, 'option `modeLimits.FULL_CAPABILITY` must be an object'],
    ];
    for (const [modeLimits, message] of cases) {
      let error: unknown;
      try {
        new LocalAIPipeline({ modelsDir: '/nonexistent', modeLimits: modeLimits as never }).dispose();
      } catch (e) {
        error = e;
      }
      expect((error as PhoenixError | undefined)?.code, message).toBe('E_INVALID_OPTION');
      expect((error as PhoenixError).message).toContain(message);
    }
    expect(() => {
      (DEFAULT_MODE_LIMITS.FULL_CAPABILITY as { maxTokens: number }).maxTokens = 1;
    }).toThrow(TypeError);
    expect(DEFAULT_MODE_LIMITS.FULL_CAPABILITY.maxTokens).toBe(2048);
  });

  it('the pipeline refuses options of its default manager beside a manager of your own, which they would not reach', async () => {
    const { LocalModelManager } = await import('../ts/models/manager.js');
    const manager = new LocalModelManager({ modelsDir: '/nonexistent', engines: [], measurePerformance: false });
    const beside = { modelsDir: '/elsewhere', binding: 'wasm', memoryBudgetBytes: 1, kvCache: 'f16', useMmap: false } as const;
    for (const [option, value] of Object.entries(beside)) {
      let error: unknown;
      try {
        new LocalAIPipeline({ manager, [option]: value });
      } catch (e) {
        error = e;
      }
      expect({ option, code: (error as PhoenixError | undefined)?.code }).toEqual({ option, code: 'E_INVALID_OPTION' });
      expect((error as PhoenixError).message).toBe(`option \`${option}\` configures the default manager and its engines, not one given as \`manager\`: set it on yours`);
    }
    new LocalAIPipeline({ manager, maxConcurrency: 2, modelsDir: undefined }).dispose();
  });
});

describe('a wrongly typed option where SharedArrayBuffer does not exist (a browser page without cross-origin isolation)', () => {
  it('is E_INVALID_OPTION naming the option, not an E_INTERNAL ReferenceError', () => {
    const saved = globalThis.SharedArrayBuffer;
    delete (globalThis as { SharedArrayBuffer?: unknown }).SharedArrayBuffer;
    try {
      for (const options of [{ maxTokens: '5' }, { temperature: {} }, { seed: new Uint8Array(2) }] as unknown as GenerationOptions[]) {
        let thrown: unknown;
        try {
          toRawOptions(options);
        } catch (error) {
          thrown = error;
        }
        expect(thrown).toBeInstanceOf(PhoenixError);
        expect((thrown as PhoenixError).code).toBe('E_INVALID_OPTION');
        expect((thrown as PhoenixError).message).toMatch(/^option `\w+` must be/);
      }
    } finally {
      globalThis.SharedArrayBuffer = saved;
    }
  });
});
