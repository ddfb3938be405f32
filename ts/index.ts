/**
 * phoenix-local — offline Mamba-family language models for Node.
 *
 * Start with {@link LocalAIPipeline} (requests in, results out), or use {@link LocalModelManager} and
 * an engine such as {@link MambaSSMEngine} directly for token-level control.
 *
 * @packageDocumentation
 */

export { PhoenixError, ERROR_CODES, isErrorCode, isPhoenixError, parseWireError, toPhoenixError } from './binding/errors.js';
export type { ErrorCode } from './binding/errors.js';
export { loadBinding, getDefaultBinding, defaultNativePath, defaultWasmPath, nativePlatformSuffix } from './binding/load.js';
export type { LoadBindingOptions, BindingSelection, BackendAttempt } from './binding/load.js';
export type {
  BackendKind,
  RawBinding,
  RawModel,
  RawModelInfo,
  RawGeneration,
  RawGenerateOptions,
  RawPrompt,
  RawStep,
  RawGenerationStats,
  RawFinishReason,
  RawModelSource,
  ModelFileMap,
  ModelFileReader,
  ModelFileData,
} from './binding/types.js';

export { BindingEngine } from './engines/binding-engine.js';
export type { BindingEngineOptions } from './engines/binding-engine.js';
export { MambaSSMEngine, MAMBA_MODEL_TYPES } from './engines/mamba-engine.js';
export type {
  InferenceEngine,
  LoadedModel,
  GenerationInput,
  GenerationOptions,
  GenerationResult,
  GenerationStream,
  GenerationTimings,
  TokenChunk,
  FinishReason,
  ScoreResult,
} from './engines/types.js';

export { LocalModelManager, defaultModelsDir } from './models/manager.js';
export type { LocalModelManagerOptions, ModelProgressEvent, ModelLease, FallbackOptions } from './models/manager.js';
export { MANIFEST_FILE_NAME } from './models/manifest.js';
export type { ModelMetadata, ModelFormat, ModelStatus, PerformanceProfile, WeightFileInfo } from './models/metadata.js';

export { LocalAIPipeline } from './pipeline/pipeline.js';
export type { LocalAIPipelineOptions, SystemStatus } from './pipeline/pipeline.js';
export { ProcessingMode, PROCESSING_MODES, DEFAULT_MODE_LIMITS } from './pipeline/modes.js';
export type { ModeLimits } from './pipeline/modes.js';
export type {
  ProcessingRequest,
  ProcessingResult,
  ProcessingStream,
  RequestOptions,
  ResultMetadata,
  ScoringOutput,
  StopCause,
  TaskType,
} from './pipeline/types.js';
export { EnergyMeter } from './pipeline/energy.js';
export type { EnergyMeterOptions, EnergySource, EnergyMeasurement } from './pipeline/energy.js';
export type { MetricsSnapshot, Distribution } from './pipeline/metrics.js';
export type { QueueStatus } from './pipeline/queue.js';

export { OfflineDetector, hasExternalInterface } from './offline/detector.js';
export type { ConnectivityProbe, ConnectivityState, OfflineDetectorOptions } from './offline/detector.js';
