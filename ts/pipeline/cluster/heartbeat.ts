/**
 * What a worker advertises about itself, and how readers collect it: one Redis key per worker holding
 * a JSON {@link WorkerHeartbeat}, rewritten every heartbeat with a TTL of a few heartbeats, so a worker
 * that dies (SIGKILL, lost machine) drops out by itself; a set of worker ids lets readers find the keys
 * without SCAN. Readers treat the JSON as untrusted: malformed entries are skipped, arrays are capped.
 */
import type { Redis } from 'ioredis';

import { PREFIX } from './keys.js';

/** Most latency samples a heartbeat carries (the worker's most recent jobs). */
export const MAX_SAMPLES = 256;
/** Most model names a heartbeat carries. */
const MAX_MODELS = 1024;

export interface WorkerHeartbeat {
  id: string;
  host: string;
  pid: number;
  /** Epoch ms. */
  startedAt: number;
  updatedAt: number;
  /** Models loaded now (held in memory), with their size. */
  loaded: { name: string; memoryBytes: number }[];
  /** Models in the worker's models dir it can load (not broken). */
  available: string[];
  /**
   * Every model name in its models dir, broken ones too: a job naming one is served there as the
   * worker's own pipeline would serve it (a broken preference falls back), not failed elsewhere as
   * unknown. Absent in adverts of older workers.
   */
  present?: string[];
  memory: { rssBytes: number; heapUsedBytes: number; loadedModelBytes: number };
  /** Jobs finished since start (a result, success or not), failed among them, running now. */
  jobs: { done: number; failed: number; active: number };
  /** Jobs finished in the last 60 s. */
  doneLastMinute: number;
  /** Processing time (ms) on this worker of its most recent jobs. */
  latencyMs: number[];
  /** Jobs finished per model used. */
  requestsByModel: Record<string, number>;
}

export function workerKey(queue: string, id: string): string {
  return `${PREFIX}:${queue}:phoenix-worker:${id}`;
}

export function workersSetKey(queue: string): string {
  return `${PREFIX}:${queue}:phoenix-workers`;
}

/** Writes `beat` with a TTL and registers the worker id. */
export async function publishHeartbeat(redis: Redis, queue: string, beat: WorkerHeartbeat, ttlMs: number): Promise<void> {
  await redis.multi().set(workerKey(queue, beat.id), JSON.stringify(beat), 'PX', ttlMs).sadd(workersSetKey(queue), beat.id).exec();
}

/** Removes a worker's advert (clean shutdown). */
export async function withdrawHeartbeat(redis: Redis, queue: string, id: string): Promise<void> {
  await redis.multi().del(workerKey(queue, id)).srem(workersSetKey(queue), id).exec();
}

/** Live workers' heartbeats; ids whose key expired are dropped from the set. */
export async function readHeartbeats(redis: Redis, queue: string): Promise<WorkerHeartbeat[]> {
  const ids = (await redis.smembers(workersSetKey(queue))).slice(0, 10_000);
  if (ids.length === 0) return [];
  const values = await redis.mget(ids.map((id) => workerKey(queue, id)));
  const beats: WorkerHeartbeat[] = [];
  const gone: string[] = [];
  values.forEach((value, i) => {
    if (value === null) gone.push(ids[i]!);
    else {
      const beat = decodeHeartbeat(value);
      if (beat) beats.push(beat);
    }
  });
  if (gone.length > 0) await redis.srem(workersSetKey(queue), ...gone);
  return beats;
}

const isNum = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);
const isStr = (v: unknown): v is string => typeof v === 'string' && v.length <= 1024;
const isObj = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);

/** A heartbeat read from Redis, or undefined when it is not one. */
export function decodeHeartbeat(text: string): WorkerHeartbeat | undefined {
  if (text.length > 1024 * 1024) return undefined;
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch {
    return undefined;
  }
  if (!isObj(v) || !isStr(v.id) || !isStr(v.host) || !isNum(v.pid) || !isNum(v.startedAt) || !isNum(v.updatedAt) || !isNum(v.doneLastMinute)) return undefined;
  const { memory, jobs } = v;
  if (!isObj(memory) || !isNum(memory.rssBytes) || !isNum(memory.heapUsedBytes) || !isNum(memory.loadedModelBytes)) return undefined;
  if (!isObj(jobs) || !isNum(jobs.done) || !isNum(jobs.failed) || !isNum(jobs.active)) return undefined;
  if (!Array.isArray(v.loaded) || !Array.isArray(v.available) || !Array.isArray(v.latencyMs) || !isObj(v.requestsByModel)) return undefined;
  const loaded = v.loaded.slice(0, MAX_MODELS).filter((m): m is { name: string; memoryBytes: number } => isObj(m) && isStr(m.name) && isNum(m.memoryBytes));
  const requestsByModel: Record<string, number> = {};
  for (const [name, count] of Object.entries(v.requestsByModel).slice(0, MAX_MODELS)) if (isNum(count)) requestsByModel[name] = count;
  return {
    id: v.id,
    host: v.host,
    pid: v.pid,
    startedAt: v.startedAt,
    updatedAt: v.updatedAt,
    loaded: loaded.map((m) => ({ name: m.name, memoryBytes: m.memoryBytes })),
    available: v.available.slice(0, MAX_MODELS).filter(isStr),
    ...(Array.isArray(v.present) ? { present: v.present.slice(0, MAX_MODELS).filter(isStr) } : {}),
    memory: { rssBytes: memory.rssBytes, heapUsedBytes: memory.heapUsedBytes, loadedModelBytes: memory.loadedModelBytes },
    jobs: { done: jobs.done, failed: jobs.failed, active: jobs.active },
    doneLastMinute: v.doneLastMinute,
    latencyMs: v.latencyMs.slice(0, MAX_SAMPLES).filter(isNum),
    requestsByModel,
  };
}
