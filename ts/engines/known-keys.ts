/**
 * Refusing keys an options object does not know: a misspelt option (`maxToken`, `max_tokens`) would
 * otherwise be ignored without a word — on a model with an 8k context, a generation run to its end.
 */
import { PhoenixError } from '../binding/errors.js';

/**
 * The keys of an options type as a run-time set, complete by construction: `optionKeys<Options>({ a: true,
 * b: true })` does not compile while a key of `Options` is missing or an extra one is listed.
 */
export function optionKeys<T extends object>(keys: Record<keyof Required<T>, true>): ReadonlySet<string> {
  return new Set(Object.keys(keys));
}

/**
 * Throws `E_INVALID_OPTION` when `value` is not an object ("<what>s must be an object"), or for its
 * first key (set to something) outside `known`.
 */
export function refuseUnknownKeys(value: unknown, known: ReadonlySet<string>, what: string, prefix = ''): asserts value is object {
  if (value === null || typeof value !== 'object') {
    throw new PhoenixError('E_INVALID_OPTION', `${what}s must be an object (${[...known].join(', ')}), got ${value === null ? 'null' : typeof value}`, { option: prefix || 'options' });
  }
  for (const [key, v] of Object.entries(value)) {
    if (v === undefined || known.has(key)) continue;
    const near = nearest(key, known);
    const hint = near ? ` (did you mean \`${near}\`?)` : ` (known: ${[...known].join(', ')})`;
    throw new PhoenixError('E_INVALID_OPTION', `unknown ${what} \`${prefix}${key}\`${hint}`, { option: `${prefix}${key}` });
  }
}

/**
 * Throws `E_INVALID_OPTION` for the first of `keys` set beside `given` (an object the caller brought, such
 * as its own `manager`): those keys configure the one built when `given` is absent, and would be ignored.
 */
export function refuseBeside<T extends object>(options: T, given: keyof T & string, keys: readonly (keyof T & string)[], builtInstead: string): void {
  if (options[given] === undefined) return;
  const key = keys.find((k) => options[k] !== undefined);
  if (key === undefined) return;
  throw new PhoenixError('E_INVALID_OPTION', `option \`${key}\` configures ${builtInstead}, not one given as \`${given}\`: set it on yours`, { option: key });
}

/** The known key `key` is most likely a misspelling of, if any is close. */
/** The entry of `known` closest to a misspelt `key` (case, `-` and `_` aside; at most 2 edits), if any. */
export function nearest(key: string, known: Iterable<string>): string | undefined {
  const fold = (s: string) => s.toLowerCase().replace(/[-_]/g, '');
  let best: string | undefined;
  let bestDistance = Infinity;
  for (const candidate of known) {
    if (fold(candidate) === fold(key)) return candidate;
    const d = distance(fold(key), fold(candidate));
    if (d < bestDistance) [best, bestDistance] = [candidate, d];
  }
  return bestDistance <= 2 ? best : undefined;
}

/** Levenshtein distance (keys are short). */
function distance(a: string, b: string): number {
  let row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const next = [i];
    for (let j = 1; j <= b.length; j++) next[j] = Math.min(row[j]! + 1, next[j - 1]! + 1, row[j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    row = next;
  }
  return row[b.length]!;
}
