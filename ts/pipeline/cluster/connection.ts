import { Redis, type RedisOptions } from 'ioredis';

/** ioredis's own back-off between reconnection attempts. */
const retryDelayMs = (attempt: number): number => Math.min(attempt * 50, 2000);

/**
 * Options for a connection to the queue's Redis. While Redis is away ioredis reconnects by itself
 * and commands wait for it (no retry limit) — until `closed()` says the owner has closed: then the
 * next attempt is the last, so a connection handed to BullMQ (which cannot be disconnected from
 * here) stops its reconnect timers too and the process can exit.
 */
export function connectionOptions(closed: () => boolean = () => false): RedisOptions {
  return { maxRetriesPerRequest: null, retryStrategy: (attempt) => (closed() ? null : retryDelayMs(attempt)) };
}

/** A connection whose `error` events (the retrying above, not failures to report) are heard. */
export function connect(url: string, closed?: () => boolean): Redis {
  const redis = new Redis(url, connectionOptions(closed));
  redis.on('error', () => undefined);
  return redis;
}
