/**
 * Orders the models a request may use: the preference first (when it fits the mode), then every usable
 * model that fits the mode's limits in the mode's own ranking; and says why each other model is out.
 */
import { isErrorCode, PhoenixError } from '../binding/errors.js';
import type { ModelMetadata } from '../models/metadata.js';
import type { ModeLimits, ProcessingMode } from './modes.js';
import type { SkippedModel } from './types.js';

/** What a request needs from a model. */
export interface ModelNeeds {
  mode: ProcessingMode;
  limits: ModeLimits;
  /** Text input needs a tokenizer. */
  requireTokenizer: boolean;
  /** The prompt is token ids: only the first candidate may serve it (ids mean nothing in another vocabulary). */
  tokenIds: boolean;
  preference?: string;
}

/** The models to try, in order, and the ones ruled out before trying. */
export interface CandidatePlan {
  /** Models to try in order; empty when nothing fits. */
  candidates: ModelMetadata[];
  /** Models ruled out by the mode's limits, the input, or their status. */
  skipped: SkippedModel[];
  /** A sentence saying how the first candidate was chosen. */
  reason: string;
}

function usable(m: ModelMetadata): boolean {
  return m.status === 'available' || m.status === 'loaded' || m.status === 'loading';
}

/** Why `m` does not fit the request's limits, or `undefined` when it does. */
function misfit(m: ModelMetadata, needs: ModelNeeds): SkippedModel | undefined {
  if (m.sizeBytes > needs.limits.maxModelBytes) {
    return { name: m.name, status: m.status, reason: 'too-large', message: `${m.sizeBytes} bytes of weights exceed ${needs.mode}'s maxModelBytes of ${needs.limits.maxModelBytes}` };
  }
  if (needs.requireTokenizer && !m.hasTokenizer) {
    return { name: m.name, status: m.status, reason: 'no-tokenizer', message: 'no tokenizer.json, and the prompt is text' };
  }
  return undefined;
}

/** A model the manager reports as `error` / `corrupted`, with the manager's reason. */
function unusableEntry(m: ModelMetadata): SkippedModel {
  const code = m.error?.code;
  return { name: m.name, status: m.status, reason: 'unusable', ...(isErrorCode(code) ? { code } : {}), message: m.error?.message ?? `status ${m.status}` };
}

/**
 * Plans which models to try. A preferred model that fits the mode is tried first even when its status
 * is `error` / `corrupted` (so a repaired folder is picked up again; a failure then falls back).
 */
export function planCandidates(models: readonly ModelMetadata[], needs: ModelNeeds): CandidatePlan {
  const skipped: SkippedModel[] = [];
  const fitting: ModelMetadata[] = [];
  let preferred: ModelMetadata | undefined;
  for (const m of models) {
    // A folder the manager could not describe (`error`) has no known size or tokenizer: its own
    // error is the reason it is out, not a limit judged on placeholder values.
    const out = m.status === 'error' ? undefined : misfit(m, needs);
    if (out) skipped.push(out);
    else if (m.name === needs.preference) preferred = m;
    else if (usable(m)) fitting.push(m);
    else skipped.push(unusableEntry(m));
  }
  const sign = needs.limits.prefer === 'largest' ? -1 : 1;
  // By size in the mode's direction; among equals a loaded model (no load cost) wins.
  fitting.sort((a, b) => sign * (a.sizeBytes - b.sizeBytes) || Number(b.status === 'loaded') - Number(a.status === 'loaded') || a.name.localeCompare(b.name));
  const candidates = preferred ? [preferred, ...fitting] : fitting;
  const first = candidates[0];
  const unmet = needs.preference !== undefined && !preferred ? skipped.find((s) => s.name === needs.preference) : undefined;
  const note = unmet ? `preferred "${unmet.name}" does not fit ${needs.mode} (${unmet.message}); ` : '';
  const reason = !first
    ? `${note}no usable model fits ${needs.mode}`
    : first === preferred
      ? `preferred model "${first.name}"`
      : `${note}${needs.limits.prefer} usable model for ${needs.mode}${first.status === 'loaded' ? ' (already loaded)' : ''}: "${first.name}"`;
  return { candidates, skipped, reason };
}

/** `E_MODEL_NOT_FOUND` for a request no model can serve: the folder searched and why each model is out. */
export function noUsableModel(models: readonly ModelMetadata[], plan: CandidatePlan, needs: ModelNeeds, modelsDir: string): PhoenixError {
  const size = Number.isFinite(needs.limits.maxModelBytes) ? `max ${needs.limits.maxModelBytes} bytes` : 'any size';
  const limits = `${size}${needs.requireTokenizer ? ', tokenizer needed for a text prompt' : ''}`;
  const why = models.length === 0 ? `no model folders in ${modelsDir}` : `among ${models.length} local model(s) in ${modelsDir}: ${describeSkips(plan.skipped)}`;
  return new PhoenixError('E_MODEL_NOT_FOUND', `no usable model fits ${needs.mode} (${limits}); ${why}`, { mode: needs.mode, modelsDir });
}

/** `name (reason[, CODE]: message); …` */
export function describeSkips(skipped: readonly SkippedModel[]): string {
  return skipped.map((s) => `${s.name} (${s.reason}${s.code ? `, ${s.code}` : ''}: ${s.message})`).join('; ');
}
