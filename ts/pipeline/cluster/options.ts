/**
 * The `queue` option of a {@link LocalAIPipeline}, checked when the pipeline is built (before bullmq is
 * loaded or Redis contacted), so a typo or an option that does not exist is an error, not ignored.
 */
import { PhoenixError } from '../../binding/errors.js';
import { describeValue } from '../../engines/options.js';

export interface QueueClientOptions {
  /** Redis URL of the queue (`redis://` or `rediss://`): the only host contacted. */
  redis: string;
  /** Queue name (default `phoenix`). */
  name?: string;
  /** Jobs that may wait or run at once; more are `E_ABORTED` as with the in-process queue (default 1024). */
  maxQueueSize?: number;
}

const FIELDS = new Set(['redis', 'name', 'maxQueueSize']);

function bad(field: string, message: string): PhoenixError {
  return new PhoenixError('E_INVALID_OPTION', `option \`queue.${field}\` ${message}`, { option: `queue.${field}` });
}

/** A queue name BullMQ keys can carry: no `:` (its key separator), no spaces. */
export function isQueueName(name: string): boolean {
  return name !== '' && name.length <= 128 && !/[:\s]/.test(name);
}

/** @throws `E_INVALID_OPTION` naming the field for an unknown field or a bad value. */
export function checkQueueOptions(options: QueueClientOptions): QueueClientOptions {
  if (options === null || typeof options !== 'object') throw new PhoenixError('E_INVALID_OPTION', 'option `queue` must be an object { redis, name?, maxQueueSize? }', { option: 'queue' });
  for (const key of Object.keys(options)) {
    // `attempts` existed once and never did anything: a job whose worker dies is taken up again by the
    // workers' stalled-job limit (twice), whatever the client asks.
    if (!FIELDS.has(key)) throw bad(key, 'is not a queue option (redis, name, maxQueueSize)');
  }
  let url: URL | undefined;
  try {
    url = typeof options.redis === 'string' ? new URL(options.redis) : undefined;
  } catch {
    url = undefined;
  }
  if (!url || (url.protocol !== 'redis:' && url.protocol !== 'rediss:') || url.hostname === '') throw bad('redis', 'must be a redis:// or rediss:// URL with a host');
  if (options.name !== undefined && (typeof options.name !== 'string' || !isQueueName(options.name))) throw bad('name', 'must be 1–128 characters without ":" or spaces');
  const size = options.maxQueueSize;
  if (size !== undefined && (!Number.isSafeInteger(size) || size < 0)) throw bad('maxQueueSize', `must be an integer ≥ 0, got ${describeValue(size)}`);
  return options;
}
