/**
 * The cluster entry points as the rest of the package sees them. bullmq and ioredis are loaded here on
 * first use (a pipeline given a `queue`, a worker started), never by an in-process pipeline, the CLI's
 * other commands or the browser entry: they cost startup time and memory, and a browser bundle cannot
 * load them at all.
 */
import { PhoenixError, toPhoenixError } from '../../binding/errors.js';
import type { TokenChunk } from '../../engines/types.js';
import { AsyncChannel } from '../channel.js';
import type { ProcessingRequest, ProcessingResult, ProcessingStream } from '../types.js';
import type { ClusterMetrics } from './aggregate.js';
import type { QueueClient } from './client.js';
import { failedResult } from './failure.js';
import { checkQueueOptions, type QueueClientOptions } from './options.js';
import type { QueueWorker, WorkerOptions } from './worker.js';

/** Longest wait for the cluster's figures (Redis away: commands queue until it is back). */
const CLUSTER_READ_MS = 5000;
/** Most often the figures are re-read as results come in. */
const REFRESH_MS = 1000;

/** Starts a queue worker (see `worker.ts`); resolves once it is connected and taking jobs. */
export async function startWorker(options: WorkerOptions): Promise<QueueWorker> {
  const { startWorker: start } = await import('./worker.js');
  return start(options);
}

/** A {@link QueueClient} created on the first request. */
export class LazyQueueClient {
  readonly #options: QueueClientOptions;
  #client: Promise<QueueClient> | undefined;
  #closed = false;
  #latest: ClusterMetrics | undefined;
  #refreshing: Promise<ClusterMetrics> | undefined;
  #refreshedAt = 0;

  constructor(options: QueueClientOptions) {
    this.#options = checkQueueOptions(options);
  }

  client(): Promise<QueueClient> {
    this.#client ??= import('./client.js').then((m) => new m.QueueClient(this.#options));
    return this.#client;
  }

  /** The pipeline adds `cancel()` (a signal merged into the request), as for a local stream. */
  stream(request: ProcessingRequest, modeDeadlineMs?: number): Omit<ProcessingStream, 'cancel'> {
    const startedAt = performance.now();
    const channel = new AsyncChannel<TokenChunk>();
    const result: Promise<ProcessingResult> = this.client()
      .then((client) => client.run(request, channel, modeDeadlineMs))
      .catch((error: unknown) => failedResult(request, toPhoenixError(error), startedAt))
      .finally(() => {
        channel.close();
        if (!this.#closed && Date.now() - this.#refreshedAt >= REFRESH_MS) void this.cluster().catch(() => undefined);
      });
    return { result, [Symbol.asyncIterator]: () => channel[Symbol.asyncIterator]() };
  }

  /** The cluster's figures as last read (after a result, at most once a second, or by {@link cluster}). */
  get latest(): ClusterMetrics | undefined {
    return this.#latest;
  }

  /**
   * Reads the cluster's figures now.
   * @throws `E_BACKEND_UNAVAILABLE` when Redis does not answer within 5 s.
   */
  cluster(): Promise<ClusterMetrics> {
    this.#refreshedAt = Date.now();
    this.#refreshing ??= (async () => {
      const client = await this.client();
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new PhoenixError('E_BACKEND_UNAVAILABLE', `queue "${client.name}": Redis did not answer within ${CLUSTER_READ_MS} ms`)), CLUSTER_READ_MS);
        timer.unref();
      });
      try {
        this.#latest = await Promise.race([client.cluster(), late]);
        return this.#latest;
      } finally {
        clearTimeout(timer);
      }
    })().finally(() => (this.#refreshing = undefined));
    return this.#refreshing;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const client = await this.#client?.catch(() => undefined);
    await client?.close();
  }
}
