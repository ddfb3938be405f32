/**
 * `phoenix-local worker`: serves a BullMQ queue on Redis with this machine's models until SIGTERM or
 * SIGINT, then stops taking jobs and finishes the active ones.
 */
import { PhoenixError } from '../binding/errors.js';
import { startWorker } from '../pipeline/cluster/lazy.js';
import { isQueueName } from '../pipeline/cluster/options.js';
import { assertModelName } from '../models/names.js';
import { LocalAIPipeline } from '../pipeline/pipeline.js';
import type { ParsedFlags } from './args.js';
import type { CliContext } from './context.js';

function usageError(option: string, message: string): PhoenixError {
  return new PhoenixError('E_INVALID_OPTION', message, { option, usage: true });
}

/** A `redis://` / `rediss://` URL with a host: the only place the worker connects to. */
function redisUrl(value: string | undefined): string {
  if (value === undefined) throw usageError('redis', 'worker needs --redis <url> (e.g. redis://127.0.0.1:6379)');
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw usageError('redis', '--redis must be a URL such as redis://127.0.0.1:6379');
  }
  if ((url.protocol !== 'redis:' && url.protocol !== 'rediss:') || url.hostname === '') throw usageError('redis', '--redis must be a redis:// or rediss:// URL with a host');
  return value;
}

function positiveInt(option: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < 1) throw usageError(option, `--${option} must be an integer ≥ 1, got ${JSON.stringify(value)}`);
  return n;
}

export async function workerCommand(ctx: CliContext, flags: ParsedFlags): Promise<number> {
  const redis = redisUrl(flags.redis);
  const queue = flags.queue ?? 'phoenix';
  if (!isQueueName(queue)) throw usageError('queue', '--queue must be 1–128 characters without ":" or spaces');
  const concurrency = positiveInt('concurrency', flags.concurrency, 1);
  const preload = flags.preload === undefined ? [] : flags.preload.split(',').map((name) => name.trim());
  if (preload.some((name) => name === '')) throw usageError('preload', '--preload must be model names separated by commas');
  for (const name of preload) {
    try {
      assertModelName(name);
    } catch (error) {
      throw usageError('preload', `--preload: ${(error as Error).message}`);
    }
  }
  await ctx.requireModelsDir();
  const pipeline = new LocalAIPipeline({ manager: ctx.manager, maxConcurrency: concurrency });
  // startWorker waits for Redis (reconnecting quietly): say so rather than sit silent.
  const waiting = setTimeout(() => ctx.io.stderr.write(`phoenix-local worker: waiting for Redis at ${redis} (not reachable yet; retrying)\n`), 3000);
  const worker = await startWorker({ redis, queue, concurrency, pipeline, preload }).finally(() => clearTimeout(waiting));
  // Progress, silenced by -q as every command's is (a Redis that cannot be reached is still said).
  ctx.note(`phoenix-local worker: serving queue "${queue}" with models from ${ctx.manager.modelsDir} (concurrency ${concurrency}${preload.length ? `, holding ${preload.join(', ')}` : ''})`);
  await new Promise<void>((resolve) => {
    process.once('SIGTERM', resolve);
    process.once('SIGINT', resolve);
  });
  ctx.note('phoenix-local worker: stopping: finishing active jobs');
  await worker.close();
  return 0;
}
