/**
 * Streaming sha256 of weight files (never reads a whole file into memory), through an already opened
 * descriptor and never past its `fstat` size, so a file that grows while hashed cannot stretch the work.
 */
import { createHash } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';

import { openRegularFile } from '../fs/regular-file.js';
import { throwIfAborted } from './abort.js';
import { combineChecksums as combineWith } from './describe.js';

/** Progress of hashing one file. */
export type HashProgress = (bytesDone: number, bytesTotal: number) => void;

const CHUNK_BYTES = 1 << 20;
const PROGRESS_EVERY = 64 << 20;

/**
 * Hex sha256 of the first `sizeBytes` bytes of an opened file. `onProgress` is called about every
 * 64 MiB and at the end; `signal` stops the hashing between chunks (`E_ABORTED`).
 */
export async function sha256Handle(handle: FileHandle, sizeBytes: number, options: { onProgress?: HashProgress; signal?: AbortSignal; what?: string } = {}): Promise<string> {
  const hash = createHash('sha256');
  const buffer = Buffer.allocUnsafe(Math.min(CHUNK_BYTES, Math.max(sizeBytes, 1)));
  let done = 0;
  let reported = 0;
  while (done < sizeBytes) {
    throwIfAborted(options.signal, options.what ?? 'hashing');
    const { bytesRead } = await handle.read(buffer, 0, Math.min(buffer.length, sizeBytes - done), done);
    if (bytesRead === 0) break; // shrank while hashed: the digest differs, which is what it should say
    hash.update(buffer.subarray(0, bytesRead));
    done += bytesRead;
    if (options.onProgress && done - reported >= PROGRESS_EVERY) {
      reported = done;
      options.onProgress(done, sizeBytes);
    }
  }
  options.onProgress?.(done, sizeBytes);
  return hash.digest('hex');
}

/** Hex sha256 of a regular file's bytes (see {@link sha256Handle}); refuses FIFOs, devices and folders. */
export async function sha256File(file: string, onProgress?: HashProgress, signal?: AbortSignal): Promise<string> {
  const { handle, stats } = await openRegularFile(file);
  try {
    return await sha256Handle(handle, stats.size, { onProgress, signal, what: `hashing ${file}` });
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/** The checksum of a set of weight files (rule in ./describe.ts), hashed with node:crypto. */
export function combineChecksums(files: readonly { name: string; sha256: string }[]): string {
  return combineWith(files, (listing) => createHash('sha256').update(listing).digest('hex'));
}
