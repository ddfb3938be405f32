/**
 * OFFLINE_ONLY performs no network I/O at all: every network entry point of Node is replaced with a
 * trap that records the call and throws; then a model is discovered, loaded and run through the
 * pipeline, and the status is read. Nothing may have touched the network.
 */
import dns from 'node:dns';
import https from 'node:https';
import { syncBuiltinESMExports } from 'node:module';
import net from 'node:net';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { OfflineDetector } from '../ts/offline/detector.js';
import { LocalAIPipeline } from '../ts/pipeline/pipeline.js';
import { ProcessingMode } from '../ts/pipeline/modes.js';
import { LITE, copyModel, requireNativeAddon, tempDir } from './helpers.js';
import { networkEntryPoints } from './network-entry-points.js';

const calls: string[] = [];
const restore: (() => void)[] = [];

function trap(target: object, key: string, label: string): void {
  const holder = target as Record<string, unknown>;
  const original = holder[key];
  holder[key] = function trapped(): never {
    calls.push(label);
    throw new Error(`network access in OFFLINE_ONLY test: ${label}`);
  };
  restore.push(() => {
    holder[key] = original;
  });
}

function installTraps(): void {
  trap(net.Socket.prototype, 'connect', 'net.Socket.prototype.connect');
  trap(net, 'connect', 'net.connect');
  trap(net, 'createConnection', 'net.createConnection');
  for (const [target, key, label] of networkEntryPoints()) trap(target, key, label);
  syncBuiltinESMExports();
}

let scratch: Awaited<ReturnType<typeof tempDir>>;

beforeAll(async () => {
  requireNativeAddon();
  scratch = await tempDir();
  await copyModel(LITE, path.join(scratch.dir, 'models', 'lite'));
  installTraps();
});

afterAll(async () => {
  for (const undo of restore.reverse()) undo();
  syncBuiltinESMExports();
  await scratch?.cleanup();
});

describe('OFFLINE_ONLY', () => {
  it('the traps catch every kind of network call', async () => {
    expect(() => net.connect(80, 'example.com')).toThrow(/network access/);
    expect(() => new net.Socket().connect(80, 'example.com')).toThrow(/network access/);
    expect(() => dns.lookup('example.com', () => undefined)).toThrow(/network access/);
    await expect(async () => dns.promises.resolve('example.com')).rejects.toThrow(/network access/);
    expect(() => https.get('https://example.com')).toThrow(/network access/);
    await expect(async () => fetch('https://example.com')).rejects.toThrow(/network access/);
    const { lookup } = await import('node:dns');
    expect(() => lookup('example.com', () => undefined)).toThrow(/network access/); // named ESM import sees the trap too
    expect(calls.length).toBe(7);
    calls.length = 0;
  });

  it('discovers, loads, generates, scores and reports status with zero network calls', async () => {
    const probed: string[] = [];
    const detector = new OfflineDetector({ probes: { recorder: () => (probed.push('probe'), true) } });
    const pipeline = new LocalAIPipeline({ modelsDir: path.join(scratch.dir, 'models'), defaultMode: ProcessingMode.OFFLINE_ONLY, offlineDetector: detector });
    try {
      const generated = await pipeline.process({ id: 'offline-1', input: 'Once upon a time', taskType: 'generation', options: { maxTokens: 16, temperature: 0 } });
      expect(generated.success).toBe(true);
      expect(generated.modelUsed).toBe('lite');
      expect(generated.generatedTokens).toBe(16);
      expect(generated.text?.length).toBeGreaterThan(10);
      const streamed = pipeline.stream({ id: 'offline-2', input: 'The cat', taskType: 'generation', options: { maxTokens: 4 } });
      for await (const _ of streamed) {
        // consume
      }
      expect((await streamed.result).success).toBe(true);
      const scored = await pipeline.process({ id: 'offline-3', input: 'The cat sat.', taskType: 'scoring' });
      expect(scored.success).toBe(true);
      const status = await pipeline.getSystemStatus();
      expect(status.offline).toMatchObject({ online: false, probed: false });
      expect(status.backend.available).toBe(true);
      expect(probed).toEqual([]);
      expect(calls).toEqual([]);
    } finally {
      pipeline.dispose();
    }
  });

  it('outside OFFLINE_ONLY the detector does run its (injected) probes', async () => {
    const probed: string[] = [];
    const detector = new OfflineDetector({ probes: { first: () => (probed.push('first'), false), second: async () => (probed.push('second'), true) } });
    expect(await detector.check()).toMatchObject({ online: true, probed: true, reason: 'probe "second" saw connectivity' });
    expect(await detector.check({ offlineOnly: true })).toMatchObject({ online: false, probed: false });
    expect(probed).toEqual(['first', 'second']);
    const slow = new OfflineDetector({ probes: { hang: () => new Promise<boolean>(() => undefined) }, probeTimeoutMs: 20 });
    expect(await slow.check()).toMatchObject({ online: false, probed: true });
    const throwing = new OfflineDetector({ probes: { boom: () => { throw new Error('x'); } } });
    expect((await throwing.check()).online).toBe(false);
    expect(calls).toEqual([]);
  });
});
