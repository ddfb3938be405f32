/** Runs benches/worker.ts in a child process (one engine, one configuration) and reads its result. */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import type { WorkerJob, WorkerResult } from '../engines/types.js';

export class WorkerFailure extends Error {}

export async function runWorker(
  repoRoot: string,
  job: Omit<WorkerJob, 'resultOut'>,
  timeoutMs: number,
): Promise<WorkerResult> {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'phoenix-bench-'));
  const resultOut = path.join(tmp, 'result.json');
  const full: WorkerJob = { ...job, resultOut };
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    // Never let node-llama-cpp fetch or build llama.cpp; the prebuilt npm binaries are all we use.
    NODE_LLAMA_CPP_SKIP_DOWNLOAD: 'true',
  };
  // candle/rayon size their pools from this; the binding's setThreads is called as well.
  if (job.engine.startsWith('phoenix-local')) env.RAYON_NUM_THREADS = String(job.threads);
  try {
    const output: string[] = [];
    const code = await new Promise<number | null>((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', 'tsx', path.join('benches', 'worker.ts'), JSON.stringify(full)], {
        cwd: repoRoot,
        env,
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const collect = (chunk: Buffer) => output.push(chunk.toString());
      child.stdout.on('data', collect);
      child.stderr.on('data', collect);
      const timer = setTimeout(() => {
        output.push(`\n[bench] worker exceeded ${Math.round(timeoutMs / 1000)} s; killed\n`);
        child.kill('SIGKILL');
      }, timeoutMs);
      child.on('error', (error) => {
        clearTimeout(timer);
        reject(error);
      });
      child.on('close', (exitCode) => {
        clearTimeout(timer);
        resolve(exitCode);
      });
    });
    if (code !== 0) {
      const tail = output.join('').trim().split('\n').slice(-25).join('\n');
      throw new WorkerFailure(`${job.engine} worker (threads=${job.threads}, ${job.mode}) exited with ${code}:\n${tail}`);
    }
    return JSON.parse(readFileSync(resultOut, 'utf8')) as WorkerResult;
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}
