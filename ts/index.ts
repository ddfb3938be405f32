/**
 * phoenix-local — offline state-space (Mamba, Mamba-2, Granite-4.0-H hybrids) and transformer
 * (Llama, Qwen2) language models for Node.
 *
 * Start with {@link LocalAIPipeline} (requests in, results out), or use {@link LocalModelManager} and
 * the engines ({@link defaultEngines}: a {@link MambaSSMEngine} and a {@link TransformerEngine})
 * directly for token-level control.
 *
 * @packageDocumentation
 */

export * from './portable.js';
export { loadBinding, getDefaultBinding, defaultNativePath, defaultWasmPath, nativePlatformSuffix } from './binding/load.js';
export type { LoadBindingOptions } from './binding/load.js';
export { readStateFile } from './engines/state-file.js';

export { LocalModelManager, defaultModelsDir } from './models/manager.js';
export type { LocalModelManagerOptions, ModelProgressEvent, ModelLease, FallbackOptions } from './models/manager.js';
export { MANIFEST_FILE_NAME } from './models/manifest.js';

export { LocalAIPipeline } from './pipeline/pipeline.js';
export type { LocalAIPipelineOptions, SystemStatus, SystemStatusOptions, SystemModelStatus } from './pipeline/pipeline.js';
export { ProcessingMode, PROCESSING_MODES, DEFAULT_MODE_LIMITS } from './pipeline/modes.js';
export type { ModeLimits } from './pipeline/modes.js';
export type {
  ProcessingRequest,
  ProcessingResult,
  ProcessingStream,
  RequestOptions,
  ResultMetadata,
  ScoringOutput,
  SkippedModel,
  SkipReason,
  RequestPhase,
  StopCause,
  TaskType,
} from './pipeline/types.js';
export { EnergyMeter } from './pipeline/energy.js';
export type { EnergyMeterOptions, EnergySource, EnergyMeasurement } from './pipeline/energy.js';
export type { MetricsSnapshot, Distribution } from './pipeline/metrics.js';
export type { QueueStatus } from './pipeline/queue.js';
export { startWorker } from './pipeline/cluster/lazy.js';
export type { WorkerOptions, QueueWorker } from './pipeline/cluster/worker.js';
export type { QueueClientOptions } from './pipeline/cluster/options.js';
export type { ClusterMetrics, ClusterWorkerStatus } from './pipeline/cluster/aggregate.js';

export { OfflineDetector, hasExternalInterface } from './offline/detector.js';
export type { ConnectivityProbe, ConnectivityState, OfflineDetectorOptions } from './offline/detector.js';
