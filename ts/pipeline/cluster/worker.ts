/**
 * A queue worker: takes jobs from a BullMQ queue on Redis and runs each through its own in-process
 * {@link LocalAIPipeline} (same model selection, modes and deadlines), writing streamed chunks to a Redis
 * stream in order and returning the result. A job id published on the cancel channel aborts the job
 * here. `close()` stops taking jobs and waits for the active ones (what SIGTERM does in the CLI).
 */
import { UnrecoverableError, Worker, type Job } from 'bullmq';
import { Redis } from 'ioredis';

import { PhoenixError, toPhoenixError } from '../../binding/errors.js';
import { LocalAIPipeline } from '../pipeline.js';
import type { ProcessingResult } from '../types.js';
import { decodeJob } from './job.js';
import { CHUNK_TTL_S, PREFIX, cancelChannel, chunkStreamKey } from './keys.js';
import { encodeChunk, encodeError, encodeResult, type WireResult } from './wire.js';

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
  /** A pipeline to run jobs on instead of a new one over `modelsDir`. */
  pipeline?: LocalAIPipeline;
}

export interface QueueWorker {
  readonly pipeline: LocalAIPipeline;
  /** Stops taking jobs, waits for the active ones, disconnects. */
  close(): Promise<void>;
}

function checkConcurrency(value: number): number {
  if (!Number.isInteger(value) || value < 1) throw new PhoenixError('E_INVALID_OPTION', `option \`concurrency\` must be an integer ≥ 1, got ${String(value)}`, { option: 'concurrency' });
  return value;
}

/** Starts a worker; resolves once it is connected and taking jobs. */
export async function startWorker(options: WorkerOptions): Promise<QueueWorker> {
  const queue = options.queue ?? 'phoenix';
  const concurrency = checkConcurrency(options.concurrency ?? 1);
  const pipeline = options.pipeline ?? new LocalAIPipeline({ modelsDir: options.modelsDir, maxConcurrency: concurrency });
  const connection = new Redis(options.redis, { maxRetriesPerRequest: null });
  const subscriber = new Redis(options.redis, { maxRetriesPerRequest: null });
  const writer = new Redis(options.redis, { maxRetriesPerRequest: null });

  const run = async (job: Job, _token?: string, signal?: AbortSignal): Promise<WireResult> => {
    const jobId = job.id!;
    let request;
    try {
      request = decodeJob(job.data);
      if (request.id !== jobId) throw new PhoenixError('E_INVALID_OPTION', 'job.id must equal the queue job id (the request id)', { option: 'id' });
    } catch (thrown) {
      // A malformed job fails at once, without retries; its typed error travels as the failure reason.
      throw new UnrecoverableError(JSON.stringify(encodeError(toPhoenixError(thrown))));
    }
    const stream = pipeline.stream({ ...request, options: { ...request.options, signal } });
    const key = chunkStreamKey(queue, jobId);
    let seq = 0;
    for await (const chunk of stream) {
      await writer.xadd(key, '*', 'c', JSON.stringify(encodeChunk(seq++, chunk)));
    }
    await writer.expire(key, CHUNK_TTL_S);
    const result: ProcessingResult = await stream.result; // never rejects: failures are results
    return encodeResult(result);
  };

  const lockDuration = options.lockDurationMs ?? 10_000;
  // A job whose worker died is taken up again up to maxStalledCount times, then fails: a job that
  // kills every worker it reaches ends instead of looping.
  const worker = new Worker(queue, run, { connection, concurrency, prefix: PREFIX, autorun: false, lockDuration, stalledInterval: Math.max(1000, lockDuration / 2), maxStalledCount: 2 });
  await subscriber.subscribe(cancelChannel(queue));
  subscriber.on('message', (_channel: string, jobId: string) => {
    worker.cancelJob(jobId, 'aborted by the caller');
  });
  void worker.run();
  await worker.waitUntilReady();

  return {
    pipeline,
    async close(): Promise<void> {
      await worker.close();
      subscriber.disconnect();
      writer.disconnect();
      connection.disconnect();
      if (!options.pipeline) pipeline.dispose();
    },
  };
}
