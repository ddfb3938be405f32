/**
 * Attacks on the hardened TypeScript side that its first fixes missed (issue 8, attack share).
 */
import { cpSync, mkdtempSync, readSync, openSync, writeSync, closeSync, rmSync, statSync, utimesSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { afterEach, describe, expect, it } from 'vitest';

import { LocalModelManager, MambaSSMEngine, PhoenixError } from '../ts/index.js';
import type { ModelMetadata } from '../ts/index.js';

const BUNDLED = fileURLToPath(new URL('../models/phoenix-ssm-lite', import.meta.url));
const folders: string[] = [];

afterEach(() => {
  for (const dir of folders.splice(0)) rmSync(dir, { recursive: true, force: true });
});

/** A models dir holding a copy of the bundled model as `lite`. */
function modelsDirWithCopy(): string {
  const dir = mkdtempSync(path.join(tmpdir(), 'phoenix-attack-'));
  folders.push(dir);
  cpSync(BUNDLED, path.join(dir, 'lite'), { recursive: true });
  return dir;
}

/** Flips one byte of `file` in place and puts its mtime back (as an attacker covering tracks would). */
function flipByteKeepingMtime(file: string, at: number): void {
  const before = statSync(file);
  const fd = openSync(file, 'r+');
  try {
    const byte = Buffer.alloc(1);
    readSync(fd, byte, 0, 1, at);
    byte[0] = (byte[0] as number) ^ 0x40;
    writeSync(fd, byte, 0, 1, at);
  } finally {
    closeSync(fd);
  }
  utimesSync(file, before.atime, before.mtime);
}

describe('a weight file changed between its checksum and the engine reading it', () => {
  it('is refused with E_CHECKSUM instead of being loaded and handed out', async () => {
    const dir = modelsDirWithCopy();
    const weights = path.join(dir, 'lite', 'model.safetensors');
    const real = new MambaSSMEngine();
    let loads = 0;
    // The engine is the real one; only the moment is staged: the bytes change after the manager
    // hashed them and before the core reads them (a race an attacker can win on a slow disk).
    const racing = new Proxy(real, {
      get(target, prop, receiver) {
        if (prop === 'loadModel') {
          return async (metadata: ModelMetadata) => {
            loads++;
            flipByteKeepingMtime(weights, statSync(weights).size - 100);
            return target.loadModel(metadata);
          };
        }
        const value = Reflect.get(target, prop, receiver) as unknown;
        return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
      },
    });
    const manager = new LocalModelManager({ modelsDir: dir, engines: [racing], measurePerformance: false });
    try {
      await manager.listModels(); // records the trusted checksums
      const error = await manager.loadModel('lite').then(
        () => undefined,
        (e: unknown) => e,
      );
      expect(loads).toBe(1);
      expect(error).toBeInstanceOf(PhoenixError);
      expect((error as PhoenixError).code).toBe('E_CHECKSUM');
      expect(manager.loadedModels()).toHaveLength(0);
      expect((await manager.getModelMetadata('lite')).status).toBe('corrupted');
    } finally {
      manager.dispose();
    }
  });
});
