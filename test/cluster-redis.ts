/**
 * A throwaway Redis for the cluster tests: Debian's `redis-server` on 127.0.0.1, a free port, its own
 * temp dir, persistence on (append-only file), so a test can stop and restart it without losing jobs.
 *
 * Tests skip (saying why) when `redis-server` is not installed, except under CI (`process.env.CI`),
 * where a missing server fails them: `.ci/run` installs it.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';

import { copyModel, requireNativeAddon, tempDir } from './helpers.js';

export const REDIS_SERVER = process.env.PHOENIX_REDIS_SERVER ?? 'redis-server';
export const REDIS_AVAILABLE = spawnSync(REDIS_SERVER, ['--version'], { stdio: 'ignore' }).status === 0;
/** Under CI a missing redis-server fails the cluster tests instead of skipping them. */
export const REDIS_REQUIRED = Boolean(process.env.CI);

/** Logs why cluster tests are skipped; returns whether they must be (never under CI). */
export function skipWithoutRedis(file: string): boolean {
  if (REDIS_AVAILABLE || REDIS_REQUIRED) return false;
  console.warn(`SKIPPED ${file}: needs ${REDIS_SERVER} (apt-get install redis-server)`);
  return true;
}

/** A free TCP port on 127.0.0.1 (the OS picks it; released just before redis-server binds it). */
async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number };
      server.close(() => resolve(port));
    });
  });
}

/** A running redis-server; {@link stop} ends it cleanly (the append-only file is flushed), {@link start} brings it back on the same port and data. */
export class TestRedis {
  readonly dir: string;
  readonly port: number;
  #child: ChildProcess | undefined;

  private constructor(dir: string, port: number) {
    this.dir = dir;
    this.port = port;
  }

  /** Starts a fresh server in a new temp dir. */
  static async create(): Promise<TestRedis> {
    if (!REDIS_AVAILABLE) throw new Error(`${REDIS_SERVER} is not installed (apt-get install redis-server)`);
    const dir = mkdtempSync(path.join(tmpdir(), 'phoenix-redis-'));
    let lastError: unknown;
    for (let attempt = 0; attempt < 5; attempt++) {
      const redis = new TestRedis(dir, await freePort());
      try {
        await redis.start();
        return redis;
      } catch (error) {
        lastError = error; // the port was taken between picking and binding: pick another
      }
    }
    rmSync(dir, { recursive: true, force: true });
    throw lastError;
  }

  get url(): string {
    return `redis://127.0.0.1:${this.port}`;
  }

  get running(): boolean {
    return this.#child !== undefined;
  }

  /** Starts the server (again) on this port and dir; resolves once it accepts connections. */
  async start(): Promise<void> {
    if (this.#child) return;
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--dir', this.dir, '--appendonly', 'yes', '--save', '', '--daemonize', 'no', '--protected-mode', 'yes', '--maxmemory-policy', 'noeviction'];
    const child = spawn(REDIS_SERVER, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => fail(new Error(`redis-server did not start within 10 s:\n${log}`)), 10_000);
      const fail = (error: Error): void => {
        clearTimeout(timer);
        child.kill('SIGKILL');
        reject(error);
      };
      const onData = (data: Buffer): void => {
        log += data.toString();
        if (log.includes('Ready to accept connections')) {
          clearTimeout(timer);
          resolve();
        }
      };
      child.stdout.on('data', onData);
      child.stderr.on('data', onData);
      child.once('error', fail);
      child.once('exit', (code) => fail(new Error(`redis-server exited with ${code} before it was ready:\n${log}`)));
    });
    child.removeAllListeners('exit');
    child.stdout?.removeAllListeners('data').resume();
    child.stderr?.removeAllListeners('data').resume();
    this.#child = child;
  }

  /** Shuts the server down with SIGTERM (it writes its append-only file first) and waits for it to exit. */
  async stop(): Promise<void> {
    const child = this.#child;
    if (!child) return;
    this.#child = undefined;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGTERM');
    await exited;
  }

  /** Stops the server and deletes its data. */
  async dispose(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/**
 * What most cluster tests start from: a fresh {@link TestRedis} and a temp dir whose `models/` holds
 * copies of `models` (name → model folder). The caller disposes `redis` and cleans `scratch` up.
 */
export async function clusterScene(models: Record<string, string>): Promise<{ redis: TestRedis; scratch: Awaited<ReturnType<typeof tempDir>>; modelsDir: string }> {
  requireNativeAddon();
  const redis = await TestRedis.create();
  const scratch = await tempDir();
  try {
    const modelsDir = path.join(scratch.dir, 'models');
    await mkdir(modelsDir);
    for (const [name, folder] of Object.entries(models)) await copyModel(folder, path.join(modelsDir, name));
    return { redis, scratch, modelsDir };
  } catch (error) {
    await redis.dispose();
    await scratch.cleanup();
    throw error;
  }
}
