/**
 * Redis names of one phoenix queue besides BullMQ's own: the chunk stream of a job and the channel
 * clients use to cancel a job wherever it runs.
 */
/** BullMQ key prefix (BullMQ's default). */
export const PREFIX = 'bull';

/** Redis stream of a job's chunks (`seq`-numbered; a retried job writes the same numbers again). */
export function chunkStreamKey(queue: string, jobId: string): string {
  return `${PREFIX}:${queue}:phoenix-chunks:${jobId}`;
}

/** Pub/sub channel on which a job id is published to cancel it. */
export function cancelChannel(queue: string): string {
  return `${PREFIX}:${queue}:phoenix-cancel`;
}

/** How long a finished job's chunk stream is kept for late readers, in seconds. */
export const CHUNK_TTL_S = 3600;
