/**
 * The cluster entry points as the rest of the package sees them. bullmq and ioredis are loaded here on
 * first use (a pipeline given a `queue`, a worker started), never by an in-process pipeline, the CLI's
 * other commands or the browser entry: they cost startup time and memory, and a browser bundle cannot
 * load them at all.
 */
import { toPhoenixError } from '../../binding/errors.js';
import type { TokenChunk } from '../../engines/types.js';
import { AsyncChannel } from '../channel.js';
import type { ProcessingRequest, ProcessingResult, ProcessingStream } from '../types.js';
import type { QueueClient } from './client.js';
import { failedResult } from './failure.js';
import { checkQueueOptions, type QueueClientOptions } from './options.js';
import type { QueueWorker, WorkerOptions } from './worker.js';

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

  constructor(options: QueueClientOptions) {
    this.#options = checkQueueOptions(options);
  }

  client(): Promise<QueueClient> {
    this.#client ??= import('./client.js').then((m) => new m.QueueClient(this.#options));
    return this.#client;
  }

  stream(request: ProcessingRequest): ProcessingStream {
    const startedAt = performance.now();
    const channel = new AsyncChannel<TokenChunk>();
    const result: Promise<ProcessingResult> = this.client()
      .then((client) => client.run(request, channel))
      .catch((error: unknown) => failedResult(request, toPhoenixError(error), startedAt))
      .finally(() => channel.close());
    return { result, [Symbol.asyncIterator]: () => channel[Symbol.asyncIterator]() };
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const client = await this.#client?.catch(() => undefined);
    await client?.close();
  }
}
