/**
 * The local models as `getSystemStatus()` reports them: each with its status and, when unusable, why.
 * Listing may hash files seen for the first time, so it is bounded in time.
 */
import { PhoenixError, toPhoenixError } from '../binding/errors.js';
import type { ModelStatus } from '../models/metadata.js';
import { raceStop } from './deadline.js';
import type { AbortableManager } from './manager-calls.js';
import { describeValue } from '../engines/options.js';
import { listenAbort, unlistenAbort } from '../util/abort-listeners.js';

/** Options of {@link LocalAIPipeline.getSystemStatus}. */
export interface SystemStatusOptions {
  /** Stops listing the models (then `modelsError` is `E_ABORTED`). */
  signal?: AbortSignal;
  /** Longest the model listing may take (it hashes files it has not seen); default 10 000 ms. */
  modelsTimeoutMs?: number;
}

/** One local model in `SystemStatus.models`. */
export interface SystemModelStatus {
  name: string;
  status: ModelStatus;
  modelType: string;
  sizeBytes: number;
  hasTokenizer: boolean;
  /** Why the model cannot be used (status `error` / `corrupted`). */
  error?: { code: string; message: string };
}

/** The model part of the system status. */
export interface ModelStatuses {
  models: SystemModelStatus[];
  /** Set when the models dir could not be listed in time or at all (then `models` is empty). */
  modelsError?: { code: string; message: string };
}

const DEFAULT_LISTING_MS = 10_000;

/**
 * Lists the manager's models within `modelsTimeoutMs`.
 * @throws `E_INVALID_OPTION` for a `modelsTimeoutMs` that is not a number > 0 (listing failures are `modelsError`).
 */
export async function listModelStatuses(manager: AbortableManager, { signal, modelsTimeoutMs = DEFAULT_LISTING_MS }: SystemStatusOptions = {}): Promise<ModelStatuses> {
  if (typeof modelsTimeoutMs !== 'number' || !(modelsTimeoutMs > 0)) {
    throw new PhoenixError('E_INVALID_OPTION', `option \`modelsTimeoutMs\` must be a number > 0, got ${describeValue(modelsTimeoutMs)}`, { option: 'modelsTimeoutMs' });
  }
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), modelsTimeoutMs);
  const onAbort = (): void => controller.abort();
  if (signal?.aborted) onAbort();
  if (signal) listenAbort(signal, onAbort);
  const dir = manager.modelsDir;
  const stopped = (): PhoenixError =>
    new PhoenixError('E_ABORTED', signal?.aborted ? `listing the models in ${dir} was aborted by the caller` : `listing the models in ${dir} took longer than ${modelsTimeoutMs} ms`, { path: dir });
  try {
    const models = await raceStop(manager.listModels({ signal: controller.signal }), controller.signal, stopped);
    return {
      models: models.map((m) => ({
        name: m.name,
        status: m.status,
        modelType: m.modelType,
        sizeBytes: m.sizeBytes,
        hasTokenizer: m.hasTokenizer,
        ...(m.error ? { error: { code: m.error.code, message: m.error.message } } : {}),
      })),
    };
  } catch (thrown) {
    const error = toPhoenixError(thrown);
    return { models: [], modelsError: { code: error.code, message: error.message } };
  } finally {
    clearTimeout(timer);
    if (signal) unlistenAbort(signal, onAbort);
  }
}
