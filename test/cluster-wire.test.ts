/**
 * What crosses the queue: job payloads are validated as hostile (schema, size limits, a model name is
 * never a path), a decoded job runs on a pipeline exactly as the request it came from, and results,
 * typed errors and chunks survive the JSON round trip (malformed ones from Redis are E_INTERNAL).
 */
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { PhoenixError } from '../ts/binding/errors.js';
import { decodeJob, encodeJob, MAX_ID_CHARS, MAX_JOB_CHARS, MAX_MESSAGES } from '../ts/pipeline/cluster/job.js';
import { decodeChunk, decodeError, decodeResult, encodeChunk, encodeError, encodeResult } from '../ts/pipeline/cluster/wire.js';
import { LocalAIPipeline } from '../ts/pipeline/pipeline.js';
import type { ProcessingRequest } from '../ts/pipeline/types.js';
import { LITE, copyModel, requireNativeAddon, tempDir } from './helpers.js';

/** A payload as it comes back out of Redis: JSON text parsed again. */
const overTheWire = (value: unknown): unknown => JSON.parse(JSON.stringify(value));

function expectInvalid(payload: unknown, field: RegExp): void {
  let thrown: unknown;
  try {
    decodeJob(payload);
  } catch (error) {
    thrown = error;
  }
  expect(thrown).toBeInstanceOf(PhoenixError);
  expect((thrown as PhoenixError).code).toBe('E_INVALID_OPTION');
  expect((thrown as PhoenixError).message).toMatch(field);
}

const base = { id: 'r1', input: 'Once upon a time', taskType: 'generation' };

describe('job payloads', () => {
  it('round-trips a request without its signal, and refuses a state snapshot', () => {
    const controller = new AbortController();
    const request: ProcessingRequest = { ...base, taskType: 'generation', modelPreference: 'lite', options: { maxTokens: 8, temperature: 0, stop: ['.'], signal: controller.signal } };
    const decoded = decodeJob(overTheWire(encodeJob(request)));
    expect(decoded).toEqual({ ...base, modelPreference: 'lite', options: { maxTokens: 8, temperature: 0, stop: ['.'] } });
    expect(() => encodeJob({ ...request, options: { state: new Uint8Array(4) } })).toThrow(/options\.state/);
  });

  it('refuses a model preference that is a path', () => {
    for (const name of ['../etc', '/etc/passwd', 'a/b', 'a\\b', '..', '.', '', 'x\0y']) expectInvalid({ ...base, modelPreference: name }, /job\.modelPreference/);
  });

  it('refuses unknown fields, wrong types and oversized parts, naming the field', () => {
    expectInvalid(null, /^the job must be an object/);
    expectInvalid({ ...base, exec: 'rm -rf /' }, /job\.exec is not a request field/);
    expectInvalid({ ...base, options: { signal: {} } }, /job\.options\.signal/);
    expectInvalid({ ...base, options: { state: 'AAAA' } }, /job\.options\.state/);
    expectInvalid({ ...base, options: { temperature: '0' } }, /job\.options\.temperature must be a number/);
    expectInvalid({ ...base, id: 'x'.repeat(MAX_ID_CHARS + 1) }, /job\.id is/);
    expectInvalid({ ...base, input: 'x'.repeat(MAX_JOB_CHARS + 1) }, /^the job is \d+ characters encoded/);
    expectInvalid({ ...base, input: { ids: [1, 2.5] } }, /job\.input\.ids must hold integers/);
    expectInvalid({ ...base, input: { ids: [1], path: '/x' } }, /job\.input must be/);
    expectInvalid({ id: 'm', taskType: 'generation', messages: Array.from({ length: MAX_MESSAGES + 1 }, () => ({ role: 'user', content: 'hi' })) }, /job\.messages has/);
    expectInvalid({ id: 'm', taskType: 'generation', messages: [{ role: 'user', content: 1 }] }, /job\.messages\[0\]\.content/);
    expectInvalid({ ...base, options: { stop: Array.from({ length: 65 }, () => 'a') } }, /job\.options\.stop/);
  });
});

describe('results, errors and chunks on the wire', () => {
  it('rebuilds typed errors; an unknown code or a malformed payload is E_INTERNAL', () => {
    const error = decodeError(overTheWire(encodeError(new PhoenixError('E_CHECKSUM', 'weights of "lite" changed'))));
    expect(error).toBeInstanceOf(PhoenixError);
    expect([error.code, error.message]).toEqual(['E_CHECKSUM', 'weights of "lite" changed']);
    expect(decodeError({ code: 'E_PWNED', message: 'x' }).code).toBe('E_INTERNAL');
    expect(decodeError('boom').code).toBe('E_INTERNAL');
  });

  it('keeps chunks in order by sequence number and refuses malformed ones', () => {
    expect(decodeChunk(overTheWire(encodeChunk(3, { text: 'é', tokenId: 7 })))).toEqual({ seq: 3, text: 'é', tokenId: 7 });
    expect(() => decodeChunk({ seq: 1.5, text: '', tokenId: null })).toThrow(PhoenixError);
    expect(() => decodeChunk({ seq: 1, text: 3, tokenId: null })).toThrow(PhoenixError);
  });

  it('refuses a result with an unknown error code or the wrong shape', () => {
    expect(() => decodeResult({ requestId: 'a', success: false, errorCode: 'E_NOPE', metadata: {} })).toThrow(/unknown error code/);
    expect(() => decodeResult({ success: true })).toThrow(/malformed result/);
  });
});

describe('a decoded job on a real pipeline', () => {
  let scratch: Awaited<ReturnType<typeof tempDir>>;
  let pipeline: LocalAIPipeline;
  beforeAll(async () => {
    requireNativeAddon();
    scratch = await tempDir();
    const modelsDir = path.join(scratch.dir, 'models');
    await mkdir(modelsDir);
    await copyModel(LITE, path.join(modelsDir, 'lite'));
    pipeline = new LocalAIPipeline({ modelsDir });
  });
  afterAll(async () => {
    pipeline?.dispose();
    await scratch?.cleanup();
  });

  it('gives the same text as the request it came from, and its result (with a state snapshot) survives the wire', async () => {
    const request: ProcessingRequest = { id: 'same', input: 'Once upon a time, there was a little', taskType: 'generation', modelPreference: 'lite', options: { maxTokens: 12, temperature: 0, returnState: true } };
    const direct = await pipeline.process(request);
    const queued = await pipeline.process(decodeJob(overTheWire(encodeJob(request))));
    expect(direct.success).toBe(true);
    expect(queued.text).toBe(direct.text);
    expect(queued.generatedTokens).toBe(direct.generatedTokens);
    const back = decodeResult(overTheWire(encodeResult(queued)));
    expect(back.text).toBe(queued.text);
    expect(back.metadata.state).toBeInstanceOf(Uint8Array);
    expect(Buffer.from(back.metadata.state!).equals(Buffer.from(queued.metadata.state!))).toBe(true);
  }, 60_000);
});
