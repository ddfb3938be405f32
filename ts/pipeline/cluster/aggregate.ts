/**
 * A queue's figures across its workers: BullMQ's job counts plus what every live worker advertises
 * (models, memory, jobs, recent latencies), merged into one throughput and one latency distribution.
 */
import { distribution, type Distribution } from '../metrics.js';
import type { WorkerHeartbeat } from './heartbeat.js';

export interface ClusterWorkerStatus {
  id: string;
  host: string;
  pid: number;
  /** Epoch ms of its start and of its last heartbeat. */
  startedAt: number;
  lastSeen: number;
  loadedModels: { name: string; memoryBytes: number }[];
  availableModels: string[];
  memory: { rssBytes: number; heapUsedBytes: number; loadedModelBytes: number };
  jobs: { done: number; failed: number; active: number };
  requestsByModel: Record<string, number>;
  latencyMs: Distribution;
}

export interface ClusterMetrics {
  queue: string;
  /** BullMQ job counts: waiting (incl. prioritized), active, delayed (incl. handed back to a model's holder), completed, failed. */
  jobs: { waiting: number; active: number; delayed: number; completed: number; failed: number };
  /** Live workers (those whose heartbeat has not expired). */
  workers: ClusterWorkerStatus[];
  /** Jobs finished per second by all live workers over the last minute (or since the oldest started). */
  throughputPerSecond: number;
  /** Processing time on the workers of their most recent jobs (up to 256 each), merged. */
  latencyMs: Distribution;
  /** Epoch ms when these figures were read. */
  readAt: number;
}

export function aggregateCluster(queue: string, counts: Record<string, number>, beats: readonly WorkerHeartbeat[], now: number): ClusterMetrics {
  const workers = [...beats].sort((a, b) => a.startedAt - b.startedAt || a.id.localeCompare(b.id));
  const window = Math.min(60_000, Math.max(1000, now - Math.min(now, ...workers.map((w) => w.startedAt))));
  return {
    queue,
    jobs: {
      waiting: (counts.waiting ?? 0) + (counts.prioritized ?? 0),
      active: counts.active ?? 0,
      delayed: counts.delayed ?? 0,
      completed: counts.completed ?? 0,
      failed: counts.failed ?? 0,
    },
    workers: workers.map((w) => ({
      id: w.id,
      host: w.host,
      pid: w.pid,
      startedAt: w.startedAt,
      lastSeen: w.updatedAt,
      loadedModels: w.loaded,
      availableModels: w.available,
      memory: w.memory,
      jobs: w.jobs,
      requestsByModel: w.requestsByModel,
      latencyMs: distribution(w.latencyMs),
    })),
    throughputPerSecond: workers.reduce((sum, w) => sum + w.doneLastMinute, 0) / (window / 1000),
    latencyMs: distribution(workers.flatMap((w) => w.latencyMs)),
    readAt: now,
  };
}
