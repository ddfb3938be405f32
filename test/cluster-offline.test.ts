/**
 * Offline on a queue: a worker and a queue client contact the configured Redis and nothing else.
 * Every outgoing TCP connection is recorded (and let through); DNS, HTTP(S), TLS and fetch are traps
 * that throw. A generation request and a streamed one run end to end, then the record is checked.
 */
import { syncBuiltinESMExports } from 'node:module';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { startWorker, type QueueWorker } from '../ts/pipeline/cluster/worker.js';
import { LocalAIPipeline } from '../ts/pipeline/pipeline.js';
import { TestRedis, clusterScene, skipWithoutRedis } from './cluster-redis.js';
import { LITE, tempDir } from './helpers.js';
import { networkEntryPoints } from './network-entry-points.js';

const skip = skipWithoutRedis('test/cluster-offline.test.ts');

/** Where each outgoing connection went (`host:port`, or the socket path). */
const connections: string[] = [];
/** Network entry points that must never be called. */
const forbidden: string[] = [];
const restore: (() => void)[] = [];

function replace(target: object, key: string, make: (original: (...args: unknown[]) => unknown) => (...args: unknown[]) => unknown): void {
  const holder = target as Record<string, unknown>;
  const original = holder[key] as (...args: unknown[]) => unknown;
  holder[key] = make(original);
  restore.push(() => {
    holder[key] = original;
  });
}

/** `socket.connect(options | port[, host] | path[, listener])` → where it goes (`host:port` or the path). */
function destination(args: unknown[]): string {
  const [first, second] = args;
  // net.createConnection hands connect its arguments already normalised, as one array.
  if (Array.isArray(first)) return destination(first);
  if (typeof first === 'object' && first !== null) {
    const o = first as { host?: string; port?: number | string; path?: string };
    return o.path ?? `${o.host ?? 'localhost'}:${o.port}`;
  }
  if (typeof first === 'string' && Number.isNaN(Number(first))) return first;
  return `${typeof second === 'string' ? second : 'localhost'}:${first}`;
}

function installRecorders(): void {
  replace(net.Socket.prototype, 'connect', (original) =>
    function recorded(this: net.Socket, ...args: unknown[]) {
      connections.push(destination(args));
      return original.apply(this, args);
    },
  );
  const trap = (target: object, key: string, label: string) =>
    replace(target, key, () => () => {
      forbidden.push(label);
      throw new Error(`network access outside the configured Redis: ${label}`);
    });
  for (const [target, key, label] of networkEntryPoints()) trap(target, key, label);
  syncBuiltinESMExports();
}

describe.skipIf(skip)('a queue worker and client are offline but for their Redis', () => {
  let redis: TestRedis;
  let scratch: Awaited<ReturnType<typeof tempDir>>;
  let worker: QueueWorker | undefined;
  let client: LocalAIPipeline | undefined;

  beforeAll(async () => {
    const { modelsDir, ...scene } = await clusterScene({ lite: LITE });
    ({ redis, scratch } = scene);
    installRecorders();
    worker = await startWorker({ redis: redis.url, queue: 'offline', modelsDir });
    client = new LocalAIPipeline({ modelsDir: path.join(scratch.dir, 'none'), queue: { redis: redis.url, name: 'offline' } });
  }, 30_000);

  afterAll(async () => {
    client?.dispose();
    await worker?.close();
    for (const undo of restore.reverse()) undo();
    syncBuiltinESMExports();
    await redis?.dispose();
    await scratch?.cleanup();
  });

  it('serves requests through 127.0.0.1:<its port> only', async () => {
    const options = { maxTokens: 8, temperature: 0 };
    const result = await client!.process({ id: 'off-1', input: 'Once upon a time', taskType: 'generation', options });
    expect(result.success, `${result.errorCode} ${result.errorMessage}`).toBe(true);
    const stream = client!.stream({ id: 'off-2', input: 'There was a little', taskType: 'generation', options });
    let text = '';
    for await (const chunk of stream) text += chunk.text;
    expect((await stream.result).text).toBe(text);
    await client!.getSystemStatus(); // the cluster figures read Redis too

    expect(forbidden).toEqual([]);
    expect(connections.length).toBeGreaterThan(0);
    expect(new Set(connections)).toEqual(new Set([`127.0.0.1:${redis.port}`]));
  }, 60_000);
});
