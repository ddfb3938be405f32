/**
 * The `phoenix-local` CLI as users run it: `node bin/phoenix-local.js …` in child processes over the
 * compiled dist/ (built once here).
 */
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync } from 'node:fs';
import { readFile, mkdir, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

import { LITE, NO_WASM, ROOT, TINY, TINY_ORIGINAL, copyModel, readJson, requireNativeAddon, tempDir, type LiteReference, type TinyReference } from './helpers.js';

const BIN = path.join(ROOT, 'bin/phoenix-local.js');
let scratch: Awaited<ReturnType<typeof tempDir>>;
let modelsDir: string;
let liteRef: LiteReference;
let tinyRef: TinyReference;

interface Run {
  status: number | null;
  stdout: string;
  stderr: string;
  /** Order in which output arrived: 'out' / 'err' per chunk. */
  order: string[];
}

function cli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd: scratch.dir, env: { ...process.env, PHOENIX_MODELS_DIR: modelsDir, ...env } });
    const run: Run = { status: null, stdout: '', stderr: '', order: [] };
    child.stdout.on('data', (d: Buffer) => {
      run.stdout += d.toString();
      run.order.push('out');
    });
    child.stderr.on('data', (d: Buffer) => {
      run.stderr += d.toString();
      run.order.push('err');
    });
    child.on('error', reject);
    child.on('close', (status) => resolve({ ...run, status }));
  });
}

beforeAll(async () => {
  requireNativeAddon();
  const build = spawnSync(process.execPath, [path.join(ROOT, 'node_modules/typescript/bin/tsc'), '-p', path.join(ROOT, 'tsconfig.json')], { cwd: ROOT, encoding: 'utf8' });
  if (build.status !== 0) throw new Error(`tsc failed:\n${build.stdout}${build.stderr}`);
  scratch = await tempDir();
  modelsDir = path.join(scratch.dir, 'models');
  await mkdir(modelsDir);
  await copyModel(LITE, path.join(modelsDir, 'phoenix-ssm-lite'));
  await copyModel(TINY, path.join(modelsDir, 'mamba1-tiny'));
  liteRef = await readJson<LiteReference>(path.join(LITE, 'reference.json'));
  tinyRef = await readJson<TinyReference>(path.join(TINY, 'reference.json'));
});

afterAll(async () => scratch?.cleanup());

describe('phoenix-local CLI', () => {
  it('list shows every model; --json gives metadata', async () => {
    const table = await cli(['list']);
    expect(table.status).toBe(0);
    expect(table.stdout).toMatch(/^NAME\s+TYPE\s+FORMAT\s+SIZE\s+STATUS/);
    expect(table.stdout).toMatch(/phoenix-ssm-lite\s+mamba\s+hf-safetensors\s+14\.0 MiB\s+available/);
    const json = JSON.parse((await cli(['list', '--json'])).stdout) as { name: string; checksum: string }[];
    expect(json.map((m) => m.name)).toEqual(['mamba1-tiny', 'phoenix-ssm-lite']);
    expect(json[1]?.checksum).toBe('fa4054d97a452f4308b6230dbddde340afa4c7dff60000d3a5d47999da697896');
  });

  it('--models-dir overrides the env', async () => {
    await mkdir(path.join(scratch.dir, 'empty'), { recursive: true });
    const other = await cli(['list', '--models-dir', path.join(scratch.dir, 'empty')]);
    expect(other.status).toBe(0);
    expect(other.stdout).toMatch(/no models in/);
  });

  it('list fails (exit 1) naming a models dir that does not exist or is not a folder', async () => {
    const missing = path.join(scratch.dir, 'no-such-dir');
    const cases: [string[], Record<string, string>, RegExp][] = [
      [['list', '--models-dir', missing], {}, /\(--models-dir\) does not exist/],
      [['list', '--json'], { PHOENIX_MODELS_DIR: missing }, /\(\$PHOENIX_MODELS_DIR\) does not exist/],
      [['list', '--models-dir', BIN], {}, /\(--models-dir\) is not a folder/],
    ];
    for (const [args, env, message] of cases) {
      const run = await cli(args, env);
      expect({ args, status: run.status }).toEqual({ args, status: 1 });
      expect(run.stdout).toBe('');
      expect(run.stderr).toMatch(/^phoenix-local: E_MODEL_NOT_FOUND: models dir /m);
      expect(run.stderr).toMatch(message);
    }
  });

  it('info prints metadata, architecture, profile, and the backend chosen and why', async () => {
    const info = await cli(['info', 'phoenix-ssm-lite']);
    expect(info.status).toBe(0);
    expect(info.stdout).toMatch(/^name\s+phoenix-ssm-lite$/m);
    expect(info.stdout).toMatch(/^sha256\s+fa4054d9/m);
    expect(info.stdout).toMatch(/^architecture\s+6 layers, hidden 256/m);
    expect(info.stdout).toMatch(/^backend\s+native \(.*phoenix-local\..*\.node\)$/m);
    expect(info.stdout).toMatch(/^backend why\s+\S+/m);
    expect(info.stdout).toMatch(/^performance\s+load \d+ ms/m);
    expect(info.stderr).toMatch(/loading phoenix-ssm-lite/);
    const json = JSON.parse((await cli(['info', TINY_ORIGINAL, '--json', '--quiet'])).stdout) as Record<string, unknown>;
    expect(json).toMatchObject({ name: 'mamba1-tiny-original', format: 'state-spaces-pth', hasTokenizer: false, backend: { kind: 'native' } });
  });

  it('run streams the generated text to stdout before the stats line on stderr', async () => {
    const run = await cli(['run', 'phoenix-ssm-lite', liteRef.prompt, '--max-tokens', '24', '--temperature', '0', '--quiet']);
    expect(run.status).toBe(0);
    expect(run.stdout).toBe(liteRef.greedy_text);
    expect(run.order.filter((o) => o === 'out').length).toBeGreaterThan(1); // arrived in pieces
    expect(run.order.indexOf('out')).toBeLessThan(run.order.lastIndexOf('err'));
    expect(run.stderr).toMatch(/[\d.]+ tokens\/s — 24 generated, 10 prompt tokens, ttft [\d.]+ ms/);
  });

  it('run accepts a model folder path, sampling flags and repeated --stop', async () => {
    const run = await cli(['run', path.join(modelsDir, 'phoenix-ssm-lite'), 'Once upon a time', '-n', '40', '-t', '0.8', '--top-k', '40', '--top-p', '0.9', '--min-p', '0.05', '--repeat-penalty', '1.1', '--seed', '42', '--stop', '!', '--stop', '.']);
    expect(run.status).toBe(0);
    expect(run.stdout).not.toMatch(/[.!]/);
    const again = await cli(['run', path.join(modelsDir, 'phoenix-ssm-lite'), 'Once upon a time', '-n', '40', '-t', '0.8', '--top-k', '40', '--top-p', '0.9', '--min-p', '0.05', '--repeat-penalty', '1.1', '--seed', '42', '--stop', '!', '--stop', '.']);
    expect(again.stdout).toBe(run.stdout);
  });

  it('--save-state then --state in another process continues identically', async () => {
    const stateFile = path.join(scratch.dir, 'story.state');
    const head = await cli(['run', 'phoenix-ssm-lite', liteRef.prompt, '--max-tokens', '10', '--temperature', '0', '--save-state', stateFile, '-q']);
    expect(head.status).toBe(0);
    expect((await readFile(stateFile)).subarray(0, 8).toString()).toBe('PHXSTATE');
    const tail = await cli(['run', 'phoenix-ssm-lite', '--state', stateFile, '--max-tokens', '14', '--temperature', '0', '-q']);
    expect(tail.status).toBe(0);
    expect(head.stdout + tail.stdout).toBe(liteRef.greedy_text);
    const wrongModel = await cli(['run', 'mamba1-tiny', '--state', stateFile, '-q']);
    expect(wrongModel.status).toBe(1);
    expect(wrongModel.stderr).toMatch(/^phoenix-local: E_STATE_MISMATCH: /m);
  });

  it('info on a .gguf path shows what its header says: architecture, quantization, tensor types, context', async () => {
    const gguf = path.join(ROOT, 'test/fixtures/gguf-llama-tiny/llama-tiny.f16.gguf');
    const info = await cli(['info', gguf, '-q']);
    expect(info.status).toBe(0);
    expect(info.stdout).toMatch(/format\s+gguf/);
    expect(info.stdout).toMatch(/gguf\s+llama\b.*F16 \(tensors: 23 F16, 7 F32\), \d+ parameters, context 256/);
    expect(info.stdout).toMatch(/tokenizer\s+yes/);
  });

  it('a transformer and a hybrid run through the CLI on their engines; a KV-cache snapshot continues in another process', async () => {
    const llama = path.join(ROOT, 'test/fixtures/llama-tiny');
    const info = await cli(['info', llama, '-q']);
    expect(info.status).toBe(0);
    expect(info.stdout).toMatch(/family\s+llama \(transformer engine\)/);
    expect(info.stdout).toMatch(/context\s+256 tokens/);
    expect(info.stdout).toMatch(/per token of context/);
    const ref = await readJson<TinyReference>(path.join(llama, 'reference.json'));
    const whole = await cli(['run', llama, '--ids', ref.input_ids.join(','), '--max-tokens', '12', '-q']);
    const stateFile = path.join(scratch.dir, 'llama.state');
    const head = await cli(['run', llama, '--ids', ref.input_ids.join(','), '--max-tokens', '5', '--save-state', stateFile, '-q']);
    const tail = await cli(['run', llama, '--state', stateFile, '--max-tokens', '7', '-q']);
    expect([whole.status, head.status, tail.status]).toEqual([0, 0, 0]);
    expect(head.stdout + tail.stdout).toBe(whole.stdout);
    const tooLong = await cli(['run', llama, '--ids', ref.input_ids.join(','), '--max-tokens', '300', '-q']);
    expect(tooLong.status).not.toBe(0);
    expect(tooLong.stderr).toMatch(/E_INVALID_OPTION: .*256/);
    const granite = await cli(['info', path.join(ROOT, 'test/fixtures/granite-hybrid-tiny'), '-q']);
    expect(granite.stdout).toMatch(/family\s+granitemoehybrid \(hybrid engine\)/);
  });

  it('--kv-cache f16 keeps a transformer\'s cache in f16: info says so, a snapshot continues only with the same cache type', async () => {
    const llama = path.join(ROOT, 'test/fixtures/llama-tiny');
    const [full, half] = [await cli(['info', llama, '-q']), await cli(['info', llama, '-q', '--kv-cache', 'f16'])];
    expect([full.status, half.status]).toEqual([0, 0]);
    expect(full.stdout).toMatch(/architecture .*kvCacheDtype f32/);
    expect(half.stdout).toMatch(/architecture .*kvCacheDtype f16/);
    const ref = await readJson<TinyReference>(path.join(llama, 'reference.json'));
    const ids = ref.input_ids.join(',');
    const whole = await cli(['run', llama, '--ids', ids, '--max-tokens', '12', '-q', '--kv-cache', 'f16']);
    const stateFile = path.join(scratch.dir, 'llama-f16.state');
    const head = await cli(['run', llama, '--ids', ids, '--max-tokens', '5', '--save-state', stateFile, '-q', '--kv-cache', 'f16']);
    const tail = await cli(['run', llama, '--state', stateFile, '--max-tokens', '7', '-q', '--kv-cache', 'f16']);
    expect([whole.status, head.status, tail.status]).toEqual([0, 0, 0]);
    expect(head.stdout + tail.stdout).toBe(whole.stdout);
    const mismatched = await cli(['run', llama, '--state', stateFile, '--max-tokens', '7', '-q']);
    expect(mismatched.status).toBe(1);
    expect(mismatched.stderr).toMatch(/E_STATE_MISMATCH: state: the snapshot's state is f16, this model's is f32 \(saved with another --kv-cache flag, or not by this model\)/);
    const bad = await cli(['run', llama, '--ids', ids, '-q', '--kv-cache', 'bf16']);
    expect(bad.status).toBe(2);
    expect(bad.stderr).toMatch(/E_INVALID_OPTION: --kv-cache must be "f32" or "f16", got "bf16"/);
    expect((await cli(['run', '--help'])).stdout).toContain('--kv-cache f32|f16');
  });

  it('score --ids --json prints every position and every vocabulary column', async () => {
    const run = await cli(['score', 'mamba1-tiny', '--ids', tinyRef.input_ids.join(','), '--json', '-q']);
    expect(run.status).toBe(0);
    const out = JSON.parse(run.stdout) as { ids: number[]; logits: number[][] };
    expect(Object.keys(out)).toEqual(['ids', 'logits']);
    expect(out.ids).toEqual(tinyRef.input_ids);
    expect(out.logits).toHaveLength(tinyRef.input_ids.length);
    for (const row of out.logits) expect(row).toHaveLength(512);
    let worst = 0;
    tinyRef.logits.forEach((row, i) => row.forEach((v, j) => (worst = Math.max(worst, Math.abs((out.logits[i]?.[j] as number) - v)))));
    expect(worst).toBeLessThan(1e-3);
  });

  it('an output that cannot be written (a full disk) is exit 1 with a one-line error, not a stack trace', () => {
    const full = openSync('/dev/full', 'w');
    try {
      const run = spawnSync(process.execPath, [BIN, 'list', '-q'], { cwd: scratch.dir, env: { ...process.env, PHOENIX_MODELS_DIR: modelsDir }, stdio: ['ignore', full, 'pipe'], encoding: 'utf8' });
      expect(run.status).toBe(1);
      expect(run.stderr).toBe('phoenix-local: E_INTERNAL: cannot write the output to stdout (ENOSPC)\n');
    } finally {
      closeSync(full);
    }
  });

  it('score --json hands each row on before writing the next (a pipe read slowly holds a row, not every row)', async () => {
    const { main } = await import('../ts/cli/main.js');
    let stdout = '';
    const waitedAt: number[] = [];
    const io = {
      stdout: {
        write: (t: string) => void (stdout += t),
        drained: () => {
          waitedAt.push(stdout.length);
          return new Promise<void>((resolve) => setTimeout(resolve, 2));
        },
      },
      stderr: { write: () => undefined },
    };
    const ids = tinyRef.input_ids.join(',');
    expect(await main(['score', path.join(modelsDir, 'mamba1-tiny'), '--ids', ids, '--json', '-q'], io)).toBe(0);
    const rows = (JSON.parse(stdout) as { logits: number[][] }).logits.length;
    expect(rows).toBe(tinyRef.input_ids.length);
    // One wait per row, each right after that row: the first k rows written, nothing more.
    expect(waitedAt.map((at) => (JSON.parse(`${stdout.slice(0, at)}]}`) as { logits: unknown[] }).logits.length)).toEqual(Array.from({ length: rows }, (_, k) => k + 1));
  });

  it('score --text tokenizes; without --json prints logprobs and perplexity', async () => {
    const json = JSON.parse((await cli(['score', 'phoenix-ssm-lite', '--text', liteRef.prompt, '--json', '-q'])).stdout) as { ids: number[]; logits: number[][] };
    expect(json.ids).toEqual(liteRef.input_ids);
    expect(json.logits[0]).toHaveLength(4096);
    const human = await cli(['score', 'phoenix-ssm-lite', '--text', liteRef.prompt, '-q']);
    expect(human.stdout).toMatch(/^perplexity \d+\.\d{4}$/m);
  });

  it('score without --json prints what it printed when it computed from the logits: each position, logprob, next argmax', async () => {
    const json = JSON.parse((await cli(['score', 'mamba1-tiny', '--ids', tinyRef.input_ids.join(','), '--json', '-q'])).stdout) as { ids: number[]; logits: number[][] };
    const human = (await cli(['score', 'mamba1-tiny', '--ids', tinyRef.input_ids.join(','), '-q'])).stdout;
    // The text the CLI printed before the core computed these facts, from the --json logits.
    const lines = json.ids.map((id, i) => {
      const row = json.logits[i] as number[];
      let best = 0;
      for (let j = 1; j < row.length; j++) if ((row[j] as number) > (row[best] as number)) best = j;
      const prev = json.logits[i - 1] as number[];
      const max = i > 0 ? Math.max(...prev) : 0;
      const lp = i > 0 ? ((prev[id] as number) - max - Math.log(prev.reduce((sum, v) => sum + Math.exp(v - max), 0))).toFixed(4) : '—';
      return `${String(i).padStart(4)}  id ${String(id).padStart(6)}  logprob ${lp.padStart(9)}  next argmax ${best}`;
    });
    expect(human.split('\n').slice(1, 1 + lines.length)).toEqual(lines);
  });

  it('a model that cannot be read shows its size as unknown, not 0 B (info and list)', async () => {
    const broken = path.join(scratch.dir, 'broken-model');
    await mkdir(broken, { recursive: true });
    await writeFile(path.join(broken, 'config.json'), '{ not json');
    const info = await cli(['info', broken, '-q']);
    expect(info.status).toBe(1);
    expect(info.stdout).toMatch(/^size +unknown \(the model could not be read: see error\)$/m);
    expect(info.stdout).not.toMatch(/0 B/);
    expect(info.stderr).toMatch(/^phoenix-local: E_BAD_CONFIG: /m);
    const listed = await cli(['list'], { PHOENIX_MODELS_DIR: scratch.dir });
    const row = listed.stdout.split('\n').find((line) => line.startsWith('broken-model'));
    expect(row).toBeDefined();
    expect(row).not.toMatch(/ 0 B /);
    expect(row).toMatch(/ \? +error /);
    // A config.json a load would refuse (hidden_size not a number, a negative layer count) is an
    // error already when listed or described without loading, not "available".
    const badConfig = await copyModel(TINY, path.join(scratch.dir, 'bad-config-model'));
    const config = JSON.parse(await readFile(path.join(badConfig, 'config.json'), 'utf8')) as Record<string, unknown>;
    await writeFile(path.join(badConfig, 'config.json'), JSON.stringify({ ...config, hidden_size: 'big', num_hidden_layers: -3 }));
    const described = await cli(['info', badConfig, '--no-load', '-q']);
    expect(described.status).toBe(1);
    expect(described.stdout).toMatch(/^status +error$/m);
    expect(described.stderr).toMatch(/^phoenix-local: E_BAD_CONFIG: .*config\.json/m);
    const relisted = await cli(['list'], { PHOENIX_MODELS_DIR: scratch.dir });
    expect(relisted.stdout.split('\n').find((line) => line.startsWith('bad-config-model'))).toMatch(/ error /);
  });

  it('failures: non-zero exit, code and message on stderr', async () => {
    const cases: [string[], number, RegExp][] = [
      [['info', 'no-such-model'], 1, /^phoenix-local: E_MODEL_NOT_FOUND: .*no-such-model/m],
      [['run', '../escape', 'x'], 1, /^phoenix-local: E_MODEL_NOT_FOUND: /m],
      [['run', 'phoenix-ssm-lite', 'x', '--max-tokens', '0'], 2, /^phoenix-local: E_INVALID_OPTION: --max-tokens must be an integer/m],
      [['run', 'phoenix-ssm-lite', 'x', '--temperature', 'hot'], 2, /^phoenix-local: E_INVALID_OPTION: --temperature must be a number/m],
      [['run', 'phoenix-ssm-lite', ''], 2, /^phoenix-local: E_INVALID_OPTION: prompt is empty/m],
      [['run', TINY_ORIGINAL, 'hello'], 1, /^phoenix-local: E_TOKENIZER: /m],
      [['score', 'phoenix-ssm-lite'], 2, /^phoenix-local: E_INVALID_OPTION: score needs exactly one of/m],
      [['score', 'phoenix-ssm-lite', '--ids', '1,x'], 2, /^phoenix-local: E_INVALID_OPTION: --ids/m],
      [['score', 'phoenix-ssm-lite', '--ids', '1,,2'], 2, /^phoenix-local: E_INVALID_OPTION: --ids must be comma-separated non-negative integers, got "1,,2"/m],
      [['score', 'phoenix-ssm-lite', '--ids', '1,2,'], 2, /^phoenix-local: E_INVALID_OPTION: --ids/m],
      [['list', '--frobnicate'], 2, /^phoenix-local: E_INVALID_OPTION: unknown flag --frobnicate \(see phoenix-local --help; a prompt that starts with "-" goes after "--"/m],
      [['run', 'phoenix-ssm-lite', 'x', '--max-token', '5'], 2, /^phoenix-local: E_INVALID_OPTION: unknown flag --max-token \(did you mean --max-tokens\?\)$/m],
      [['explode'], 2, /unknown command "explode"/],
      [['run', 'phoenix-ssm-lite', 'x', '--state', '/nonexistent.state'], 2, /E_INVALID_OPTION: --state \/nonexistent\.state: no such file/],
      // info prints what it can (the backend line says why), then fails as run does.
      [['info', 'phoenix-ssm-lite', '--backend', 'wasm'], 1, /^phoenix-local: E_BACKEND_UNAVAILABLE: backend "wasm" .*WASM build not found/m],
      [['run', 'phoenix-ssm-lite', 'x', '--backend', 'wasm'], 1, /^phoenix-local: E_BACKEND_UNAVAILABLE: backend "wasm" .*WASM build not found/m],
    ];
    for (const [args, status, stderr] of cases) {
      // A WASM build may exist in this checkout; point the loader at a missing one for these cases.
      const run = await cli(args, { PHOENIX_WASM_PATH: NO_WASM });
      expect({ args, status: run.status }).toEqual({ args, status });
      expect(run.stderr).toMatch(stderr);
    }
  });

  it("negative numbers reach the library's range checks before any model loads (exit 2, its typed error), in both flag forms", async () => {
    const cases: [string[], RegExp][] = [
      [['--temperature', '-1'], /--temperature must be/],
      [['-t', '-1'], /--temperature must be/],
      [['--temperature=-1'], /--temperature must be/],
      [['--seed', '-3'], /--seed must be/],
      [['--top-k', '-5'], /--top-k must be/],
      [['-n', '-2'], /--max-tokens must be/],
      [['--repeat-penalty', '-1.5'], /--repeat-penalty must be/],
    ];
    for (const [flags, message] of cases) {
      // A model that does not exist: a check after loading would fail with E_MODEL_NOT_FOUND instead.
      const run = await cli(['run', 'no-such-model', 'Once', ...flags, '-q']);
      expect({ flags, status: run.status }).toEqual({ flags, status: 2 });
      expect(run.stderr).toMatch(/^phoenix-local: E_INVALID_OPTION: /m);
      expect(run.stderr).toMatch(message);
    }
    // --threads is a count: anything else is a usage error naming the flag and what was typed.
    for (const [command, value] of [['run', '-1'], ['info', '-2'], ['score', '1.5'], ['run', '1e400']] as const) {
      const args = command === 'run' ? ['run', 'phoenix-ssm-lite', 'Once'] : [command, 'phoenix-ssm-lite', ...(command === 'score' ? ['x'] : [])];
      const threads = await cli([...args, '--threads', value, '-q']);
      expect({ command, value, status: threads.status }).toEqual({ command, value, status: 2 });
      expect(threads.stderr).toContain(`phoenix-local: E_INVALID_OPTION: --threads must be a whole number ≥ 0, got "${value}"`);
    }
    // Beyond the core's limit: the core's bound, before loading for `run`.
    const huge = await cli(['run', 'phoenix-ssm-lite', 'Once', '--threads', '100000', '-q']);
    expect(huge.status).toBe(2);
    expect(huge.stderr).toMatch(/E_INVALID_OPTION: .*got 100000/);
    // Any value may start with a dash, not only numbers.
    const dashText = await cli(['score', 'phoenix-ssm-lite', '--text', '-1 is negative', '--json', '-q']);
    expect(dashText.status).toBe(0);
    expect((JSON.parse(dashText.stdout) as { ids: number[] }).ids.length).toBeGreaterThan(1);
    // A negative value is still a value: the prompt after it is not mistaken for one.
    const ok = await cli(['run', 'phoenix-ssm-lite', '--max-tokens', '3', '--top-k', '-0', liteRef.prompt, '-t', '0', '-q']);
    expect(ok.status).toBe(0);
    expect(liteRef.greedy_text.startsWith(ok.stdout)).toBe(true);
  });

  it('more --threads than CPUs runs, with a note on stderr', async () => {
    const over = availableParallelism() + 1;
    const run = await cli(['run', 'phoenix-ssm-lite', 'Once', '-n', '2', '-t', '0', '-q', '--threads', String(over)]);
    expect(run.status, run.stderr).toBe(0);
    expect(run.stderr).toContain(`note: --threads ${over} is more than the ${over - 1} CPUs here`);
    const fits = await cli(['run', 'phoenix-ssm-lite', 'Once', '-n', '2', '-t', '0', '-q', '--threads', '1']);
    expect(fits.stderr).not.toContain('note: --threads');
    // info reports the threads in effect, with or without loading the model.
    for (const load of [[], ['--no-load']]) {
      const info = await cli(['info', 'phoenix-ssm-lite', '-q', '--threads', '1', ...load]);
      expect(info.stdout).toMatch(/^core\s+v\S+, simd \S+, 1 thread$/m);
    }
  });

  it('usage errors exit 2 before any model is loaded', async () => {
    const missingDir = path.join(scratch.dir, 'no-such-dir', 'out.state');
    const cases: [string[], RegExp][] = [
      [['run', 'phoenix-ssm-lite', 'x', '--frobnicate'], /unknown flag --frobnicate/],
      [['run', 'phoenix-ssm-lite', 'x', '--seed'], /--seed needs a value/],
      [['run', 'phoenix-ssm-lite', 'x', '--seed', '--quiet'], /--seed needs a value/],
      [['run', 'phoenix-ssm-lite', 'x', '-n', '-q'], /-n needs a value/],
      [['run', 'phoenix-ssm-lite', 'x', '--seed', '0x10'], /--seed must be a number, got "0x10"/],
      [['run', 'phoenix-ssm-lite', 'x', '--temperature', '1,5'], /--temperature must be a number/],
      [['run', 'phoenix-ssm-lite', 'x', '--threads', 'many'], /--threads must be a number/],
      [['run', 'phoenix-ssm-lite'], /missing "<prompt>"/],
      [['run'], /missing <model>/],
      [['score'], /missing <model>/],
      [['run', 'https://example.com/m.gguf', 'x'], /is a URL: phoenix-local runs local files only/],
      [['score', 'phoenix-ssm-lite', '--text', 'a', 'b'], /--text or as an argument, not both/],
      [['score', 'phoenix-ssm-lite', '--ids', '1,2', '--temperature', '0'], /score does not take --temperature/],
      [['score', 'phoenix-ssm-lite', '--ids', '1,2', '--int8-prompt'], /score does not take --int8-prompt/],
      [['info', 'phoenix-ssm-lite', '--max-tokens', '4'], /info does not take --max-tokens/],
      [['list', '--save-state', 'x'], /list does not take --save-state/],
      [['list', 'phoenix-ssm-lite'], /list takes no arguments/],
      [['list', '--threads', '-1'], /list does not take --threads/],
      [['info', 'phoenix-ssm-lite', 'extra'], /info takes at most 1 argument/],
      [['run', 'phoenix-ssm-lite', 'x', '--save-state', missingDir], /--save-state .*out\.state: folder .*no-such-dir does not exist/],
      [['run', 'phoenix-ssm-lite', 'x', '--save-state', scratch.dir], /--save-state .*: is a folder/],
      [['run', 'phoenix-ssm-lite', 'x', '--save-state', '/dev/null'], /--save-state \/dev\/null: is not a regular file/],
      // Permission bits say yes (root passes access()), but nothing can be created there: tried, not guessed.
      [['run', 'phoenix-ssm-lite', 'x', '--save-state', '/proc/phoenix.state'], /--save-state \/proc\/phoenix\.state: cannot be created \(ENOENT\)/],
      [['run', 'phoenix-ssm-lite', ''], /prompt is empty/],
      [['score', 'phoenix-ssm-lite', '--text', ''], /score needs a non-empty text/],
      [['run', 'phoenix-ssm-lite', 'x', '--state', path.join(scratch.dir, 'absent.state')], /--state .*absent\.state: no such file/],
      [['run', 'phoenix-ssm-lite', 'x', '--state', scratch.dir], /--state .*: not a regular file/],
    ];
    for (const [args, message] of cases) {
      const run = await cli(args);
      expect({ args, status: run.status }).toEqual({ args, status: 2 });
      expect(run.stderr).toMatch(/^phoenix-local: E_INVALID_OPTION: /m);
      expect(run.stderr).toMatch(message);
      expect(run.stderr).not.toMatch(/loading|checksumming/);
      expect(run.stdout).toBe('');
    }
  });

  it("the core's refusals of flag values name the flags", async () => {
    const tiny = path.join(ROOT, 'test/fixtures/llama-tiny');
    const long = await cli(['run', tiny, 'x', '-n', '9000', '-q']);
    expect(long.status).toBe(2);
    expect(long.stderr).toMatch(/^phoenix-local: E_INVALID_OPTION: --max-tokens: \d+ tokens? of context plus --max-tokens 9000 exceed the model's context of 256 tokens/);
    expect(long.stderr).not.toContain('maxTokens');
    // A bad PHOENIX_BACKEND is the usage error a bad --backend is.
    const env = await cli(['list'], { PHOENIX_BACKEND: 'bogus' });
    expect([env.status, env.stderr.trim()]).toEqual([2, 'phoenix-local: E_INVALID_OPTION: PHOENIX_BACKEND must be "native", "wasm" or "auto", got "bogus"']);
    // A path naming a .gguf that is not there is a missing file, not a folder.
    const gguf = await cli(['run', path.join(scratch.dir, 'absent.gguf'), 'x', '-q']);
    expect([gguf.status, gguf.stderr]).toEqual([1, expect.stringMatching(/^phoenix-local: E_MODEL_NOT_FOUND: model file \S*absent\.gguf does not exist/)]);
  });

  it('checking a --save-state path leaves nothing behind when the run then fails', async () => {
    const file = path.join(scratch.dir, 'never-written.state');
    const run = await cli(['run', 'phoenix-ssm-lite', 'x', '--kv-cache', 'f8', '--save-state', file, '-q']);
    expect(run.status).toBe(2);
    expect(run.stderr).toMatch(/--kv-cache/);
    expect(existsSync(file)).toBe(false);
  });

  it('--int8-prompt changes nothing for f32 weights (it concerns quantized ones)', async () => {
    const args = ['run', 'phoenix-ssm-lite', 'Once upon a time', '-n', '12', '-t', '0', '-q'];
    const [plain, int8] = [await cli(args), await cli([...args, '--int8-prompt'])];
    expect(plain.status, plain.stderr).toBe(0);
    expect(int8.status, int8.stderr).toBe(0);
    expect(int8.stdout).toBe(plain.stdout);
    expect(plain.stdout.length).toBeGreaterThan(0);
  });

  it('--no-mmap reads the weights into memory: the same text; list takes no such flag', async () => {
    const args = ['run', 'phoenix-ssm-lite', 'Once upon a time', '-n', '12', '-t', '0', '-q'];
    const [mapped, read] = [await cli(args), await cli([...args, '--no-mmap'])];
    expect([mapped.status, read.status], read.stderr).toEqual([0, 0]);
    expect(read.stdout).toBe(mapped.stdout);
    expect((await cli(['run', '--help'])).stdout).toContain('--no-mmap');
    expect((await cli(['list', '--no-mmap'])).status).toBe(2);
  });

  it('every command has its own --help (exit 0, stdout), also as `help <command>`', async () => {
    for (const command of ['list', 'info', 'run', 'score']) {
      for (const args of [[command, '--help'], [command, '-h'], ['help', command], [command, 'phoenix-ssm-lite', 'x', '--help']]) {
        const run = await cli(args);
        expect({ args, status: run.status }).toEqual({ args, status: 0 });
        expect(run.stdout).toMatch(new RegExp(`^Usage: phoenix-local ${command} `));
        expect(run.stdout).not.toMatch(/^Commands:/m);
        expect(run.stderr).toBe('');
      }
    }
    expect((await cli(['run', '--help'])).stdout).toMatch(/--save-state <file>/);
    // Each help lists the flags its command takes: list refuses --threads, so its help omits it.
    expect((await cli(['list', '--help'])).stdout).not.toContain('--threads');
    for (const command of ['info', 'run', 'score', 'chat', 'worker']) expect((await cli([command, '--help'])).stdout).toContain('--threads <n>');
    // score's text may follow the model as an argument; its help says so.
    expect((await cli(['score', '--help'])).stdout).toContain('phoenix-local score <model> "<text>"');
  });

  it('PHOENIX_BACKEND=wasm is honoured and reported by info', async () => {
    const info = await cli(['info', 'phoenix-ssm-lite', '--no-load'], { PHOENIX_BACKEND: 'wasm', PHOENIX_WASM_PATH: NO_WASM });
    expect(info.stdout).toMatch(/^backend\s+unavailable: backend "wasm" \(PHOENIX_BACKEND=wasm\) cannot be loaded/m);
    // The model is described by that backend too: it cannot be read, and info fails.
    expect(info.stdout).toMatch(/^status\s+error$/m);
    expect([info.status, info.stderr]).toEqual([1, expect.stringMatching(/^phoenix-local: E_BACKEND_UNAVAILABLE: /)]);
    // list has nothing it could run: it fails rather than show models available through another backend.
    const list = await cli(['list'], { PHOENIX_BACKEND: 'wasm', PHOENIX_WASM_PATH: NO_WASM });
    expect([list.status, list.stdout]).toEqual([1, '']);
    expect(list.stderr).toMatch(/^phoenix-local: E_BACKEND_UNAVAILABLE: backend "wasm" \(PHOENIX_BACKEND=wasm\)/);
  });

  it('--help, --version, no command', async () => {
    expect((await cli(['--help'])).stdout).toMatch(/^Usage: phoenix-local/);
    expect((await cli(['--version'])).stdout).toMatch(/^phoenix-local \d+\.\d+\.\d+/);
    const none = await cli([]);
    expect(none.status).toBe(2);
    expect(none.stderr).toMatch(/^Usage/);
  });

  it('npx phoenix-local works in the repo', () => {
    const run = spawnSync('npx', ['--no-install', 'phoenix-local', 'list'], { cwd: ROOT, encoding: 'utf8', env: { ...process.env, PHOENIX_MODELS_DIR: modelsDir } });
    expect(run.status).toBe(0);
    expect(run.stdout).toMatch(/phoenix-ssm-lite/);
  });
});
