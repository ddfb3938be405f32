// The engines' models are `Disposable` (`[Symbol.dispose]`): consumers get the lib that declares it
// from this directive, not from @types/node. `preserve` keeps it in the emitted .d.ts.
/// <reference lib="esnext.disposable" preserve="true" />
/**
 * The part of the public API that runs anywhere — Node, browsers, Web Workers — because nothing
 * behind it imports a `node:` module: typed errors, binding types, the engines and model metadata
 * types. Re-exported by both entries, `phoenix-local` (ts/index.ts) and `phoenix-local/browser`
 * (ts/browser.ts).
 */
export { PhoenixError, ERROR_CODES, isErrorCode, isPhoenixError, parseWireError, toPhoenixError } from './binding/errors.js';
export type { ErrorCode } from './binding/errors.js';
export type { BindingSelection, BackendAttempt } from './binding/load.js';
export type {
  BackendKind,
  RawBinding,
  RawModel,
  RawModelInfo,
  RawModelLayout,
  RawFamily,
  RawEngineKind,
  RawGeneration,
  RawGenerateOptions,
  RawLoadOptions,
  KvCacheType,
  RawPrompt,
  RawStep,
  RawGenerationStats,
  RawScore,
  RawScoreOptions,
  RawFinishReason,
  RawModelSource,
  ModelFileMap,
  ModelFileReader,
  ModelFileData,
} from './binding/types.js';

export { BindingEngine } from './engines/binding-engine.js';
export type { BindingEngineOptions } from './engines/binding-engine.js';
export { MambaSSMEngine } from './engines/mamba-engine.js';
export { TransformerEngine } from './engines/transformer-engine.js';
export { defaultEngines } from './engines/default-engines.js';
export type {
  InferenceEngine,
  LoadedModel,
  ChatMessage,
  ChatPrompt,
  GenerationInput,
  GenerationOptions,
  GenerationResult,
  GenerationStream,
  GenerationTimings,
  TokenChunk,
  FinishReason,
  ScoreOptions,
  ScoreResult,
} from './engines/types.js';
export type { ModelMetadata, ModelFormat, ModelStatus, PerformanceProfile, WeightFileInfo } from './models/metadata.js';
