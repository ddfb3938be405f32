/**
 * The model-manager calls the pipeline makes, each with an optional `{ signal }` that stops the
 * manager's hashing and waiting. A manager that ignores the signal is still bounded: the pipeline races
 * every call against it (./deadline.ts).
 */
import type { ModelLease } from '../models/manager.js';
import type { ModelMetadata } from '../models/metadata.js';

/** Options the manager's calls take. */
export interface ManagerCallOptions {
  signal?: AbortSignal;
}

/** The part of {@link LocalModelManager} the pipeline uses, with the `{ signal }` argument. */
export interface AbortableManager {
  readonly modelsDir: string;
  listModels(options?: ManagerCallOptions): Promise<ModelMetadata[]>;
  getModelMetadata(name: string, options?: ManagerCallOptions): Promise<ModelMetadata>;
  acquireModel(name: string, options?: ManagerCallOptions): Promise<ModelLease>;
}
