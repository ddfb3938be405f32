/**
 * Which models the pipeline falls back to, and what it says about the others: any model that fits the
 * mode (larger ones and other model types included) serves when the first choice fails; every model
 * skipped is reported with its status and reason in the result and in getSystemStatus(); with no usable
 * model the error names the folder searched and why each model is out.
 */
import { copyFile, constants as fsConstants, mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LocalModelManager } from '../ts/models/manager.js';
import { LocalAIPipeline } from '../ts/pipeline/pipeline.js';
import { ProcessingMode } from '../ts/pipeline/modes.js';
import type { ProcessingRequest } from '../ts/pipeline/types.js';
import { TINY, TINY_ORIGINAL, copyModel, tempDir } from './helpers.js';
import { ScriptedEngine } from './scripted-engine.js';

let scratch: Awaited<ReturnType<typeof tempDir>>;

beforeAll(async () => {
  scratch = await tempDir();
});

afterAll(async () => scratch?.cleanup());

/** A fresh models dir holding copies of the given fixtures under the given names. */
async function modelsDirWith(name: string, models: Record<string, string>): Promise<string> {
  const dir = path.join(scratch.dir, name);
  await mkdir(dir);
  for (const [model, from] of Object.entries(models)) {
    const folder = await copyModel(from, path.join(dir, model));
    // Every copy can take a text prompt (the state-spaces fixture has no tokenizer of its own) unless named otherwise.
    if (!model.includes('no-tokenizer')) await copyFile(path.join(TINY, 'tokenizer.json'), path.join(folder, 'tokenizer.json'), fsConstants.COPYFILE_EXCL).catch(() => undefined);
  }
  return dir;
}

/** Rewrites one byte of a model's weights in place (same size): the manager then reports it `corrupted`. */
async function corrupt(folder: string): Promise<void> {
  const file = path.join(folder, 'model.safetensors');
  const bytes = await readFile(file);
  const at = bytes.length - 7;
  bytes[at] = (bytes[at] as number) ^ 0xff;
  await writeFile(file, bytes);
}

function pipelineOver(modelsDir: string, engine: ScriptedEngine, extra: ConstructorParameters<typeof LocalAIPipeline>[0] = {}): LocalAIPipeline {
  return new LocalAIPipeline({ manager: new LocalModelManager({ modelsDir, engines: [engine], measurePerformance: false }), ...extra });
}

/** A text request: text can move to any model with a tokenizer (token ids cannot; see the last test). */
const textRequest = (id: string, extra: Partial<ProcessingRequest> = {}): ProcessingRequest => ({ id, input: 'Once upon a time', taskType: 'generation', ...extra });

describe('fallback reaches every model that fits the mode', () => {
  it('a larger model serves when every smaller one fails to load', async () => {
    const dir = await modelsDirWith('larger', { 'a-small': TINY, 'b-large': TINY_ORIGINAL, 'c-small-too': TINY });
    const engine = new ScriptedEngine(new Set(['a-small', 'c-small-too']), 5);
    const result = await pipelineOver(dir, engine).process(textRequest('1', { mode: ProcessingMode.MINIMAL_RESOURCES }));
    expect(engine.loadAttempts).toEqual(['a-small', 'c-small-too', 'b-large']); // the mode's order: smallest first
    expect(result).toMatchObject({ success: true, modelUsed: 'b-large', fallbackUsed: true });
    expect(result.metadata.fallbackFrom).toBe('a-small');
    expect(result.skippedModels).toEqual([
      { name: 'a-small', status: 'available', reason: 'load-failed', code: 'E_BAD_WEIGHTS', message: 'a-small: scripted failure' },
      { name: 'c-small-too', status: 'available', reason: 'load-failed', code: 'E_BAD_WEIGHTS', message: 'c-small-too: scripted failure' },
    ]);
  });

  it('a model of another type serves when the preferred type fails', async () => {
    const dir = await modelsDirWith('types', { 'a-mamba': TINY, 'b-falcon': TINY });
    const config = path.join(dir, 'b-falcon', 'config.json');
    await writeFile(config, (await readFile(config, 'utf8')).replace('"model_type": "mamba"', '"model_type": "falcon_mamba"'));
    const engine = new ScriptedEngine(new Set(['a-mamba']), 5);
    engine.modelTypes.add('falcon_mamba');
    const result = await pipelineOver(dir, engine).process(textRequest('2', { modelPreference: 'a-mamba' }));
    expect(engine.loadAttempts).toEqual(['a-mamba', 'b-falcon']);
    expect(result).toMatchObject({ success: true, modelUsed: 'b-falcon', fallbackUsed: true });
    expect(result.skippedModels.map((s) => [s.name, s.reason])).toEqual([['a-mamba', 'load-failed']]);
  });
});

describe('skipped models are reported', () => {
  it('a corrupted model and one beyond the mode limit: skipped, each with its status and reason, in the result and the system status', async () => {
    const dir = await modelsDirWith('report', { 'a-corrupt': TINY, 'b-good': TINY, 'c-large': TINY_ORIGINAL });
    const engine = new ScriptedEngine(new Set(), 5);
    // Between the sizes of the safetensors copies (526 992 bytes) and the pickle one (534 439).
    const pipeline = pipelineOver(dir, engine, { modeLimits: { MINIMAL_RESOURCES: { maxModelBytes: 530_000 } } });
    expect((await pipeline.manager.listModels()).map((m) => m.status)).toEqual(['available', 'available', 'available']); // checksums recorded
    await corrupt(path.join(dir, 'a-corrupt'));
    const result = await pipeline.process(textRequest('3', { mode: ProcessingMode.MINIMAL_RESOURCES }));
    expect(result).toMatchObject({ success: true, modelUsed: 'b-good', fallbackUsed: false });
    expect(engine.loadAttempts).toEqual(['b-good']); // the corrupted one is not even tried
    const [corrupted, large, ...rest] = result.skippedModels;
    expect(rest).toEqual([]);
    expect(corrupted).toMatchObject({ name: 'a-corrupt', status: 'corrupted', reason: 'unusable', code: 'E_CHECKSUM' });
    expect(corrupted?.message).toMatch(/weights of "a-corrupt" changed/);
    expect(large).toMatchObject({ name: 'c-large', status: 'available', reason: 'too-large' });
    expect(large?.message).toMatch(/534439 bytes of weights exceed MINIMAL_RESOURCES's maxModelBytes of 530000/);

    const status = await pipeline.getSystemStatus();
    expect(status.modelsDir).toBe(dir);
    expect(status.models.map((m) => [m.name, m.status, m.error?.code])).toEqual([
      ['a-corrupt', 'corrupted', 'E_CHECKSUM'],
      ['b-good', 'loaded', undefined],
      ['c-large', 'available', undefined],
    ]);
  });

  it('a model whose load failed shows as error in the system status, with the load error', async () => {
    const dir = await modelsDirWith('load-error', { 'a-small': TINY, 'b-large': TINY_ORIGINAL });
    const pipeline = pipelineOver(dir, new ScriptedEngine(new Set(['a-small']), 5));
    await pipeline.process(textRequest('4', { mode: ProcessingMode.MINIMAL_RESOURCES }));
    const entry = (await pipeline.getSystemStatus()).models.find((m) => m.name === 'a-small');
    expect(entry).toMatchObject({ status: 'error', error: { code: 'E_BAD_WEIGHTS', message: 'a-small: scripted failure' } });
  });
});

describe('no usable model', () => {
  it('names the folder searched when it holds no models, or does not exist', async () => {
    const empty = path.join(scratch.dir, 'empty');
    await mkdir(empty);
    for (const dir of [empty, path.join(scratch.dir, 'missing')]) {
      const result = await pipelineOver(dir, new ScriptedEngine(new Set(), 5)).process(textRequest('5'));
      expect(result).toMatchObject({ success: false, errorCode: 'E_MODEL_NOT_FOUND', skippedModels: [] });
      expect(result.errorMessage).toContain(`no model folders in ${dir}`);
    }
  });

  it('names the folder and why each model is out', async () => {
    const dir = await modelsDirWith('none-usable', { 'a-corrupt': TINY, 'b-no-tokenizer': TINY_ORIGINAL });
    const pipeline = pipelineOver(dir, new ScriptedEngine(new Set(), 5));
    await pipeline.manager.listModels();
    await corrupt(path.join(dir, 'a-corrupt'));
    const result = await pipeline.process({ id: '6', input: 'a text prompt needs a tokenizer', taskType: 'generation' });
    expect(result).toMatchObject({ success: false, errorCode: 'E_MODEL_NOT_FOUND' });
    expect(result.errorMessage).toContain(dir);
    expect(result.errorMessage).toMatch(/a-corrupt \(unusable, E_CHECKSUM: weights of "a-corrupt" changed/);
    expect(result.errorMessage).toMatch(/b-no-tokenizer \(no-tokenizer: no tokenizer\.json, and the prompt is text\)/);
    expect(result.skippedModels.map((s) => [s.name, s.status, s.reason])).toEqual([
      ['a-corrupt', 'corrupted', 'unusable'],
      ['b-no-tokenizer', 'available', 'no-tokenizer'],
    ]);
  });

  it('when every candidate fails to load, the error lists the failures and the models not tried', async () => {
    const dir = await modelsDirWith('all-fail', { 'a-small': TINY, 'b-large': TINY_ORIGINAL });
    const pipeline = pipelineOver(dir, new ScriptedEngine(new Set(['a-small']), 5), { modeLimits: { MINIMAL_RESOURCES: { maxModelBytes: 530_000 } } });
    const result = await pipeline.process(textRequest('7', { mode: ProcessingMode.MINIMAL_RESOURCES }));
    expect(result).toMatchObject({ success: false, errorCode: 'E_BAD_WEIGHTS' });
    expect(result.errorMessage).toBe(
      `a-small: scripted failure; no other model in ${dir} can serve the request: b-large (too-large: 534439 bytes of weights exceed MINIMAL_RESOURCES's maxModelBytes of 530000)`,
    );
  });
});

describe('token-id prompts stay on their model', () => {
  it('a token-id prompt whose model fails is not moved to another vocabulary: the failure, and every other model marked token-ids', async () => {
    const dir = await modelsDirWith('ids-stay', { 'a-small': TINY, 'b-large': TINY_ORIGINAL, 'c-small-too': TINY });
    const engine = new ScriptedEngine(new Set(['a-small']), 5);
    const pipeline = pipelineOver(dir, engine);
    for (const taskType of ['generation', 'scoring'] as const) {
      engine.loadAttempts.length = 0;
      const result = await pipeline.process({ id: `ids-${taskType}`, input: { ids: [1, 2, 3] }, taskType, modelPreference: 'a-small' });
      expect(engine.loadAttempts).toEqual(['a-small']);
      expect(result).toMatchObject({ success: false, errorCode: 'E_BAD_WEIGHTS', fallbackUsed: false });
      expect(result.errorMessage).toBe('a-small: scripted failure; a token-id prompt is not moved to another model (its ids belong to "a-small"\'s vocabulary)');
      expect(result.skippedModels.map((s) => [s.name, s.reason])).toEqual([
        ['a-small', 'load-failed'],
        ['b-large', 'token-ids'],
        ['c-small-too', 'token-ids'],
      ]);
    }
    // The same prompt as text falls back.
    const text = await pipeline.process(textRequest('text', { modelPreference: 'a-small' }));
    expect(text).toMatchObject({ success: true, fallbackUsed: true });
  });
});
