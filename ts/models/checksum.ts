/**
 * Streaming sha256 of weight files (never reads a whole file into memory).
 */
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';

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

/**
 * The checksum of a set of weight files: the file's own sha256 when there is one file, otherwise the
 * sha256 of a `sha256sum`-style listing (`<hex>  <name>\n`, sorted by name).
 */
export function combineChecksums(files: readonly { name: string; sha256: string }[]): string {
  if (files.length === 1) return (files[0] as { sha256: string }).sha256;
  const listing = [...files]
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map((f) => `${f.sha256}  ${f.name}\n`)
    .join('');
  return createHash('sha256').update(listing).digest('hex');
}
