/**
 * bullmq and ioredis load only when a queue is used: a Node process whose module loader refuses them
 * imports the package and the browser entry, runs an in-process pipeline and CLI commands; only a
 * pipeline given a `queue`, startWorker and `phoenix-local worker` reach for them (and fail typed).
 * Runs the compiled package (dist/, `npm run build:ts`) as users load it.
 */
import { spawnSync } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LITE, ROOT, requireNativeAddon, tempDir } from './helpers.js';

const BIN = path.join(ROOT, 'bin/phoenix-local.js');
// A resolve hook (module.register) that makes importing bullmq or ioredis, directly or not, an error.
const HOOKS = `export async function resolve(specifier, context, next) {
  if (/^(bullmq|ioredis)(\\/|$)/.test(specifier)) throw new Error('refused to load ' + specifier);
  return next(specifier, context);
}\n`;
const REGISTER = `import { register } from 'node:module';\nregister('./hooks.mjs', import.meta.url);\n`;

describe('bullmq and ioredis are loaded lazily', () => {
  let scratch: Awaited<ReturnType<typeof tempDir>>;
  let register: string;

  beforeAll(async () => {
    requireNativeAddon();
    scratch = await tempDir();
    await writeFile(path.join(scratch.dir, 'hooks.mjs'), HOOKS);
    register = path.join(scratch.dir, 'register.mjs');
    await writeFile(register, REGISTER);
  });
  afterAll(async () => scratch?.cleanup());

  const node = (args: string[]) => spawnSync(process.execPath, ['--import', pathToFileURL(register).href, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });

  it('an in-process pipeline and the browser entry never import them; a queue pipeline and startWorker do', async () => {
    const script = path.join(scratch.dir, 'main.mjs');
    await writeFile(
      script,
      `const { LocalAIPipeline, startWorker } = await import(${JSON.stringify(pathToFileURL(path.join(ROOT, 'dist/index.js')).href)});
await import(${JSON.stringify(pathToFileURL(path.join(ROOT, 'dist/browser.js')).href)});
const modelsDir = ${JSON.stringify(path.dirname(LITE))};
const request = { id: 'r', input: 'Once upon a time', taskType: 'generation', options: { maxTokens: 4, temperature: 0 } };
const local = new LocalAIPipeline({ modelsDir });
const inProcess = await local.process(request);
await local.getSystemStatus();
local.dispose();
const remote = new LocalAIPipeline({ modelsDir, queue: { redis: 'redis://127.0.0.1:1', name: 'lazy' } });
const queued = await remote.process(request);
remote.dispose();
const worker = await startWorker({ redis: 'redis://127.0.0.1:1' }).then(() => 'started', (e) => e.message);
console.log(JSON.stringify({ inProcess: inProcess.success, queued: [queued.errorCode, queued.errorMessage], worker }));\n`,
    );
    const run = node([script]);
    expect(run.status, run.stderr).toBe(0);
    const out = JSON.parse(run.stdout.trim().split('\n').pop()!);
    expect(out.inProcess).toBe(true);
    // The hook does refuse them: the queue paths are the ones that load them.
    expect(out.queued[0]).toBe('E_INTERNAL');
    expect(out.queued[1]).toMatch(/refused to load (bullmq|ioredis)/);
    expect(out.worker).toMatch(/refused to load (bullmq|ioredis)/);
  }, 60_000);

  it('CLI commands other than worker never import them', () => {
    const info = node([BIN, 'info', LITE]);
    expect(info.status, info.stderr).toBe(0);
    const worker = node([BIN, 'worker', '--redis', 'redis://127.0.0.1:1']);
    expect(worker.status).not.toBe(0);
    expect(worker.stderr).toMatch(/refused to load (bullmq|ioredis)/);
  }, 60_000);
});
