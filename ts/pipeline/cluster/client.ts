/**
 * The client side of a queue-backed {@link LocalAIPipeline}: a request becomes a BullMQ job whose id
 * is the request id (a duplicate id joins the one job and gets its one result), its chunks are read in
 * order from the job's Redis stream (repeats from a retried attempt dropped by sequence number), its
 * result or typed error is rebuilt, and the caller's signal or deadline cancels it wherever it is.
 */
import { Queue, QueueEvents, type Job } from 'bullmq';
import type { Redis } from 'ioredis';

import { PhoenixError, toPhoenixError } from '../../binding/errors.js';
import type { TokenChunk } from '../../engines/types.js';
import type { AsyncChannel } from '../channel.js';
import type { ProcessingRequest, ProcessingResult } from '../types.js';
import { aggregateCluster, type ClusterMetrics } from './aggregate.js';
import { failedResult } from './failure.js';
import { readHeartbeats } from './heartbeat.js';
import { encodeJob, sameJob } from './job.js';
import type { QueueClientOptions } from './options.js';
import { PREFIX, cancelChannel, chunkStreamKey } from './keys.js';
import { connect, connectionOptions } from './connection.js';
import { decodeChunk, decodeError, decodeResult, encodeError } from './wire.js';
import { longTimeout } from '../deadline.js';
import { listenAbort, unlistenAbort } from '../../util/abort-listeners.js';

/**
 * How long a finished job (its result, its error) stays in Redis: a duplicate id joins it meanwhile
 * (a client retrying after a crash gets the result without a second run); after that Redis lets it go,
 * instead of keeping every result (logits, states) forever.
 */
export const RESULT_KEEP_S = 3600;

/**
 * After the caller's signal or deadline stopped a request, how long its running job has to send the
 * partial result (a worker ends it within a token or a layer). Past it — the job's worker died, Redis
 * lost the job — the request ends with `E_ABORTED` anyway instead of waiting for a result never sent.
 */
export const STOP_GRACE_MS = 5000;

export class QueueClient {
  readonly name: string;
  readonly #redis: string;
  readonly #maxQueueSize: number;
  readonly #queue: Queue;
  readonly #events: QueueEvents;
  readonly #publisher: Redis;
  /** Given to the Queue, so not closed by it (BullMQ leaves a connection it was handed open). */
  readonly #queueConnection: Redis;
  /** Set by {@link close}: every connection stops reconnecting (see `connectionOptions`). */
  #closed = false;
  /** Each running request's way to stop waiting at once (called by {@link close}). */
  readonly #endNow = new Set<() => void>();

  constructor(options: QueueClientOptions) {
    this.name = options.name ?? 'phoenix';
    this.#redis = options.redis;
    this.#maxQueueSize = options.maxQueueSize ?? 1024;
    const closed = (): boolean => this.#closed;
    this.#queueConnection = connect(options.redis, closed);
    this.#queue = new Queue(this.name, { connection: this.#queueConnection, prefix: PREFIX });
    // QueueEvents opens its own connection (it duplicates one it is given), out of reach of close().
    this.#events = new QueueEvents(this.name, { connection: { url: options.redis, ...connectionOptions(closed) }, prefix: PREFIX });
    this.#publisher = connect(options.redis, closed);
    // Connection errors while Redis is away: BullMQ retries by itself (an unheard 'error' would throw).
    this.#queue.on('error', () => undefined);
    this.#events.on('error', () => undefined);
    // job.waitUntilFinished listens on the queue once per waiting request: many by design.
    this.#queue.setMaxListeners(0);
    this.#events.setMaxListeners(0);
    // A job removed before a worker took it never finishes: every wait for it, on every client
    // (Redis tells them all), ends here, which also lets go of waitUntilFinished's listeners.
    this.#events.on('removed', ({ jobId }) => this.#endWaits(jobId, removedError()));
  }

  /** Job counts of the queue and its live workers' adverts, aggregated. */
  async cluster(): Promise<ClusterMetrics> {
    const counts = await this.#queue.getJobCounts('waiting', 'prioritized', 'active', 'delayed', 'completed', 'failed');
    const beats = await readHeartbeats(this.#publisher, this.name);
    return aggregateCluster(this.name, counts, beats, Date.now());
  }

  /**
   * Disconnects at once. QueueEvents' close waits for its connection to have been ready once, so with
   * Redis never reached it settles only after that connection's next (last) attempt; not awaited.
   */
  async close(): Promise<void> {
    this.#closed = true;
    for (const end of [...this.#endNow]) end();
    void this.#events.close().catch(() => undefined);
    await this.#queue.close().catch(() => undefined);
    this.#publisher.disconnect();
    this.#queueConnection.disconnect();
  }

  /**
   * The count before adding a job and the add are two commands: clients adding at once all pass the
   * count. So after adding, the newest jobs past `maxQueueSize` back out (removed while still waiting)
   * and are refused, as the in-process queue refuses them; the earlier ones keep their place.
   */
  async #admit(job: Job): Promise<void> {
    const excess = (await this.#busyJobs()) - this.#maxQueueSize;
    if (excess <= 0) return;
    const newest = await this.#queue.getRanges(['waiting'], 0, excess - 1, false);
    if (!newest.includes(job.id ?? '')) return;
    // A worker may have taken it meanwhile: then it stays (it is running, not queued).
    if (!(await job.remove().then(() => true, () => false))) return;
    throw queueFull(excess + this.#maxQueueSize - 1, this.#maxQueueSize);
  }

  /** Jobs waiting or running: what `maxQueueSize` bounds. */
  async #busyJobs(): Promise<number> {
    const counts = await this.#queue.getJobCounts('waiting', 'active', 'delayed', 'prioritized');
    return Object.values(counts).reduce((a, b) => a + b, 0);
  }

  /** Ends every wait for a job that was removed (it never finishes): this client's, for that id. */
  #endWaits(id: string, error: PhoenixError): void {
    // (BullMQ's typings list only the generic events; waitUntilFinished listens on `failed:<id>`.)
    (this.#events as unknown as NodeJS.EventEmitter).emit(`failed:${id}`, { failedReason: JSON.stringify(encodeError(error)) });
  }

  /**
   * Runs `request` on a worker, pushing its chunks to `channel`; never rejects (failures are results).
   * `modeDeadlineMs`: the request's mode limit on this side, so a job no worker takes ends on time too.
   */
  async run(request: ProcessingRequest, channel: AsyncChannel<TokenChunk>, modeDeadlineMs = Number.POSITIVE_INFINITY): Promise<ProcessingResult> {
    const startedAt = performance.now();
    const signal = request?.options?.signal;
    let stoppedBy: 'signal' | 'deadline' | undefined;
    // A worker took the job: a chunk came, or the job could not be removed (it was running).
    let takenByWorker = false;
    let timer: { clear(): void } | undefined;
    // The job once added, or its addition still under way (Redis slow or away).
    let adding: Promise<Job> | undefined;
    // Rejects once the caller's signal fires or the deadline passes: every wait before the job
    // exists races it, so an unreachable Redis (whose commands wait for it) never outlasts them.
    let stop: (error: PhoenixError) => void = () => undefined;
    const stopped = new Promise<never>((_, reject) => (stop = reject));
    stopped.catch(() => undefined);
    const untilStopped = <T>(work: Promise<T>): Promise<T> => Promise.race([work, stopped]);
    const asked = request?.maxProcessingTime;
    const deadline = Math.min(typeof asked === 'number' && asked > 0 ? asked : Number.POSITIVE_INFINITY, modeDeadlineMs);
    // Rejects STOP_GRACE_MS after a stop, or at once when the client closes: every wait once the job
    // exists races it, so a result that will never come (a dead worker, a closed client) is not awaited.
    let expire: (error: PhoenixError) => void = () => undefined;
    const expired = new Promise<never>((_, reject) => (expire = reject));
    expired.catch(() => undefined);
    const untilExpired = <T>(work: Promise<T>): Promise<T> => Promise.race([work, expired]);
    const endNow = (): void => {
      const error = stoppedBy ? stoppedError(stoppedBy, deadline, signal) : new PhoenixError('E_ABORTED', 'the queue client was closed');
      expire(error);
      stop(error); // the waits before the job exists too
    };
    this.#endNow.add(endNow);
    let grace: ReturnType<typeof setTimeout> | undefined;
    const cancel = (cause: 'signal' | 'deadline'): void => {
      if (stoppedBy) return;
      stoppedBy = cause;
      stop(stoppedError(cause, deadline, signal));
      grace = setTimeout(endNow, STOP_GRACE_MS);
      // A job added (now or later, if Redis comes back) is cancelled: a running one through the cancel
      // channel, a waiting one removed so it never runs (a running job cannot be removed).
      void adding?.then(async (job) => {
        void this.#publisher.publish(cancelChannel(this.name), request.id);
        // Only a job still waiting: a finished one keeps its result for its id (a stop that lands as
        // the job completes must not delete it), a running one is cancelled through the channel.
        const state = await job.getState().catch(() => 'unknown');
        if (!WAITING_STATES.has(state)) {
          if (state === 'active') takenByWorker = true;
          return;
        }
        await job.remove().catch(() => (takenByWorker = true)); // taken meanwhile: it runs, cancelled
      }, () => undefined);
    };
    const onAbort = (): void => cancel('signal');
    if (signal?.aborted) onAbort();
    if (signal) listenAbort(signal, onAbort);
    if (Number.isFinite(deadline)) timer = longTimeout(() => cancel('deadline'), deadline);
    const reader = connect(this.#redis, () => this.#closed);
    try {
      const payload = encodeJob(request);
      if (typeof request.id !== 'string' || request.id === '') throw new PhoenixError('E_INVALID_OPTION', 'request.id must be a non-empty string', { option: 'id' });
      const busy = await untilStopped(this.#busyJobs());
      const existing = await untilStopped(this.#queue.getJob(request.id));
      if (!existing && busy >= this.#maxQueueSize) throw queueFull(busy, this.#maxQueueSize);
      await untilStopped(this.#events.waitUntilReady());
      if (existing && !sameJob(existing.data, payload)) {
        throw new PhoenixError('E_INVALID_OPTION', `request id "${request.id}" is taken by a different request on queue "${this.name}" (running, waiting, or a result kept for ${RESULT_KEEP_S / 3600} h): use a new id`, { option: 'id' });
      }
      adding = existing ? Promise.resolve(existing) : this.#queue.add('process', payload, { jobId: request.id, removeOnComplete: { age: RESULT_KEEP_S }, removeOnFail: { age: RESULT_KEEP_S } });
      const job = await untilStopped(adding);
      if (!existing) await untilStopped(this.#admit(job));
      const done = job.waitUntilFinished(this.#events).then(
        (value: unknown) => ({ value }),
        (error: unknown) => ({ error }),
      );
      let settled: { value?: unknown; error?: unknown } | undefined;
      void done.then((s) => (settled = s));
      // Chunks in order; a retried attempt writes the same sequence numbers again: keep the first.
      const key = chunkStreamKey(this.name, request.id);
      let last = '0';
      let next = 0;
      for (;;) {
        const finishedBefore = settled !== undefined;
        const read = await untilExpired(reader.xread('COUNT', 256, 'BLOCK', finishedBefore ? 1 : 50, 'STREAMS', key, last));
        for (const [, entries] of read ?? []) {
          for (const [id, fields] of entries) {
            last = id;
            const chunk = decodeChunk(JSON.parse(fields[1] ?? 'null'));
            if (chunk.seq !== next) continue;
            next++;
            takenByWorker = true;
            await untilExpired(channel.push({ text: chunk.text, tokenId: chunk.tokenId }));
          }
        }
        if (finishedBefore && !read) break;
      }
      if (signal) unlistenAbort(signal, onAbort);
      const outcome = await untilExpired(done);
      if ('error' in outcome) {
        if (stoppedBy) throw stoppedError(stoppedBy, deadline, signal);
        const reason = (outcome.error as Error)?.message ?? '';
        // BullMQ's own words for a job that was removed before this wait began.
        if (/^Missing key for job /.test(reason)) throw removedError();
        let parsed: unknown;
        try {
          parsed = JSON.parse(reason);
        } catch {
          throw new PhoenixError('E_INTERNAL', `the job failed on its worker: ${reason}`);
        }
        throw decodeError(parsed);
      }
      const result = decodeResult(outcome.value);
      if (stoppedBy && !result.success) Object.assign(result.metadata, { stoppedBy });
      // The caller's wall time, as in-process: the worker's own time plus the wait for a worker (and Redis).
      const wall = performance.now() - startedAt;
      result.metadata.queueWaitMs = (result.metadata.queueWaitMs ?? 0) + Math.max(0, wall - result.processingTime);
      result.processingTime = Math.max(wall, result.processingTime);
      return result;
    } catch (thrown) {
      return failedResult(request, toPhoenixError(thrown), startedAt, stoppedBy ? { by: stoppedBy, onWorker: takenByWorker, deadlineMs: deadline } : undefined);
    } finally {
      timer?.clear();
      clearTimeout(grace);
      this.#endNow.delete(endNow);
      if (signal) unlistenAbort(signal, onAbort);
      reader.disconnect();
    }
  }
}

/** States of a job no worker has taken yet (it may be removed). */
const WAITING_STATES = new Set(['waiting', 'delayed', 'prioritized', 'waiting-children']);

function queueFull(busy: number, max: number): PhoenixError {
  return new PhoenixError('E_ABORTED', `request rejected: the queue is full (${busy} jobs waiting or running, maxQueueSize ${max})`, { option: 'maxQueueSize' });
}

/** What the waits of a job removed before any worker took it end with. */
function removedError(): PhoenixError {
  return new PhoenixError('E_ABORTED', 'the job was removed before a worker took it (cancelled, or past a full queue)');
}

/** The error of a request its signal or deadline stopped; a signal aborted with an `E_ABORTED` reason (the pipeline's dispose) says that reason. */
function stoppedError(cause: 'signal' | 'deadline', deadlineMs: number, signal?: AbortSignal): PhoenixError {
  if (cause === 'deadline') return new PhoenixError('E_ABORTED', `maxProcessingTime of ${deadlineMs} ms exceeded`);
  const reason: unknown = signal?.reason;
  return reason instanceof PhoenixError && reason.code === 'E_ABORTED' ? new PhoenixError('E_ABORTED', reason.message) : new PhoenixError('E_ABORTED', 'aborted by the caller');
}
