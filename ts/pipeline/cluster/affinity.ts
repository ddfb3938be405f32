/**
 * Which worker runs a job that names a model. All workers take jobs from one queue (so nothing about
 * delivery, retries or persistence changes); a worker that takes up a job for a model it does not hold
 * hands it back for 50 ms (BullMQ delay) when another live worker holds that model, so the holder
 * gets it without a reload. Once the job has waited `affinityWaitMs` since it was enqueued, any worker
 * that can serve it runs it (a busy holder must not starve the queue; the taker loads the model and
 * becomes a holder too). A worker never takes a job for a model missing from its models dir while a
 * live worker has it — usable, or there but broken (that worker's pipeline falls back from it, as an
 * in-process one would). Jobs that name no model run wherever they are taken up.
 */
import type { WorkerHeartbeat } from './heartbeat.js';

/** Run it here, or hand it back to the queue for `retryInMs`. */
export type AffinityDecision = { run: true } | { run: false; reason: string; retryInMs: number };

/** A holder may be free any moment: the job is back in the queue soon (while delayed nobody can take it). */
const HOLDER_RETRY_MS = 50;
/** A job only another worker can serve waits for it to be free; its idle peers check back less often. */
const MISSING_RETRY_MAX_MS = 1000;

export interface AffinityInput {
  /** The model the job names, if any. */
  model: string | undefined;
  /** This worker's id and what it holds / can load / has in its models dir at all (broken ones too). */
  self: { id: string; loaded: readonly string[]; available: readonly string[]; present?: readonly string[] };
  /** Live workers' heartbeats (this one's included or not). */
  workers: readonly WorkerHeartbeat[];
  /** How long the job has waited since it was enqueued, ms. */
  waitedMs: number;
  affinityWaitMs: number;
}

export function decideAffinity({ model, self, workers, waitedMs, affinityWaitMs }: AffinityInput): AffinityDecision {
  if (model === undefined || self.loaded.includes(model)) return { run: true };
  const others = workers.filter((w) => w.id !== self.id);
  const missingRetry = Math.min(MISSING_RETRY_MAX_MS, Math.max(HOLDER_RETRY_MS, waitedMs / 10));
  if (!self.available.includes(model) && others.some((w) => w.available.includes(model) || w.loaded.some((m) => m.name === model))) {
    return { run: false, reason: `${model} is not in this worker's models dir`, retryInMs: missingRetry };
  }
  // Not even a broken folder of that name here, but one there: served there as its own pipeline serves it.
  const here = self.present ?? self.available;
  if (!here.includes(model) && others.some((w) => w.present?.includes(model))) {
    return { run: false, reason: `${model} is not in this worker's models dir (another worker's is broken: it falls back there)`, retryInMs: missingRetry };
  }
  if (waitedMs < affinityWaitMs && others.some((w) => w.loaded.some((m) => m.name === model))) {
    return { run: false, reason: `another worker holds ${model}`, retryInMs: HOLDER_RETRY_MS };
  }
  return { run: true };
}
