/**
 * Picks the model for a request from the manager's models, the mode's limits and the preference.
 */
import { PhoenixError } from '../binding/errors.js';
import type { ModelMetadata } from '../models/metadata.js';
import type { ModeLimits, ProcessingMode } from './modes.js';

/** What a request needs from a model. */
export interface ModelNeeds {
  mode: ProcessingMode;
  limits: ModeLimits;
  /** Text input needs a tokenizer. */
  requireTokenizer: boolean;
  preference?: string;
}

/** The chosen model and a sentence saying why. */
export interface Selection {
  model: ModelMetadata;
  reason: string;
}

function usable(m: ModelMetadata): boolean {
  return m.status === 'available' || m.status === 'loaded' || m.status === 'loading';
}

function fits(m: ModelMetadata, needs: ModelNeeds): boolean {
  return m.sizeBytes <= needs.limits.maxModelBytes && (!needs.requireTokenizer || m.hasTokenizer);
}

/**
 * Chooses a model. A preferred model is used when it fits the mode's limits even if it is broken
 * (loading it then fails and the pipeline falls back to a smaller model of its type).
 * @throws `E_MODEL_NOT_FOUND` when nothing fits.
 */
export function selectModel(models: readonly ModelMetadata[], needs: ModelNeeds): Selection {
  let note = '';
  if (needs.preference !== undefined) {
    const preferred = models.find((m) => m.name === needs.preference);
    if (preferred && fits(preferred, needs)) return { model: preferred, reason: `preferred model "${preferred.name}"` };
    note = preferred
      ? `preferred "${preferred.name}" does not fit ${needs.mode} (${preferred.sizeBytes} bytes, limit ${needs.limits.maxModelBytes}${needs.requireTokenizer && !preferred.hasTokenizer ? ', no tokenizer for a text prompt' : ''}); `
      : '';
  }
  const candidates = models.filter((m) => usable(m) && fits(m, needs));
  if (candidates.length === 0) {
    throw new PhoenixError(
      'E_MODEL_NOT_FOUND',
      `${note}no usable model fits ${needs.mode} (max ${needs.limits.maxModelBytes} bytes${needs.requireTokenizer ? ', tokenizer needed for a text prompt' : ''}) among ${models.length} local model(s)`,
      { mode: needs.mode },
    );
  }
  const sign = needs.limits.prefer === 'largest' ? -1 : 1;
  // By size in the mode's direction; among equals a loaded model (no load cost) wins.
  candidates.sort(
    (a, b) => sign * (a.sizeBytes - b.sizeBytes) || Number(b.status === 'loaded') - Number(a.status === 'loaded') || a.name.localeCompare(b.name),
  );
  const model = candidates[0] as ModelMetadata;
  return { model, reason: `${note}${needs.limits.prefer} usable model for ${needs.mode}${model.status === 'loaded' ? ' (already loaded)' : ''}: "${model.name}"` };
}
