/**
 * Processing modes and their limits — the one table the pipeline consults to pick a model and bound
 * a request.
 */

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

/** Default limits per mode. Override per pipeline with `modeLimits`. */
export const DEFAULT_MODE_LIMITS: Readonly<Record<ProcessingMode, Readonly<ModeLimits>>> = {
  FULL_CAPABILITY: { maxModelBytes: Number.POSITIVE_INFINITY, maxProcessingTimeMs: 300_000, maxTokens: 2048, prefer: 'largest', allowConnectivityProbes: true },
  ENERGY_EFFICIENT: { maxModelBytes: 2048 * MiB, maxProcessingTimeMs: 60_000, maxTokens: 512, prefer: 'smallest', allowConnectivityProbes: true },
  MINIMAL_RESOURCES: { maxModelBytes: 256 * MiB, maxProcessingTimeMs: 15_000, maxTokens: 128, prefer: 'smallest', allowConnectivityProbes: true },
  OFFLINE_ONLY: { maxModelBytes: Number.POSITIVE_INFINITY, maxProcessingTimeMs: 300_000, maxTokens: 2048, prefer: 'largest', allowConnectivityProbes: false },
};

/** Merges overrides into the default table. */
export function resolveModeLimits(overrides: Partial<Record<ProcessingMode, Partial<ModeLimits>>> = {}): Record<ProcessingMode, ModeLimits> {
  const table = {} as Record<ProcessingMode, ModeLimits>;
  for (const mode of PROCESSING_MODES) table[mode] = { ...DEFAULT_MODE_LIMITS[mode], ...overrides[mode] };
  return table;
}
