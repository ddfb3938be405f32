/**
 * A queue pipeline whose Redis cannot be reached: the caller's deadline and signal still end a
 * request (E_ABORTED, as their documentation says: "wherever it is"), instead of waiting on Redis
 * commands that wait for a connection forever. Needs no Redis: the port refuses connections.
 */
import { spawn } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';

import { LocalAIPipeline } from '../ts/pipeline/pipeline.js';
import type { ProcessingRequest } from '../ts/pipeline/types.js';
import { LITE, ROOT, tempDir } from './helpers.js';

describe('a queue pipeline with Redis unreachable', () => {
  const remote = new LocalAIPipeline({ modelsDir: path.dirname(LITE), queue: { redis: 'redis://127.0.0.1:1', name: 'unreachable' } });
  afterAll(() => remote.dispose());
  const request = (id: string, extra: Partial<ProcessingRequest> = {}): ProcessingRequest => ({
    id,
    input: 'Once upon a time',
    taskType: 'generation',
    ...extra,
  });

  it('ends a request at its maxProcessingTime', async () => {
    const t0 = performance.now();
    const result = await remote.process(request('deadline', { maxProcessingTime: 300 }));
    expect(performance.now() - t0).toBeLessThan(5_000);
    expect(result.success).toBe(false);
    expect(result.errorCode).toBe('E_ABORTED');
    expect(result.errorMessage).toMatch(/maxProcessingTime of 300 ms exceeded/);
  }, 20_000);

  it("ends a request when the caller's signal fires, or at once when it already has", async () => {
    const t0 = performance.now();
    const fired = await remote.process(request('signal', { options: { signal: AbortSignal.timeout(300) } }));
    expect(performance.now() - t0).toBeLessThan(5_000);
    expect([fired.success, fired.errorCode]).toEqual([false, 'E_ABORTED']);
    expect(fired.errorMessage).toMatch(/aborted by the caller/);
    const controller = new AbortController();
    controller.abort();
    const before = await remote.process(request('aborted', { options: { signal: controller.signal } }));
    expect([before.success, before.errorCode]).toEqual([false, 'E_ABORTED']);
  }, 20_000);

  it('ends a request without its own deadline at its mode\'s limit, and a pending one at dispose()', async () => {
    const limited = new LocalAIPipeline({ modelsDir: path.dirname(LITE), queue: { redis: 'redis://127.0.0.1:1', name: 'unreachable' }, modeLimits: { MINIMAL_RESOURCES: { maxProcessingTimeMs: 300 } } });
    const t0 = performance.now();
    const result = await limited.process(request('mode-limit', { mode: 'MINIMAL_RESOURCES' }));
    expect(performance.now() - t0).toBeLessThan(5_000);
    expect([result.success, result.errorCode]).toEqual([false, 'E_ABORTED']);
    expect(result.errorMessage).toMatch(/maxProcessingTime of 300 ms exceeded/);
    const pending = limited.process(request('pending'));
    setTimeout(() => limited.dispose(), 200);
    const ended = await pending;
    expect([ended.success, ended.errorCode]).toEqual([false, 'E_ABORTED']);
  }, 20_000);

  it('lets the Node process exit after dispose() (no reconnect timer left behind)', async () => {
    const scratch = await tempDir();
    try {
      const script = path.join(scratch.dir, 'exit.mts');
      await writeFile(
        script,
        `const { LocalAIPipeline } = await import(${JSON.stringify(pathToFileURL(path.join(ROOT, 'ts/pipeline/pipeline.ts')).href)});
const pipeline = new LocalAIPipeline({ queue: { redis: 'redis://127.0.0.1:1', name: 'unreachable' } });
const result = await pipeline.process({ id: 'exit', input: 'Once upon a time', taskType: 'generation', maxProcessingTime: 300 });
pipeline.dispose();
console.log('disposed ' + result.errorCode);\n`,
      );
      const child = spawn(process.execPath, ['--import', 'tsx', script], { cwd: ROOT });
      let out = '';
      let disposedAt = 0;
      child.stdout.on('data', (data: Buffer) => {
        out += data.toString();
        if (!disposedAt && out.includes('disposed')) disposedAt = performance.now();
      });
      const killer = setTimeout(() => child.kill('SIGKILL'), 30_000);
      const code = await new Promise<number | null>((resolve) => child.on('exit', (status) => resolve(status)));
      clearTimeout(killer);
      expect(out.trim()).toBe('disposed E_ABORTED');
      expect(code).toBe(0);
      // Connections stop at their next attempt (ioredis backs off at most 2 s between them).
      expect(performance.now() - disposedAt).toBeLessThan(8_000);
    } finally {
      await scratch.cleanup();
    }
  }, 40_000);
});
