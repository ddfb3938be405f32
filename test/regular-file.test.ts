import { execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';

import { RegularFileError, readRegularFile, readRegularText } from '../ts/fs/regular-file.js';

const dir = mkdtempSync(join(tmpdir(), 'phoenix-regular-file-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

async function problemOf(path: string, max = 1024): Promise<string> {
  try {
    await readRegularFile(path, max);
  } catch (error) {
    expect(error).toBeInstanceOf(RegularFileError);
    return (error as RegularFileError).problem;
  }
  return 'read';
}

describe('readRegularFile', () => {
  it('reads a regular file, also through a symlink', async () => {
    writeFileSync(join(dir, 'a.txt'), 'hello');
    symlinkSync(join(dir, 'a.txt'), join(dir, 'link.txt'));
    expect(await readRegularText(join(dir, 'a.txt'), 5)).toBe('hello');
    expect(await readRegularText(join(dir, 'link.txt'), 5)).toBe('hello');
  });

  it('refuses a file over the cap without reading it', async () => {
    writeFileSync(join(dir, 'big.txt'), 'x'.repeat(100));
    expect(await problemOf(join(dir, 'big.txt'), 99)).toBe('too-large');
  });

  it('refuses a FIFO at once instead of waiting for a writer', async () => {
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const started = Date.now();
    expect(await problemOf(fifo)).toBe('not-regular');
    expect(Date.now() - started).toBeLessThan(5000);
  });

  it('refuses /dev/zero and a folder, and names a missing file', async () => {
    expect(await problemOf('/dev/zero')).toBe('not-regular');
    mkdirSync(join(dir, 'sub'));
    expect(await problemOf(join(dir, 'sub'))).toBe('not-regular');
    expect(await problemOf(join(dir, 'nope'))).toBe('missing');
  });
});
