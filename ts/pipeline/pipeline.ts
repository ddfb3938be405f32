/**
 * LocalAIPipeline: takes requests, picks a model within the mode's limits, loads it (falling back to
 * any other model that fits the mode when loading fails, and reporting every model skipped and why),
 * runs it under a deadline (covering selection, checksums, loading and generation) and an energy budget
 * with bounded concurrency, and reports results, metrics and system status.
 */
import { PhoenixError, toPhoenixError, type ErrorCode } from '../binding/errors.js';
import type { BindingSelection } from '../binding/load.js';
import type { KvCacheType } from '../binding/types.js';
import { BindingEngine } from '../engines/binding-engine.js';
import { defaultEngines } from '../engines/default-engines.js';
import { optionKeys, refuseBeside, refuseUnknownKeys } from '../engines/known-keys.js';
import type { ChatMessage, GenerationOptions, GenerationResult, GenerationStream, InferenceEngine, LoadedModel, ScoreResult, TokenChunk } from '../engines/types.js';
import { LocalModelManager, type ModelLease } from '../models/manager.js';
import type { ModelMetadata } from '../models/metadata.js';
import { OfflineDetector, type ConnectivityState } from '../offline/detector.js';
import { AsyncChannel } from './channel.js';
import type { QueueClientOptions } from './cluster/options.js';
import type { ClusterMetrics } from './cluster/aggregate.js';
import { LazyQueueClient } from './cluster/lazy.js';
import { EnergyMeter, type EnergyMeterOptions, type EnergySource } from './energy.js';
import { PipelineMetrics, type MetricsSnapshot } from './metrics.js';
import { PROCESSING_MODES, ProcessingMode, resolveModeLimits, type ModeLimits } from './modes.js';
import { BoundedQueue, type QueueStatus } from './queue.js';
import { failedResult } from './cluster/failure.js';
import { REQUEST_FIELDS, REQUEST_OPTION_KEYS } from './request-keys.js';
import { longTimeout, raceStop, stoppedError, type RequestPhase } from './deadline.js';
import type { AbortableManager } from './manager-calls.js';
import { listModelStatuses, type ModelStatuses, type SystemModelStatus, type SystemStatusOptions } from './model-status.js';
import { describeSkips, noUsableModel, planCandidates, type ModelNeeds } from './select.js';
import type { ProcessingRequest, ProcessingResult, ProcessingStream, ResultMetadata, SkippedModel, StopCause, TaskType } from './types.js';
import { describeValue } from '../engines/options.js';
import { listenAbort, unlistenAbort } from '../util/abort-listeners.js';

/** Options of {@link LocalAIPipeline}. */
export interface LocalAIPipelineOptions {
  /** The model manager to use. Default: a new one over `modelsDir` with the default engines (a `MambaSSMEngine` and a `TransformerEngine`). */
  manager?: LocalModelManager;
  /** Models dir of the default manager (default `PHOENIX_MODELS_DIR` or `models/`). */
  modelsDir?: string;
  /** Binding for the default engine and manager (default: the process-wide one). */
  binding?: BindingSelection | Promise<BindingSelection>;
  /** KV cache type of the default engines' attention models (`BindingEngineOptions.kvCache`; default `f32`). */
  kvCache?: KvCacheType;
  /** Whether the default engines map weight files (`BindingEngineOptions.useMmap`; default `true`). */
  useMmap?: boolean;
  /** Memory budget of the default manager, in bytes. */
  memoryBudgetBytes?: number;
  /** Requests that run at once (default 1: one model computation at a time uses every core). */
  maxConcurrency?: number;
  /** Requests that may wait; more are rejected with `E_ABORTED` (default 64). */
  maxQueueSize?: number;
  /**
   * Tokens a {@link LocalAIPipeline.stream} reader may fall behind before generation pauses for it
   * (default 64). A stream whose `result` is read without iterating it is not held back.
   */
  streamBufferTokens?: number;
  /** Mode of requests that do not name one (default `FULL_CAPABILITY`). */
  defaultMode?: ProcessingMode;
  /** Overrides of the per-mode limits table. */
  modeLimits?: Partial<Record<ProcessingMode, Partial<ModeLimits>>>;
  energy?: EnergyMeterOptions;
  offlineDetector?: OfflineDetector;
  /**
   * Run requests on queue workers (`phoenix-local worker`) through BullMQ on Redis instead of in this
   * process: `process` / `stream` give the same results; the workers hold the models.
   */
  queue?: QueueClientOptions;
}

export type { SystemModelStatus, SystemStatusOptions } from './model-status.js';

/** What {@link LocalAIPipeline.getSystemStatus} reports. */
export interface SystemStatus {
  backend:
    | { available: true; kind: string; path: string; reason: string; version: string; simd: string; threads: number; attempts: BindingSelection['attempts'] }
    | { available: false; error: string };
  loadedModels: { name: string; engine: string; memoryBytes: number; modelType: string }[];
  /** The folder models are listed from (the manager's `modelsDir`). */
  modelsDir: string;
  /**
   * Every local model with its status; `error` says why a model with status `error` / `corrupted` is
   * skipped by requests (the manager's code and message, e.g. `E_CHECKSUM`, or the last load failure).
   * Empty for a queue pipeline: its workers' models are in `cluster.workers[].availableModels`.
   */
  models: SystemModelStatus[];
  /** Set when the models dir could not be listed in time or at all (then `models` is empty). */
  modelsError?: ModelStatuses['modelsError'];
  memory: { rssBytes: number; heapUsedBytes: number; loadedModelBytes: number; budgetBytes: number };
  queue: QueueStatus;
  offline: ConnectivityState;
  defaultMode: ProcessingMode;
  energySource: EnergySource;
  manifest: { file: string; persistent: boolean; warning?: string };
  metrics: MetricsSnapshot;
  /** A queue pipeline: the queue's job counts and its workers' adverts, aggregated (read now). */
  cluster?: ClusterMetrics;
  /** A queue pipeline whose Redis did not answer: why `cluster` is missing. */
  clusterError?: string;
}

const TASKS: readonly TaskType[] = ['generation', 'scoring'];

/** Fields every result carries, filled as the request proceeds. */
interface Progress {
  metadata: ResultMetadata;
  modelUsed?: string;
  fallbackUsed: boolean;
  skipped: SkippedModel[];
}

/** Runs one awaited step of a request as `phase`, ending it when the request's signal fires. */
type Within = <T>(phase: RequestPhase, step: Promise<T>, late?: { subject?: string; onLate?: (value: T) => void }) => Promise<T>;

/**
 * Serves generation and scoring requests over local models.
 *
 * @example
 * ```ts
 * const pipeline = new LocalAIPipeline({ defaultMode: ProcessingMode.OFFLINE_ONLY });
 * const result = await pipeline.process({ id: '1', input: 'Once upon a time', taskType: 'generation', options: { maxTokens: 32 } });
 * if (result.success) console.log(result.text, result.tokensPerSecond);
 * ```
 */
const PIPELINE_OPTION_KEYS = optionKeys<LocalAIPipelineOptions>({
  manager: true,
  modelsDir: true,
  binding: true,
  kvCache: true,
  useMmap: true,
  memoryBudgetBytes: true,
  maxConcurrency: true,
  maxQueueSize: true,
  streamBufferTokens: true,
  defaultMode: true,
  modeLimits: true,
  energy: true,
  offlineDetector: true,
  queue: true,
});

export class LocalAIPipeline {
  readonly manager: LocalModelManager;
  readonly #ownsManager: boolean;
  readonly #queue: BoundedQueue;
  readonly #streamBuffer: number;
  readonly #limits: Record<ProcessingMode, ModeLimits>;
  readonly #defaultMode: ProcessingMode;
  readonly #energy: EnergyMeter;
  readonly #detector: OfflineDetector;
  readonly #metrics = new PipelineMetrics();
  readonly #remote: LazyQueueClient | undefined;
  /** Stops the requests not yet ended (see dispose()). */
  readonly #live = new Set<() => void>();
  #disposed = false;

  /**
   * @throws `E_INVALID_OPTION` for an option it does not know, or one that configures the default
   * manager (`modelsDir`, `binding`, `memoryBudgetBytes`, `kvCache`, `useMmap`) beside a `manager`.
   */
  constructor(options: LocalAIPipelineOptions = {}) {
    refuseUnknownKeys(options, PIPELINE_OPTION_KEYS, 'pipeline option');
    refuseBeside(options, 'manager', ['modelsDir', 'binding', 'memoryBudgetBytes', 'kvCache', 'useMmap'], 'the default manager and its engines');
    this.#ownsManager = !options.manager;
    this.manager =
      options.manager ??
      new LocalModelManager({
        modelsDir: options.modelsDir,
        memoryBudgetBytes: options.memoryBudgetBytes,
        engines: defaultEngines({
          binding: options.binding,
          ...(options.kvCache !== undefined ? { kvCache: options.kvCache } : {}),
          ...(options.useMmap !== undefined ? { useMmap: options.useMmap } : {}),
        }),
        binding: options.binding,
      });
    this.#queue = new BoundedQueue(options.maxConcurrency ?? 1, options.maxQueueSize ?? 64);
    const buffer = options.streamBufferTokens ?? 64;
    if (!Number.isInteger(buffer) || buffer < 1) {
      throw new PhoenixError('E_INVALID_OPTION', `option \`streamBufferTokens\` must be an integer ≥ 1, got ${describeValue(buffer)}`, { option: 'streamBufferTokens' });
    }
    this.#streamBuffer = buffer;
    this.#limits = resolveModeLimits(options.modeLimits);
    const mode = options.defaultMode ?? ProcessingMode.FULL_CAPABILITY;
    if (!PROCESSING_MODES.includes(mode)) throw new PhoenixError('E_INVALID_OPTION', `option \`defaultMode\` must be one of ${PROCESSING_MODES.join(', ')}, got ${describeValue(mode)}`, { option: 'defaultMode' });
    this.#defaultMode = mode;
    this.#energy = new EnergyMeter(options.energy);
    this.#detector = options.offlineDetector ?? new OfflineDetector();
    this.#remote = options.queue ? new LazyQueueClient(options.queue) : undefined;
  }

  /** The limits of `mode` in effect for this pipeline. */
  limitsFor(mode: ProcessingMode): Readonly<ModeLimits> {
    return this.#limits[mode];
  }

  /** Runs a request to completion. Never throws: failures are results with `success: false`. */
  async process(request: ProcessingRequest): Promise<ProcessingResult> {
    const stream = this.stream(request);
    for await (const _ of stream) {
      // text is accumulated into the result
    }
    return stream.result;
  }

  /**
   * Runs a request, streaming generated tokens; `result` resolves (never rejects) when it ends.
   * Generation pauses while the reader is `streamBufferTokens` behind (the deadline still runs). Reading
   * `result` without starting to iterate in the same tick, or leaving the loop early, lets generation
   * run on unread.
   */
  stream(request: ProcessingRequest): ProcessingStream {
    const canceller = new AbortController();
    const cancel = (): void => canceller.abort(new PhoenixError('E_ABORTED', 'cancelled by the caller'));
    let cancellable: ProcessingRequest;
    try {
      cancellable = withCancelSignal(request, canceller.signal);
    } catch (error) {
      // A request whose fields throw when read (getters, proxies): refused like any invalid request.
      const refused = invalid('', `could not be read (${error instanceof Error ? error.message : String(error)})`);
      return { ...refusedStream({ id: '' } as ProcessingRequest, refused), cancel };
    }
    // dispose() ends every request still running or queued, and refuses new ones.
    const onDispose = (): void => canceller.abort(DISPOSED);
    if (this.#disposed) onDispose();
    else this.#live.add(onDispose);
    if (this.#remote) {
      const mode = safeMode(request) ?? this.#defaultMode;
      // Refused here as in-process ("did you mean …?"), before a job is queued (and its id held for an hour).
      let refused: PhoenixError | undefined;
      try {
        validateRequest(cancellable);
      } catch (error) {
        refused = toPhoenixError(error);
      }
      const remote = refused ? refusedStream(cancellable, refused) : this.#remote.stream(cancellable, this.#limits[mode]?.maxProcessingTimeMs);
      void remote.result.finally(() => this.#live.delete(onDispose));
      void remote.result.then((r) => this.#metrics.record(r, r.metadata.mode));
      return {
        get result(): Promise<ProcessingResult> {
          return remote.result;
        },
        [Symbol.asyncIterator]: () => remote[Symbol.asyncIterator](),
        cancel,
      };
    }
    const channel = new AsyncChannel<TokenChunk>(this.#streamBuffer);
    const result = this.#run(cancellable, channel).finally(() => {
      this.#live.delete(onDispose);
      channel.close();
    });
    let drainScheduled = false;
    return {
      cancel,
      get result(): Promise<ProcessingResult> {
        if (!channel.iterated && !drainScheduled) {
          drainScheduled = true;
          // Give a caller that reads `result` and then iterates in the same tick the chance to iterate.
          setTimeout(() => {
            if (!channel.iterated) channel.drain();
          });
        }
        return result;
      },
      [Symbol.asyncIterator]: () => channel[Symbol.asyncIterator](),
    };
  }

  /**
   * Backend, loaded models, every local model with its status and why it is unusable, memory, queue,
   * connectivity (not probed in OFFLINE_ONLY), metrics.
   * @throws `E_INVALID_OPTION` for a `modelsTimeoutMs` that is not a number > 0.
   */
  async getSystemStatus(options: SystemStatusOptions = {}): Promise<SystemStatus> {
    // A queue pipeline runs nothing here: its workers' models are in `cluster` (listing this folder
    // would checksum models it never uses).
    const models: ModelStatuses = this.#remote ? { models: [] } : await listModelStatuses(this.manager, options);
    const backend = await this.#backendStatus();
    const loaded = this.manager.loadedModels();
    const memory = process.memoryUsage();
    const offline = await this.#detector.check({ offlineOnly: !this.#limits[this.#defaultMode].allowConnectivityProbes });
    return {
      backend,
      loadedModels: loaded.map((m) => ({ name: m.name, engine: m.engine, memoryBytes: m.memoryBytes, modelType: m.metadata.modelType })),
      modelsDir: this.manager.modelsDir,
      ...models,
      memory: { rssBytes: memory.rss, heapUsedBytes: memory.heapUsed, loadedModelBytes: this.manager.loadedBytes(), budgetBytes: this.manager.memoryBudgetBytes },
      queue: this.#queue.status(),
      offline,
      defaultMode: this.#defaultMode,
      energySource: this.#energy.source,
      manifest: await this.manager.manifestStatus(),
      metrics: this.#metrics.snapshot(),
      ...(await this.#clusterStatus()),
    };
  }

  /**
   * Counters so far (of a queue pipeline: the results it received), and for a queue pipeline `cluster`:
   * the queue's figures across its workers as last read (refreshed after results, at most once a second;
   * `getSystemStatus()` reads them afresh).
   */
  getMetrics(): MetricsSnapshot & { cluster?: ClusterMetrics } {
    const cluster = this.#remote?.latest;
    return { ...this.#metrics.snapshot(), ...(cluster ? { cluster } : {}) };
  }

  /**
   * Ends the pipeline: requests still running or queued end with `E_ABORTED` ("the pipeline was
   * disposed", partial text kept), later ones fail the same way at once; the models of a manager this
   * pipeline created are unloaded and a queue client's connections closed.
   */
  dispose(): void {
    this.#disposed = true;
    for (const stop of [...this.#live]) stop();
    if (this.#ownsManager) this.manager.dispose();
    void this.#remote?.close();
  }

  // ── internals ─────────────────────────────────────────────────────────────

  async #clusterStatus(): Promise<Pick<SystemStatus, 'cluster' | 'clusterError'>> {
    if (!this.#remote) return {};
    try {
      return { cluster: await this.#remote.cluster() };
    } catch (error) {
      return { clusterError: toPhoenixError(error).message };
    }
  }

  async #backendStatus(): Promise<SystemStatus['backend']> {
    const engine = this.manager.engines.find((e): e is BindingEngine => e instanceof BindingEngine);
    if (!engine) return { available: false, error: 'no binding-backed engine registered' };
    try {
      const s = await engine.binding();
      return { available: true, kind: s.backend, path: s.path, reason: s.reason, ...s.buildInfo, attempts: s.attempts };
    } catch (error) {
      return { available: false, error: toPhoenixError(error).message };
    }
  }

  async #run(request: ProcessingRequest, channel: AsyncChannel<TokenChunk>): Promise<ProcessingResult> {
    const startedAt = performance.now();
    const mode = (request as Partial<ProcessingRequest> | null)?.mode ?? this.#defaultMode;
    const progress: Progress = { metadata: { mode }, fallbackUsed: false, skipped: [] };
    const controller = new AbortController();
    let stoppedBy: StopCause | undefined;
    let phase: RequestPhase = 'queue';
    let deadlineMs = Number.POSITIVE_INFINITY;
    let timer: { clear(): void } | undefined;
    let energy = { joules: 0, source: this.#energy.source };
    let lease: ModelLease | undefined;
    // dispose() stops a request through its cancel signal, with its own reason.
    const disposed = (): boolean => request?.options?.signal?.reason === DISPOSED;
    const cause = (): string => (stoppedBy === 'signal' && disposed() ? DISPOSED.message : causeText(stoppedBy ?? 'signal', deadlineMs, request.energyBudget, energy.joules));
    // Every awaited step that does not watch the signal itself ends the request as soon as it fires.
    const within: Within = (stepPhase, step, { subject, onLate } = {}) => {
      phase = stepPhase;
      return raceStop(step, controller.signal, () => stoppedError(stepPhase, cause(), subject), onLate);
    };
    try {
      validateRequest(request);
      const limits = this.#limits[mode];
      // The deadline runs from the call: selection, checksums and loading count, not only generation.
      deadlineMs = Math.min(request.maxProcessingTime ?? Number.POSITIVE_INFINITY, limits.maxProcessingTimeMs);
      progress.metadata.deadlineMs = deadlineMs;
      if (Number.isFinite(deadlineMs)) {
        timer = longTimeout(() => {
          stoppedBy ??= 'deadline';
          controller.abort(new PhoenixError('E_ABORTED', `maxProcessingTime of ${deadlineMs} ms exceeded`));
        }, deadlineMs);
      }
      if (!limits.allowConnectivityProbes) await this.#detector.check({ offlineOnly: true });
      const callerSignal = request.options?.signal;
      const onCallerAbort = (): void => {
        stoppedBy ??= 'signal';
        controller.abort(callerSignal?.reason);
      };
      if (callerSignal?.aborted) onCallerAbort();
      if (callerSignal) listenAbort(callerSignal, onCallerAbort);
      try {
        const queuedAt = performance.now();
        return await this.#queue.run(async (holdSlot) => {
          progress.metadata.queueWaitMs = performance.now() - queuedAt;
          const meter = this.#energy.start();
          const readEnergy = (): void => {
            energy = meter.read();
          };
          /** Reads the energy used; past the request's budget, stops the request (between tokens, or layers). */
          const overBudget = (): boolean => {
            if (request.energyBudget === undefined) return false;
            readEnergy();
            if (energy.joules <= request.energyBudget) return false;
            if (!controller.signal.aborted) {
              stoppedBy ??= 'energy-budget';
              controller.abort();
            }
            return true;
          };
          // Work on the model still running after the request ended (a scoring call raced by the deadline).
          let inFlight: Promise<unknown> | undefined;
          try {
            const text = typeof request.input === 'string' || request.messages !== undefined;
            const needs: ModelNeeds = { mode, limits, requireTokenizer: text, tokenIds: !text, preference: request.modelPreference };
            lease = await this.#acquire(needs, progress, within, controller.signal);
            if (controller.signal.aborted) throw stoppedError(phase, cause());
            const model = lease.model;
            const engine = this.#engineFor(model);
            if (request.taskType === 'scoring') {
              const includeLogits = Boolean(request.options?.returnLogits);
              inFlight = engine.score(model, toInput(request.input!), { includeLogits, signal: controller.signal });
              // The energy budget holds for scoring too: read while it runs, it stops the core between layers.
              const watch = request.energyBudget === undefined ? undefined : setInterval(overBudget, ENERGY_POLL_MS);
              let scored: ScoreResult;
              try {
                scored = await within('scoring', inFlight as Promise<ScoreResult>);
              } finally {
                clearInterval(watch);
              }
              inFlight = undefined;
              // A scoring shorter than one poll is held to the budget too: over it is a stop, as mid-way.
              if (overBudget() || controller.signal.aborted) throw stoppedError(phase, cause());
              readEnergy();
              return this.#finish(request, startedAt, progress, energy, {
                success: true,
                promptTokens: scored.ids.length,
                result: {
                  ids: scored.ids,
                  tokenLogprobs: scored.tokenLogprobs,
                  perplexity: scored.perplexity,
                  ...(includeLogits && scored.logits ? { logits: scored.logits.map((row) => Array.from(row)) } : {}),
                },
              });
            }
            phase = 'generation';
            // The mode caps maxTokens; a value the engine would refuse (1e300, Infinity, past its limit) is
            // refused as it would be, not silently capped into a valid one.
            if (request.options?.maxTokens !== undefined && engine instanceof BindingEngine) await engine.checkOptions({ maxTokens: request.options.maxTokens });
            const maxTokens = Math.min(request.options?.maxTokens ?? limits.maxTokens, limits.maxTokens);
            progress.metadata.maxTokens = maxTokens;
            const { returnLogits: _unused, signal: _caller, ...rest } = request.options ?? {};
            // Without a requested maxTokens the mode's limit is a cap, not an ask: cut to the model's context.
            const fitToContext = rest.fitToContext ?? request.options?.maxTokens === undefined;
            const options: GenerationOptions = { ...rest, maxTokens, fitToContext, signal: controller.signal };
            // The engine watches the signal and ends within one token (finish reason `abort`, partial text).
            const stream = request.messages !== undefined ? chatStream(engine, model, request.messages, options) : engine.stream(model, toInput(request.input!), options);
            let generated: GenerationResult;
            try {
              for await (const chunk of stream) {
                await channel.push(chunk, controller.signal);
                overBudget();
              }
              generated = await stream.result;
            } finally {
              stream.dispose?.(); // the result (and state, if asked for) is built, or failed: free the KV cache / SSM states now
            }
            readEnergy();
            Object.assign(progress.metadata, {
              finishReason: generated.finishReason,
              timeToFirstTokenMs: generated.timings.timeToFirstTokenMs,
              ...(generated.state ? { state: generated.state } : {}),
              ...(options.state !== undefined && generated.restoredTokens !== undefined ? { restoredTokens: generated.restoredTokens } : {}),
            });
            const stopped = generated.finishReason === 'abort';
            if (stopped) Object.assign(progress.metadata, { stoppedBy: stoppedBy ?? 'signal', stoppedDuring: 'generation' });
            return this.#finish(request, startedAt, progress, energy, {
              success: !stopped,
              text: generated.text,
              promptTokens: generated.promptTokens,
              generatedTokens: generated.generatedTokens,
              tokensPerSecond: generated.tokensPerSecond,
              ...(stopped ? { errorCode: 'E_ABORTED' as const, errorMessage: disposed() ? `${DISPOSED.message}; output is partial` : stopMessage(stoppedBy ?? 'signal', deadlineMs, request.energyBudget, energy.joules) } : {}),
            });
          } finally {
            readEnergy();
            const held = lease;
            if (held && inFlight) {
              // The model stays leased (and the slot busy) until the abandoned computation ends.
              const settled = inFlight.then(
                () => undefined,
                () => undefined,
              );
              holdSlot(settled);
              void settled.then(() => held.release());
            } else held?.release();
          }
        }, controller.signal);
      } finally {
        if (callerSignal) unlistenAbort(callerSignal, onCallerAbort);
      }
    } catch (thrown) {
      const error = toPhoenixError(thrown);
      if (stoppedBy) Object.assign(progress.metadata, { stoppedBy, stoppedDuring: phase });
      return this.#finish(request, startedAt, progress, energy, { success: false, errorCode: error.code, errorMessage: error.message });
    } finally {
      timer?.clear();
    }
  }

  /**
   * Selects and loads a model: the candidates of {@link planCandidates} in order until one loads. Every
   * model ruled out or failing to load is recorded in `progress.skipped`. Each step is raced against
   * the request's signal; a lease that arrives after the request stopped is released at once.
   */
  async #acquire(needs: ModelNeeds, progress: Progress, within: Within, signal: AbortSignal): Promise<ModelLease> {
    const manager: AbortableManager = this.manager;
    const models = await within('selection', manager.listModels({ signal }));
    if (needs.preference !== undefined && !models.some((m) => m.name === needs.preference)) {
      // Throws E_INVALID_OPTION / E_MODEL_NOT_FOUND naming it; a model the list leaves out (a manager
      // that lists less than it finds by name) is still the preference, not silently passed over.
      models.push(await within('selection', manager.getModelMetadata(needs.preference, { signal })));
    }
    const plan = planCandidates(models, needs);
    progress.metadata.selection = plan.reason;
    progress.skipped.push(...plan.skipped);
    const primary = plan.candidates[0];
    if (!primary) throw noUsableModel(models, plan, needs, this.manager.modelsDir);
    const reasons: string[] = [];
    let firstError: PhoenixError | undefined;
    for (const candidate of plan.candidates) {
      if (candidate !== primary && needs.tokenIds) {
        // Ids index one vocabulary: on another model they are other tokens (a garbage answer reported as success).
        progress.skipped.push({ name: candidate.name, status: candidate.status, reason: 'token-ids', message: `the prompt is token ids of "${primary.name}"'s vocabulary; not moved to another model` });
        continue;
      }
      const loadStarted = performance.now();
      try {
        const lease = await within('loading', manager.acquireModel(candidate.name, { signal }), {
          subject: `loading model "${candidate.name}"`,
          onLate: (late) => late.release(),
        });
        // (A model already loaded cost this request no load: the lease's bookkeeping is not one.)
        progress.metadata.loadMs = candidate.status === 'loaded' ? 0 : performance.now() - loadStarted;
        progress.modelUsed = candidate.name;
        if (candidate !== primary) {
          progress.fallbackUsed = true;
          progress.metadata.fallbackFrom = primary.name;
          progress.metadata.fallbackReasons = reasons;
        }
        return lease;
      } catch (thrown) {
        const error = toPhoenixError(thrown);
        if (signal.aborted) throw error; // stopped: no more candidates
        firstError ??= error;
        reasons.push(`${candidate.name}: [${error.code}] ${error.message}`);
        progress.skipped.push({ name: candidate.name, status: candidate.status, reason: 'load-failed', code: error.code, message: error.message });
      }
    }
    progress.metadata.fallbackReasons = reasons;
    const error = firstError as PhoenixError;
    const others = progress.skipped.filter((s) => s.reason !== 'load-failed' && s.reason !== 'token-ids');
    const fallbacks = reasons.length > 1 ? ` (fallbacks failed too: ${reasons.slice(1).join('; ')})` : '';
    const rest = others.length > 0 ? `: ${describeSkips(others)}` : '';
    const message = needs.tokenIds && plan.candidates.length > 1
      ? `${error.message}; a token-id prompt is not moved to another model (its ids belong to "${primary.name}"'s vocabulary)`
      : `${error.message}${fallbacks}; no other model in ${this.manager.modelsDir} can serve the request${rest}`;
    throw new PhoenixError(error.code, message, error.details);
  }

  #engineFor(model: LoadedModel): InferenceEngine {
    const engine = this.manager.engines.find((e) => e.name === model.engine);
    if (!engine) throw new PhoenixError('E_INTERNAL', `engine "${model.engine}" of model "${model.name}" is not registered`);
    return engine;
  }

  #finish(
    request: ProcessingRequest,
    startedAt: number,
    progress: Progress,
    energy: { joules: number; source: EnergySource },
    fields: Partial<ProcessingResult> & { success: boolean },
  ): ProcessingResult {
    const result: ProcessingResult = {
      requestId: typeof request?.id === 'string' ? request.id : String(request?.id),
      processingTime: performance.now() - startedAt,
      promptTokens: 0,
      generatedTokens: 0,
      tokensPerSecond: 0,
      energyConsumed: energy.joules,
      energySource: energy.source,
      fallbackUsed: progress.fallbackUsed,
      skippedModels: progress.skipped,
      ...(progress.modelUsed ? { modelUsed: progress.modelUsed } : {}),
      metadata: progress.metadata,
      ...fields,
    };
    this.#metrics.record(result, progress.metadata.mode);
    return result;
  }
}

/**
 * `request` whose signal also fires when `cancel` does (a {@link ProcessingStream}'s `cancel()`), so
 * every path that watches the caller's signal — queue, loading, generation, a remote worker — stops.
 * A request that is not an object, or whose signal is not an AbortSignal, is passed on unchanged for
 * validation to report.
 */
function withCancelSignal(request: ProcessingRequest, cancel: AbortSignal): ProcessingRequest {
  if (request === null || typeof request !== 'object') return request;
  const own = request.options?.signal;
  if (own !== undefined && !(own instanceof AbortSignal)) return request;
  const signal = own ? AbortSignal.any([own, cancel]) : cancel;
  return { ...request, options: { ...request.options, signal } };
}

/** The engine's chat stream; an engine without chat support cannot serve `messages`. */
function chatStream(engine: InferenceEngine, model: LoadedModel, messages: readonly ChatMessage[], options: GenerationOptions): GenerationStream {
  if (!engine.chatStream) {
    throw new PhoenixError('E_UNSUPPORTED_MODEL', `engine ${engine.name} does not support chat (request.messages)`, { model: model.name });
  }
  return engine.chatStream(model, messages, options);
}

function toInput(input: NonNullable<ProcessingRequest['input']>): string | { ids: readonly number[] } {
  return typeof input === 'string' ? input : { ids: input.ids };
}

/** The request's mode when it names a known one (the rest is validated where the request runs). */
function safeMode(request: ProcessingRequest): ProcessingMode | undefined {
  const mode = (request as Partial<ProcessingRequest> | null)?.mode;
  return typeof mode === 'string' && (PROCESSING_MODES as readonly string[]).includes(mode) ? mode : undefined;
}

/** The reason a request stops when its pipeline is disposed. */
const DISPOSED = new PhoenixError('E_ABORTED', 'the pipeline was disposed');

/** The stream of a request refused before it ran: no chunks, its failure as the result. */
function refusedStream(request: ProcessingRequest, error: PhoenixError): Omit<ProcessingStream, 'cancel'> {
  const none = new AsyncChannel<TokenChunk>();
  none.close();
  return { result: Promise.resolve(failedResult(request, error, performance.now())), [Symbol.asyncIterator]: () => none[Symbol.asyncIterator]() };
}

/** How often a scoring request's energy use is read against its `energyBudget`. */
const ENERGY_POLL_MS = 20;

/** What stopped a request, in words (the start of its error message). */
function causeText(cause: StopCause, deadlineMs: number, budget: number | undefined, used: number): string {
  if (cause === 'deadline') return `maxProcessingTime of ${deadlineMs} ms exceeded`;
  if (cause === 'energy-budget') return `energyBudget of ${budget} J exceeded (${used.toFixed(3)} J used)`;
  return 'aborted by the caller';
}

function stopMessage(cause: StopCause, deadlineMs: number, budget: number | undefined, used: number): string {
  return `${causeText(cause, deadlineMs, budget, used)}${cause === 'deadline' ? ' during generation' : ''}; output is partial`;
}

function invalid(field: string, message: string): PhoenixError {
  return new PhoenixError('E_INVALID_OPTION' satisfies ErrorCode, `${field ? `request.${field}` : 'the request'} ${message}`, { option: field || 'request' });
}

/** The options a scoring request uses; the others shape a generation and would be ignored. */
const SCORING_OPTION_KEYS: ReadonlySet<string> = new Set(['returnLogits', 'signal']);

function validateRequest(request: ProcessingRequest): void {
  if (request === null || typeof request !== 'object') throw invalid('', 'must be an object');
  if (typeof request.id !== 'string' || request.id.length === 0) throw invalid('id', 'must be a non-empty string');
  if (request.messages !== undefined) {
    if (request.input !== undefined) throw invalid('messages', 'and request.input were both given: give one of them');
    if (!Array.isArray(request.messages)) throw invalid('messages', 'must be an array of { role, content }');
    if (request.taskType !== 'generation') throw invalid('messages', 'is for taskType "generation" only');
  } else {
    const input = request.input as unknown;
    if (typeof input !== 'string' && !(input && typeof input === 'object' && Array.isArray((input as { ids?: unknown }).ids))) {
      throw invalid('input', 'must be a string or { ids: number[] } (or give request.messages)');
    }
  }
  if (!TASKS.includes(request.taskType)) throw invalid('taskType', `must be one of ${TASKS.join(', ')}, got ${JSON.stringify(request.taskType)}`);
  if (request.mode !== undefined && !PROCESSING_MODES.includes(request.mode)) throw invalid('mode', `must be one of ${PROCESSING_MODES.join(', ')}, got ${JSON.stringify(request.mode)}`);
  for (const field of ['maxProcessingTime', 'energyBudget'] as const) {
    const value = request[field];
    if (value !== undefined && (typeof value !== 'number' || !(value > 0))) throw invalid(field, `must be a number > 0, got ${describeValue(value)}`);
  }
  if (request.modelPreference !== undefined && typeof request.modelPreference !== 'string') throw invalid('modelPreference', 'must be a string');
  if (request.options !== undefined && (request.options === null || typeof request.options !== 'object')) throw invalid('options', 'must be an object');
  refuseUnknownKeys(request, REQUEST_FIELDS, 'request field', 'request.');
  if (request.options) {
    refuseUnknownKeys(request.options, REQUEST_OPTION_KEYS, 'request option', 'request.options.');
    const { returnLogits } = request.options;
    if (returnLogits !== undefined && typeof returnLogits !== 'boolean') throw invalid('options.returnLogits', `must be a boolean, got ${typeof returnLogits}`);
    if (returnLogits === true && request.taskType !== 'scoring') throw invalid('options.returnLogits', 'is for taskType "scoring" only');
    if (request.taskType === 'scoring') {
      const ignored = Object.entries(request.options).find(([key, value]) => value !== undefined && !SCORING_OPTION_KEYS.has(key));
      if (ignored) throw invalid(`options.${ignored[0]}`, 'shapes a generation; a scoring request takes returnLogits and signal only');
    }
  }
}
