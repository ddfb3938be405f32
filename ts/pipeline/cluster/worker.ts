/**
 * A queue worker: takes jobs from a BullMQ queue on Redis and runs each through its own in-process
 * {@link LocalAIPipeline} (same model selection, modes and deadlines), writing streamed chunks to a Redis
 * stream in order and returning the result. A job id published on the cancel channel aborts the job
 * here. It advertises itself (heartbeat: models held, memory, jobs, latencies) and hands a job naming a
 * model back for a moment when another worker holds that model (see `affinity.ts`). `close()` stops
 * taking jobs and waits for the active ones (what SIGTERM does in the CLI).
 */
import { randomUUID } from 'node:crypto';
import { stat } from 'node:fs/promises';
import { hostname } from 'node:os';
import { DelayedError, UnrecoverableError, Worker, type Job } from 'bullmq';

import { PhoenixError, toPhoenixError } from '../../binding/errors.js';
import type { KvCacheType } from '../../binding/types.js';
import { BindingEngine } from '../../engines/binding-engine.js';
import { optionKeys, refuseBeside, refuseUnknownKeys } from '../../engines/known-keys.js';
import { LocalAIPipeline } from '../pipeline.js';
import type { ProcessingResult } from '../types.js';
import { decideAffinity } from './affinity.js';
import { MAX_SAMPLES, publishHeartbeat, readHeartbeats, withdrawHeartbeat, type WorkerHeartbeat } from './heartbeat.js';
import { decodeJob } from './job.js';
import { CHUNK_TTL_S, PREFIX, cancelChannel, chunkStreamKey } from './keys.js';
import { connect } from './connection.js';
import { encodeChunk, encodeError, encodeResult, type WireResult } from './wire.js';
import { describeValue } from '../../engines/options.js';

export interface WorkerOptions {
  /** Redis URL, e.g. `redis://127.0.0.1:6379`: the only host the worker contacts. */
  redis: string;
  /** Queue name (default `phoenix`). */
  queue?: string;
  /** Models dir of the worker's pipeline (default as `LocalAIPipeline`'s). */
  modelsDir?: string;
  /** Jobs run at once (default 1: one computation uses every core). */
  concurrency?: number;
  /**
   * How long a job stays locked to this worker without a renewal (default 10 s): a worker that dies
   * (SIGKILL) hands its jobs to another after about this long.
   */
  lockDurationMs?: number;
  /** Models (names in the models dir) loaded before the worker takes jobs. */
  preload?: string[];
  /**
   * How long a job naming a model this worker does not hold is left to a worker that holds it, counted
   * from when it was enqueued (default 2000 ms); after that this worker runs it (loading the model).
   */
  affinityWaitMs?: number;
  /** How often the worker rewrites its advert (default 1000 ms; it expires after three missed beats). */
  heartbeatMs?: number;
  /** KV cache type of the new pipeline's attention models (`LocalAIPipeline`'s `kvCache`; default `f32`). */
  kvCache?: KvCacheType;
  /** Whether the new pipeline maps weight files (`LocalAIPipeline`'s `useMmap`; default `true`). */
  useMmap?: boolean;
  /** A pipeline to run jobs on instead of a new one (then `modelsDir`, `kvCache` and `useMmap` are its own). */
  pipeline?: LocalAIPipeline;
}

export interface QueueWorker {
  /** This worker's id in its advert (host:pid:random). */
  readonly id: string;
  readonly pipeline: LocalAIPipeline;
  /** Stops taking jobs, waits for the active ones, withdraws its advert, disconnects. */
  close(): Promise<void>;
}

const WORKER_OPTION_KEYS = optionKeys<WorkerOptions>({
  redis: true,
  queue: true,
  modelsDir: true,
  concurrency: true,
  lockDurationMs: true,
  preload: true,
  affinityWaitMs: true,
  heartbeatMs: true,
  kvCache: true,
  useMmap: true,
  pipeline: true,
});

/** How often the list of models this worker can load is re-read. */
const AVAILABLE_REFRESH_MS = 15_000;

function checkCount(option: string, value: number, min: number): number {
  if (!Number.isSafeInteger(value) || value < min) throw new PhoenixError('E_INVALID_OPTION', `option \`${option}\` must be an integer ≥ ${min}, got ${describeValue(value)}`, { option });
  return value;
}

/** Counters and recent latencies of the jobs this worker finished. */
class JobStats {
  done = 0;
  failed = 0;
  active = 0;
  readonly latencies: number[] = [];
  readonly #finishedAt: number[] = [];

  finished(result: ProcessingResult): void {
    this.done++;
    if (!result.success) this.failed++;
    this.latencies.push(result.processingTime);
    if (this.latencies.length > MAX_SAMPLES) this.latencies.shift();
    this.#finishedAt.push(Date.now());
  }

  doneLastMinute(): number {
    const since = Date.now() - 60_000;
    while (this.#finishedAt.length > 0 && this.#finishedAt[0]! < since) this.#finishedAt.shift();
    return this.#finishedAt.length;
  }
}

/**
 * Starts a worker; resolves once it is connected, its preloads are loaded and it is taking jobs.
 * @throws `E_INVALID_OPTION` for a count out of range, or `modelsDir` / `kvCache` / `useMmap` beside `pipeline`.
 */
/**
 * Refuses at start what would fail every job: a models dir that is not there (the worker would take
 * jobs from workers that can serve them), or load options the core refuses (`kvCache: 'f8'`).
 */
async function checkServable(pipeline: LocalAIPipeline): Promise<void> {
  const dir = pipeline.manager.modelsDir;
  const isDir = await stat(dir).then((s) => s.isDirectory(), () => false);
  if (!isDir) throw new PhoenixError('E_MODEL_NOT_FOUND', `worker: models dir ${dir} does not exist or is not a folder`, { path: dir });
  for (const engine of pipeline.manager.engines) if (engine instanceof BindingEngine) await engine.checkLoadOptions();
}

export async function startWorker(options: WorkerOptions): Promise<QueueWorker> {
  refuseUnknownKeys(options, WORKER_OPTION_KEYS, 'worker option');
  const queue = options.queue ?? 'phoenix';
  const concurrency = checkCount('concurrency', options.concurrency ?? 1, 1);
  const affinityWaitMs = checkCount('affinityWaitMs', options.affinityWaitMs ?? 2000, 0);
  const heartbeatMs = checkCount('heartbeatMs', options.heartbeatMs ?? 1000, 100);
  refuseBeside(options, 'pipeline', ['modelsDir', 'kvCache', 'useMmap'], "the worker's own pipeline");
  const pipeline =
    options.pipeline ??
    new LocalAIPipeline({
      modelsDir: options.modelsDir,
      maxConcurrency: concurrency,
      ...(options.kvCache !== undefined ? { kvCache: options.kvCache } : {}),
      ...(options.useMmap !== undefined ? { useMmap: options.useMmap } : {}),
    });
  try {
    await checkServable(pipeline);
    for (const name of options.preload ?? []) await pipeline.manager.loadModel(name);
  } catch (error) {
    if (!options.pipeline) pipeline.dispose(); // its own: nobody else will
    throw error;
  }
  const id = `${hostname()}:${process.pid}:${randomUUID().slice(0, 8)}`;
  const startedAt = Date.now();
  const stats = new JobStats();
  let available: string[] = [];
  let present: string[] = [];
  let availableAt = 0;
  const connection = connect(options.redis);
  const subscriber = connect(options.redis);
  const writer = connect(options.redis);

  const loadedNames = (): string[] => pipeline.manager.loadedModels().map((m) => m.name);
  const refreshAvailable = async (): Promise<void> => {
    if (Date.now() - availableAt < AVAILABLE_REFRESH_MS) return;
    availableAt = Date.now();
    const models = await pipeline.manager.listModels().catch(() => []);
    available = models.filter((m) => m.status !== 'error' && m.status !== 'corrupted').map((m) => m.name);
    present = models.map((m) => m.name);
  };
  const heartbeat = (): WorkerHeartbeat => {
    const memory = process.memoryUsage();
    return {
      id,
      host: hostname(),
      pid: process.pid,
      startedAt,
      updatedAt: Date.now(),
      loaded: pipeline.manager.loadedModels().map((m) => ({ name: m.name, memoryBytes: m.memoryBytes })),
      available,
      present,
      memory: { rssBytes: memory.rss, heapUsedBytes: memory.heapUsed, loadedModelBytes: pipeline.manager.loadedBytes() },
      jobs: { done: stats.done, failed: stats.failed, active: stats.active },
      doneLastMinute: stats.doneLastMinute(),
      latencyMs: [...stats.latencies],
      requestsByModel: pipeline.getMetrics().requestsByModel,
    };
  };
  let beating: Promise<void> | undefined;
  const beat = (): Promise<void> =>
    (beating ??= (async () => {
      await refreshAvailable();
      await publishHeartbeat(writer, queue, heartbeat(), heartbeatMs * 3);
    })()
      .catch(() => undefined) // Redis away: the next beat tries again
      .finally(() => (beating = undefined)));

  const run = async (job: Job, token?: string, signal?: AbortSignal): Promise<WireResult> => {
    const jobId = job.id!;
    let request;
    try {
      request = decodeJob(job.data);
      if (request.id !== jobId) throw new PhoenixError('E_INVALID_OPTION', 'job.id must equal the queue job id (the request id)', { option: 'id' });
    } catch (thrown) {
      // A malformed job fails at once, without retries; its typed error travels as the failure reason.
      throw new UnrecoverableError(JSON.stringify(encodeError(toPhoenixError(thrown))));
    }
    if (request.modelPreference !== undefined) {
      const decision = decideAffinity({
        model: request.modelPreference,
        self: { id, loaded: loadedNames(), available, present },
        workers: await readHeartbeats(writer, queue),
        waitedMs: Date.now() - job.timestamp,
        affinityWaitMs,
      });
      if (!decision.run) {
        await job.moveToDelayed(Date.now() + decision.retryInMs, token);
        throw new DelayedError(decision.reason);
      }
    }
    stats.active++;
    try {
      const stream = pipeline.stream({ ...request, options: { ...request.options, signal } });
      const key = chunkStreamKey(queue, jobId);
      let seq = 0;
      for await (const chunk of stream) {
        await writer.xadd(key, '*', 'c', JSON.stringify(encodeChunk(seq++, chunk)));
      }
      await writer.expire(key, CHUNK_TTL_S);
      const result: ProcessingResult = await stream.result; // never rejects: failures are results
      stats.finished(result);
      return encodeResult(result);
    } finally {
      stats.active--;
      void beat(); // what it holds may have changed
    }
  };

  const lockDuration = options.lockDurationMs ?? 10_000;
  // `name` marks each job with the worker running it (job.processedBy).
  // A job whose worker died is taken up again up to maxStalledCount times, then fails: a job that
  // kills every worker it reaches ends instead of looping.
  const worker = new Worker(queue, run, { name: id, connection, concurrency, prefix: PREFIX, autorun: false, lockDuration, stalledInterval: Math.max(1000, lockDuration / 2), maxStalledCount: 2 });
  worker.on('error', () => undefined); // Redis away: BullMQ retries by itself (an unheard 'error' stops the worker)
  await subscriber.subscribe(cancelChannel(queue));
  subscriber.on('message', (_channel: string, jobId: string) => {
    worker.cancelJob(jobId, 'aborted by the caller');
  });
  await beat();
  const timer = setInterval(() => void beat(), heartbeatMs);
  timer.unref();
  void worker.run();
  await worker.waitUntilReady();

  return {
    id,
    pipeline,
    async close(): Promise<void> {
      clearInterval(timer);
      await worker.close();
      await beating;
      await withdrawHeartbeat(writer, queue, id).catch(() => undefined);
      subscriber.disconnect();
      writer.disconnect();
      connection.disconnect();
      if (!options.pipeline) pipeline.dispose();
    },
  };
}
