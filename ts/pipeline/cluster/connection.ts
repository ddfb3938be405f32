import { Redis } from 'ioredis';

/**
 * A connection to the queue's Redis. While Redis is away ioredis reconnects by itself and commands
 * wait for it (no retry limit); its `error` events are that retrying, not failures to report.
 */
export function connect(url: string): Redis {
  const redis = new Redis(url, { maxRetriesPerRequest: null });
  redis.on('error', () => undefined);
  return redis;
}
