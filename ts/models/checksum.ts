/**
 * Streaming sha256 of weight files (never reads a whole file into memory).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';

import { combineChecksums as combineWith } from './describe.js';

/** Progress of hashing one file. */
export type HashProgress = (bytesDone: number, bytesTotal: number) => void;

/** Hex sha256 of a file's bytes, streamed; `onProgress` is called about every 64 MiB and at the end. */
export async function sha256File(file: string, sizeBytes: number, onProgress?: HashProgress): Promise<string> {
  const hash = createHash('sha256');
  let done = 0;
  let reported = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 })) {
    hash.update(chunk as Buffer);
    done += (chunk as Buffer).length;
    if (onProgress && done - reported >= 64 << 20) {
      reported = done;
      onProgress(done, sizeBytes);
    }
  }
  onProgress?.(done, sizeBytes);
  return hash.digest('hex');
}

/** The checksum of a set of weight files (rule in ./describe.ts), hashed with node:crypto. */
export function combineChecksums(files: readonly { name: string; sha256: string }[]): string {
  return combineWith(files, (listing) => createHash('sha256').update(listing).digest('hex'));
}
