/**
 * The job a queue client sends a worker: a {@link ProcessingRequest} as plain JSON. A worker treats the
 * payload as hostile: its encoded size, every field's type, string and array lengths are bounded, unknown
 * fields are refused, and the model preference is a model name, never a path. Value ranges (temperature,
 * maxTokens, …) are checked by the worker's own pipeline as for any in-process request.
 */
import { PhoenixError } from '../../binding/errors.js';
import type { ChatMessage } from '../../engines/types.js';
import { REQUEST_FIELDS } from '../request-keys.js';
import type { ProcessingRequest, RequestOptions } from '../types.js';

/** Largest encoded job (JSON, UTF-16 code units ≈ bytes for text prompts). */
export const MAX_JOB_CHARS = 4 * 1024 * 1024;
/** Longest request id (it is also the queue's job id). */
export const MAX_ID_CHARS = 256;
/** Most token ids, chat messages and stop strings / ids in one job. */
export const MAX_IDS = 1_000_000;
export const MAX_MESSAGES = 4096;
export const MAX_STOPS = 64;
const MAX_NAME_CHARS = 255;
const MAX_STOP_CHARS = 1024;

/** A request as it crosses the queue (no signal, no state snapshot). */
export type JobRequest = Omit<ProcessingRequest, 'options'> & { options?: Omit<RequestOptions, 'signal' | 'state'> };

const NUMBER_OPTIONS = ['maxTokens', 'temperature', 'topK', 'topP', 'minP', 'repeatPenalty', 'repeatLastN', 'seed'] as const;
const BOOLEAN_OPTIONS = ['fitToContext', 'addSpecialTokens', 'int8Prompt', 'returnState', 'returnLogits'] as const;
const OPTION_FIELDS = new Set<string>([...NUMBER_OPTIONS, ...BOOLEAN_OPTIONS, 'stop', 'stopTokenIds']);

function bad(field: string, message: string): PhoenixError {
  return new PhoenixError('E_INVALID_OPTION', `${field ? `job.${field}` : 'the job'} ${message}`, { option: field || 'job' });
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

function checkString(field: string, value: unknown, max: number): string {
  if (typeof value !== 'string') throw bad(field, 'must be a string');
  if (value.length > max) throw bad(field, `is ${value.length} characters long, more than ${max}`);
  return value;
}

function checkIntArray(field: string, value: unknown, max: number): number[] {
  if (!Array.isArray(value)) throw bad(field, 'must be an array of integers');
  if (value.length > max) throw bad(field, `has ${value.length} entries, more than ${max}`);
  for (const id of value) if (!Number.isSafeInteger(id)) throw bad(field, 'must hold integers only');
  return value as number[];
}

/**
 * A request as a job payload: the fields that cross the wire (a `signal` stays with the caller; a
 * state snapshot is refused — it would have to travel as bytes).
 * @throws `E_INVALID_OPTION` when the request carries `options.state`, or its payload is too large.
 */
export function encodeJob(request: ProcessingRequest): JobRequest {
  const { signal: _signal, state, ...options } = request.options ?? {};
  if (state !== undefined) throw bad('options.state', 'cannot be sent to a queue worker (run it in-process)');
  // BullMQ refuses ":" in a job id (its key separator) with an untyped error; the request id is the job id.
  if (typeof request.id === 'string' && request.id.includes(':')) throw bad('id', 'must not contain ":" on a queue (the request id is the BullMQ job id)');
  const job: JobRequest = { ...request, ...(request.options ? { options } : {}) };
  const size = JSON.stringify(job).length;
  if (size > MAX_JOB_CHARS) throw bad('', `is ${size} characters encoded, more than ${MAX_JOB_CHARS}`);
  return job;
}

/**
 * Whether two encoded requests are the same request (key order aside): a duplicate id joins the
 * job only then, so a reused id never hands back another request's result.
 */
export function sameJob(a: unknown, b: unknown): boolean {
  return canonicalJson(a) === canonicalJson(b);
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  if (isRecord(value)) {
    const keys = Object.keys(value).filter((k) => value[k] !== undefined).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(',')}}`;
  }
  return JSON.stringify(value) ?? 'null';
}

/**
 * Validates a payload read from the queue and returns it as a request.
 * @throws `E_INVALID_OPTION` naming the field for anything malformed, unknown or too large.
 */
export function decodeJob(payload: unknown): ProcessingRequest {
  if (!isRecord(payload)) throw bad('', 'must be an object');
  const size = JSON.stringify(payload).length;
  if (size > MAX_JOB_CHARS) throw bad('', `is ${size} characters encoded, more than ${MAX_JOB_CHARS}`);
  for (const key of Object.keys(payload)) if (!REQUEST_FIELDS.has(key)) throw bad(key, 'is not a request field');
  const request: Record<string, unknown> = {};
  const id = checkString('id', payload.id, MAX_ID_CHARS);
  if (id.length === 0) throw bad('id', 'must be a non-empty string');
  request.id = id;
  if (payload.input !== undefined) {
    if (typeof payload.input === 'string') request.input = checkString('input', payload.input, MAX_JOB_CHARS);
    else if (isRecord(payload.input) && Object.keys(payload.input).every((k) => k === 'ids')) request.input = { ids: checkIntArray('input.ids', payload.input.ids, MAX_IDS) };
    else throw bad('input', 'must be a string or { ids: number[] }');
  }
  if (payload.messages !== undefined) {
    if (!Array.isArray(payload.messages)) throw bad('messages', 'must be an array of { role, content }');
    if (payload.messages.length > MAX_MESSAGES) throw bad('messages', `has ${payload.messages.length} entries, more than ${MAX_MESSAGES}`);
    request.messages = payload.messages.map((m: unknown, i): ChatMessage => {
      if (!isRecord(m) || Object.keys(m).some((k) => k !== 'role' && k !== 'content')) throw bad(`messages[${i}]`, 'must be { role, content }');
      return { role: checkString(`messages[${i}].role`, m.role, MAX_NAME_CHARS), content: checkString(`messages[${i}].content`, m.content, MAX_JOB_CHARS) };
    });
  }
  for (const field of ['taskType', 'mode'] as const) {
    if (payload[field] !== undefined) request[field] = checkString(field, payload[field], 64); // the pipeline checks the value
  }
  if (payload.modelPreference !== undefined) {
    const name = checkString('modelPreference', payload.modelPreference, MAX_NAME_CHARS);
    // A model is named, never located: no separators, no parent references, no NUL.
    if (name === '' || name === '.' || name === '..' || /[/\\\0]/.test(name)) throw bad('modelPreference', 'must be a model name in the worker\'s models dir, not a path');
    request.modelPreference = name;
  }
  for (const field of ['maxProcessingTime', 'energyBudget'] as const) {
    if (payload[field] !== undefined) {
      if (typeof payload[field] !== 'number') throw bad(field, 'must be a number');
      request[field] = payload[field];
    }
  }
  if (payload.options !== undefined) request.options = decodeOptions(payload.options);
  return request as unknown as ProcessingRequest;
}

function decodeOptions(value: unknown): RequestOptions {
  if (!isRecord(value)) throw bad('options', 'must be an object');
  const options: Record<string, unknown> = {};
  for (const [key, option] of Object.entries(value)) {
    if (!OPTION_FIELDS.has(key)) throw bad(`options.${key}`, 'is not an option a queue job may carry');
    if (option === undefined) continue;
    if ((NUMBER_OPTIONS as readonly string[]).includes(key) && typeof option !== 'number') throw bad(`options.${key}`, 'must be a number');
    if ((BOOLEAN_OPTIONS as readonly string[]).includes(key) && typeof option !== 'boolean') throw bad(`options.${key}`, 'must be a boolean');
    if (key === 'stopTokenIds') checkIntArray('options.stopTokenIds', option, MAX_STOPS);
    if (key === 'stop') {
      if (!Array.isArray(option) || option.length > MAX_STOPS) throw bad('options.stop', `must be an array of at most ${MAX_STOPS} strings`);
      option.forEach((s: unknown, i) => checkString(`options.stop[${i}]`, s, MAX_STOP_CHARS));
    }
    options[key] = option;
  }
  return options as RequestOptions;
}
