/**
 * Shape checks of caller-supplied generation options and prompts before they cross the binding.
 * Only JS types are checked here (a string where a number belongs would otherwise fail inside the
 * binding's conversion with an untyped error); ranges — `maxTokens ≥ 1`, `topP ∈ (0, 1]`, ids
 * inside the vocabulary, empty ids — are validated once, by the core, which throws
 * `E_INVALID_OPTION` naming the option.
 */
import { PhoenixError } from '../binding/errors.js';
import type { RawGenerateOptions, RawPrompt } from '../binding/types.js';
import { refuseUnknownKeys } from './known-keys.js';
import type { GenerationInput, GenerationOptions } from './types.js';

function invalid(option: string, value: unknown, expected: string): PhoenixError {
  return new PhoenixError('E_INVALID_OPTION', `option \`${option}\` must be ${expected}, got ${describeValue(value)}`, { option });
}

/** A value as an error message shows it: strings quoted ("100" is not 100), long ones cut. */
export function describeValue(value: unknown): string {
  if (value === undefined) return 'undefined';
  if (typeof value === 'number' || typeof value === 'bigint' || typeof value === 'symbol') return String(value);
  if (typeof value === 'function') return 'a function';
  // Binary values by their kind (JSON would spell a Float32Array's numbers, an ArrayBuffer as `{}`).
  // SharedArrayBuffer is undefined in a browser page that is not cross-origin isolated.
  if (ArrayBuffer.isView(value) || value instanceof ArrayBuffer || (typeof SharedArrayBuffer !== 'undefined' && value instanceof SharedArrayBuffer)) return `a ${value.constructor.name}`;
  try {
    const text = JSON.stringify(value) ?? String(value);
    return text.length > 80 ? `${text.slice(0, 77)}...` : text;
  } catch {
    return Object.prototype.toString.call(value);
  }
}

const NUMERIC = ['maxTokens', 'temperature', 'topK', 'topP', 'minP', 'repeatPenalty', 'repeatLastN', 'seed'] as const;
const FLAGS = ['addSpecialTokens', 'fitToContext', 'int8Prompt'] as const;

const PROMPT_IDS_KEYS: ReadonlySet<string> = new Set(['ids']);
const PROMPT_TEXT_KEYS: ReadonlySet<string> = new Set(['text']);

/** Every key of {@link GenerationOptions}. */
export const GENERATION_OPTION_KEYS: ReadonlySet<string> = new Set([...NUMERIC, ...FLAGS, 'stop', 'stopTokenIds', 'signal', 'state', 'returnState']);

/** Whether `test` holds at every index of `array`, holes included (as `undefined`). */
export function everyIndex(array: readonly unknown[], test: (value: unknown) => boolean): boolean {
  for (let i = 0; i < array.length; i++) if (!test(array[i])) return false;
  return true;
}

/** A list of token ids: an array of numbers (integrality and the vocabulary range are the core's checks). */
function idList(option: string, value: unknown): number[] {
  // Every index, holes too (`[1, , 2]`): `some` skips holes, which then reached the binding as undefined.
  if (!Array.isArray(value) || !everyIndex(value, (id) => typeof id === 'number')) throw invalid(option, value, 'an array of token ids (numbers)');
  return [...(value as number[])];
}

/** Checks the JS types of `options` and converts them to the binding's form. */
export function toRawOptions(options: GenerationOptions): RawGenerateOptions {
  if (options === null || typeof options !== 'object') throw invalid('options', options, 'an object');
  refuseUnknownKeys(options, GENERATION_OPTION_KEYS, 'option');
  const raw: RawGenerateOptions = {};
  for (const key of NUMERIC) {
    const value = options[key];
    if (value === undefined) continue;
    if (typeof value !== 'number') throw invalid(key, value, 'a number');
    raw[key] = value;
  }
  if (options.stop !== undefined) {
    if (!Array.isArray(options.stop) || !everyIndex(options.stop, (s) => typeof s === 'string')) throw invalid('stop', options.stop, 'an array of strings');
    raw.stopStrings = [...options.stop];
  }
  if (options.stopTokenIds !== undefined) raw.stopTokenIds = idList('stopTokenIds', options.stopTokenIds);
  for (const key of FLAGS) {
    const value = options[key];
    if (value === undefined) continue;
    if (typeof value !== 'boolean') throw invalid(key, value, 'a boolean');
    raw[key] = value;
  }
  if (options.state !== undefined && !(options.state instanceof Uint8Array)) throw invalid('state', options.state, 'a Uint8Array');
  // A buffer transferred away (postMessage) reads as empty; WASM would fail copying it, native on its
  // magic: refused here, the same on both.
  if (options.state?.byteLength === 0) {
    throw new PhoenixError('E_STATE_MISMATCH', 'state: the snapshot is empty (0 bytes; a transferred or detached buffer reads as empty)', { option: 'state' });
  }
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) throw invalid('signal', options.signal, 'an AbortSignal');
  return raw;
}

/**
 * Checks the JS shape of a prompt: a string, `{ text }` or `{ ids }`. An empty text is refused unless
 * it continues a state (a tokenizer would otherwise turn it into a lone BOS): to generate
 * unconditionally, pass the BOS id explicitly. Empty ids are refused by the core.
 */
export function toRawPrompt(input: GenerationInput, continuesState = false): RawPrompt {
  if (typeof input === 'string') input = { text: input };
  if (input !== null && typeof input === 'object') {
    // One of them, and nothing else: `{ ids, text }` used to run the ids and drop the text unseen.
    refuseUnknownKeys(input, 'ids' in input && input.ids !== undefined ? PROMPT_IDS_KEYS : PROMPT_TEXT_KEYS, 'prompt field', 'prompt.');
    if ('ids' in input && input.ids !== undefined) return { ids: idList('prompt.ids', input.ids) };
    if ('text' in input && typeof input.text === 'string') {
      if (input.text === '' && !continuesState) {
        throw new PhoenixError('E_INVALID_OPTION', 'prompt is empty (give text, or { ids: [bosTokenId] } to generate unconditionally)', { option: 'prompt' });
      }
      return { text: input.text };
    }
  }
  throw invalid('prompt', input, 'a string, { text } or { ids }');
}
