/**
 * llama.cpp built from source for this CPU (scripts/build-llama-native.sh: -march=native), through
 * benches/native/llama-driver.c: a child process that loads the GGUF once and answers one request per
 * line. Every request is timed here, around the pipe round trip, by the same loop as the other engines
 * (worker.ts); one line each way per token costs microseconds against milliseconds of decode.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createInterface, type Interface } from 'node:readline';

import { LLAMA_BACKEND, type BenchEngine, type GenerationTiming, type LoadOutcome } from './types.js';

const now = () => performance.now();

/** What the driver prints once the model and context are ready. */
export interface DriverReady {
  loadMs: number;
  weightBytes: number;
  params: number;
  vocab: number;
}

/** Parses the driver's "ready <load_ms> <weight_bytes> <n_params> <n_vocab>" line. */
export function parseDriverReady(line: string): DriverReady {
  const m = /^ready (\d+(?:\.\d+)?) (\d+) (\d+) (\d+)$/.exec(line.trim());
  if (!m) throw new Error(`llama.cpp driver: expected a "ready" line, got ${JSON.stringify(line.slice(0, 200))}`);
  return { loadMs: Number(m[1]), weightBytes: Number(m[2]), params: Number(m[3]), vocab: Number(m[4]) };
}

/** Parses a "tok <id>" answer. */
export function parseDriverToken(line: string): number {
  const m = /^tok (\d+)$/.exec(line.trim());
  if (!m) throw new Error(`llama.cpp driver: expected "tok <id>", got ${JSON.stringify(line.slice(0, 200))}`);
  return Number(m[1]);
}

export class LlamaCppNativeEngine implements BenchEngine {
  readonly name = 'llama.cpp' as const;
  readonly backend = LLAMA_BACKEND.native;
  private child?: ChildProcessWithoutNullStreams;
  private lines?: AsyncIterator<string>;
  private reader?: Interface;
  private ready?: DriverReady;
  private stderr = '';
  private spawnMs = 0;

  constructor(
    private readonly driver: string,
    private readonly ggufPath: string,
    private readonly threads: number,
    /** Tokens the context must hold: prompt + generated. */
    private readonly contextTokens: number,
  ) {}

  describe(): Record<string, unknown> {
    return {
      binding: 'llama.cpp built from source (GGML_NATIVE=ON, -march=native) via benches/native/llama-driver.c',
      driver: this.driver,
      params: this.ready?.params,
      weightBytes: this.ready?.weightBytes,
      processStartMs: this.spawnMs,
    };
  }

  weightBytes(): number | undefined {
    return this.ready?.weightBytes;
  }

  /** The driver's own resident set (no Node in it), from /proc; undefined off Linux. */
  engineRssMb(field: 'VmHWM' | 'VmRSS'): number | undefined {
    if (!this.child?.pid) return undefined;
    try {
      const status = readFileSync(`/proc/${this.child.pid}/status`, 'utf8');
      const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
      return match ? Number(match[1]) / 1024 : undefined;
    } catch {
      return undefined;
    }
  }

  private async readLine(): Promise<string> {
    const next = await this.lines!.next();
    if (next.done) throw new Error(`llama.cpp driver exited: ${this.stderr.trim().split('\n').slice(-5).join(' | ') || 'no message'}`);
    return next.value;
  }

  private async request(line: string): Promise<string> {
    if (!this.child) throw new Error('llama.cpp native engine used before load()');
    this.child.stdin.write(line + '\n');
    return this.readLine();
  }

  async load(): Promise<LoadOutcome> {
    const t0 = now();
    const ctx = Math.max(64, this.contextTokens + 16);
    this.child = spawn(this.driver, [this.ggufPath, String(this.threads), String(ctx)], { stdio: ['pipe', 'pipe', 'pipe'] });
    this.child.stderr.on('data', (chunk: Buffer) => {
      this.stderr = (this.stderr + chunk.toString()).slice(-8192);
    });
    this.reader = createInterface({ input: this.child.stdout });
    this.lines = this.reader[Symbol.asyncIterator]();
    this.ready = parseDriverReady(await this.readLine());
    // The driver times load + context creation itself (the scope node-llama-cpp's row measures);
    // the rest of the wall time is process start, kept apart.
    this.spawnMs = now() - t0 - this.ready.loadMs;
    return { loadMs: this.ready.loadMs, breakdown: { model_and_context_ms: this.ready.loadMs, process_start_ms: this.spawnMs } };
  }

  async prefill(ids: readonly number[]): Promise<{ ms: number }> {
    const t0 = now();
    parseDriverToken(await this.request(`prefill ${ids.length} ${ids.join(' ')}`));
    return { ms: now() - t0 };
  }

  async generate(ids: readonly number[], decodeSteps: number): Promise<GenerationTiming> {
    const t0 = now();
    let token = parseDriverToken(await this.request(`prefill ${ids.length} ${ids.join(' ')}`));
    const ttftMs = now() - t0;
    const tokens = [token];
    const t1 = now();
    for (let step = 0; step < decodeSteps; step++) {
      token = parseDriverToken(await this.request(`step ${token}`));
      tokens.push(token);
    }
    return { ttftMs, decodeMs: now() - t1, decodeSteps, tokens };
  }

  async logits(ids: readonly number[]): Promise<Float32Array> {
    const tmp = mkdtempSync(path.join(os.tmpdir(), 'phoenix-llama-logits-'));
    try {
      const file = path.join(tmp, 'logits.f32');
      const answer = await this.request(`logits ${file} ${ids.length} ${ids.join(' ')}`);
      const m = /^ok (\d+)$/.exec(answer.trim());
      if (!m) throw new Error(`llama.cpp driver: expected "ok <n_vocab>", got ${JSON.stringify(answer.slice(0, 200))}`);
      const bytes = readFileSync(file);
      if (bytes.byteLength !== ids.length * Number(m[1]) * 4) throw new Error(`llama.cpp driver wrote ${bytes.byteLength} bytes of logits, expected ${ids.length} x ${m[1]} floats`);
      return new Float32Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    } finally {
      rmSync(tmp, { recursive: true, force: true });
    }
  }

  async dispose(): Promise<void> {
    const child = this.child;
    if (!child) return;
    const exited = new Promise<void>((resolve) => child.once('close', () => resolve()));
    child.stdin.end('quit\n');
    await exited;
    this.reader?.close();
  }
}
