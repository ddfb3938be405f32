/**
 * Processing modes and their limits — the one table the pipeline consults to pick a model and bound
 * a request.
 */
import { PhoenixError } from '../binding/errors.js';
import { optionKeys, refuseUnknownKeys } from '../engines/known-keys.js';

/** How much of the machine a request may use. */
export const ProcessingMode = {
  /** Best model that is available, generous limits. */
  FULL_CAPABILITY: 'FULL_CAPABILITY',
  /** Smallest adequate model, moderate limits. */
  ENERGY_EFFICIENT: 'ENERGY_EFFICIENT',
  /** Only small models, tight limits. */
  MINIMAL_RESOURCES: 'MINIMAL_RESOURCES',
  /** Like FULL_CAPABILITY, but guaranteed network-free: no connectivity probes run. */
  OFFLINE_ONLY: 'OFFLINE_ONLY',
} as const;
export type ProcessingMode = (typeof ProcessingMode)[keyof typeof ProcessingMode];

/** Every mode, in the order above. */
export const PROCESSING_MODES: readonly ProcessingMode[] = Object.values(ProcessingMode);

/** Limits of one mode. */
export interface ModeLimits {
  /** Largest model (weight bytes on disk) the mode may select. */
  maxModelBytes: number;
  /** Deadline of a request in ms (a request's own `maxProcessingTime` can only lower it). */
  maxProcessingTimeMs: number;
  /** Most tokens a generation may produce (a request's `maxTokens` is clamped to it). */
  maxTokens: number;
  /** Which end of the size range to prefer when no model is requested. */
  prefer: 'largest' | 'smallest';
  /** Whether connectivity probes may run in this mode. */
  allowConnectivityProbes: boolean;
}

const MiB = 1024 * 1024;

/** Default limits per mode (frozen: a change would reach every pipeline). Override per pipeline with `modeLimits`. */
export const DEFAULT_MODE_LIMITS: Readonly<Record<ProcessingMode, Readonly<ModeLimits>>> = Object.freeze({
  FULL_CAPABILITY: Object.freeze({ maxModelBytes: Number.POSITIVE_INFINITY, maxProcessingTimeMs: 300_000, maxTokens: 2048, prefer: 'largest', allowConnectivityProbes: true }),
  ENERGY_EFFICIENT: Object.freeze({ maxModelBytes: 2048 * MiB, maxProcessingTimeMs: 60_000, maxTokens: 512, prefer: 'smallest', allowConnectivityProbes: true }),
  MINIMAL_RESOURCES: Object.freeze({ maxModelBytes: 256 * MiB, maxProcessingTimeMs: 15_000, maxTokens: 128, prefer: 'smallest', allowConnectivityProbes: true }),
  OFFLINE_ONLY: Object.freeze({ maxModelBytes: Number.POSITIVE_INFINITY, maxProcessingTimeMs: 300_000, maxTokens: 2048, prefer: 'largest', allowConnectivityProbes: false }),
} as const);

const LIMIT_KEYS = optionKeys<ModeLimits>({ maxModelBytes: true, maxProcessingTimeMs: true, maxTokens: true, prefer: true, allowConnectivityProbes: true });

/**
 * Merges overrides into the default table.
 * @throws `E_INVALID_OPTION` naming `modeLimits.<mode>.<key>` for an unknown mode or key, or a value out
 * of range (a NaN deadline would have disabled it; a negative `maxTokens` failed every request later).
 */
export function resolveModeLimits(overrides: Partial<Record<ProcessingMode, Partial<ModeLimits>>> = {}): Record<ProcessingMode, ModeLimits> {
  if (typeof overrides !== 'object' || overrides === null) throw new PhoenixError('E_INVALID_OPTION', 'option `modeLimits` must be an object of modes', { option: 'modeLimits' });
  refuseUnknownKeys(overrides, new Set<string>(PROCESSING_MODES), 'mode', 'modeLimits.');
  const table = {} as Record<ProcessingMode, ModeLimits>;
  for (const mode of PROCESSING_MODES) {
    const override = overrides[mode] ?? {};
    const name = (key: string): string => `modeLimits.${mode}.${key}`;
    if (typeof override !== 'object' || override === null) throw new PhoenixError('E_INVALID_OPTION', `option \`modeLimits.${mode}\` must be an object`, { option: `modeLimits.${mode}` });
    refuseUnknownKeys(override, LIMIT_KEYS, 'mode limit', `modeLimits.${mode}.`);
    const limits = { ...DEFAULT_MODE_LIMITS[mode], ...Object.fromEntries(Object.entries(override).filter(([, v]) => v !== undefined)) } as ModeLimits;
    const bad = (key: string, rule: string, value: unknown): PhoenixError =>
      new PhoenixError('E_INVALID_OPTION', `option \`${name(key)}\` must be ${rule}, got ${typeof value === 'string' ? JSON.stringify(value) : String(value)}`, { option: name(key) });
    for (const key of ['maxModelBytes', 'maxProcessingTimeMs'] as const) {
      const value = limits[key];
      if (typeof value !== 'number' || Number.isNaN(value) || value <= 0) throw bad(key, 'a number > 0 (Infinity for no limit)', value);
    }
    if (!Number.isSafeInteger(limits.maxTokens) || limits.maxTokens < 1) throw bad('maxTokens', 'an integer ≥ 1', limits.maxTokens);
    if (limits.prefer !== 'largest' && limits.prefer !== 'smallest') throw bad('prefer', '"largest" or "smallest"', limits.prefer);
    if (typeof limits.allowConnectivityProbes !== 'boolean') throw bad('allowConnectivityProbes', 'a boolean', limits.allowConnectivityProbes);
    table[mode] = limits;
  }
  return table;
}
