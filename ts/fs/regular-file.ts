/**
 * Bounded reads of regular files only: the one way phoenix-local's TypeScript side reads a file that a
 * model folder, a manifest or a user flag names.
 *
 * Why: `readFile` on a FIFO blocks forever, on `/dev/zero` it reads until memory runs out, and on a
 * 160 KB README a careless parser can spend a minute. Here the file is opened with `O_NONBLOCK` (so a
 * FIFO's open does not wait for a writer), checked with `fstat` on the opened descriptor (no race with a
 * swap between check and open), refused unless it is a regular file, and read up to a byte cap — a file
 * that grows past its `fstat` size while read is still cut at the cap.
 */
import { constants, type Stats } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';

/** Why a file could not be read; callers turn it into their own typed error. */
export type RegularFileProblem = 'missing' | 'not-regular' | 'too-large' | 'unreadable';

export class RegularFileError extends Error {
  constructor(
    readonly problem: RegularFileProblem,
    readonly path: string,
    message: string,
    readonly errno?: string,
  ) {
    super(message);
    this.name = 'RegularFileError';
  }
}

/** An opened regular file and the `fstat` of that very descriptor. */
export interface OpenedRegularFile {
  handle: FileHandle;
  stats: Stats;
}

function kindOf(stats: Stats): string {
  if (stats.isDirectory()) return 'a folder';
  if (stats.isFIFO()) return 'a FIFO';
  if (stats.isCharacterDevice()) return 'a character device';
  if (stats.isBlockDevice()) return 'a block device';
  if (stats.isSocket()) return 'a socket';
  return 'not a regular file';
}

/**
 * Opens `path` for reading and checks, on the opened descriptor, that it is a regular file.
 * The caller owns the handle (close it). Throws {@link RegularFileError}.
 */
export async function openRegularFile(path: string): Promise<OpenedRegularFile> {
  let handle: FileHandle;
  try {
    handle = await open(path, constants.O_RDONLY | constants.O_NONBLOCK);
  } catch (error) {
    const errno = (error as NodeJS.ErrnoException).code;
    const problem: RegularFileProblem = errno === 'ENOENT' || errno === 'ENOTDIR' ? 'missing' : 'unreadable';
    throw new RegularFileError(problem, path, `${path} cannot be opened (${errno ?? 'error'})`, errno);
  }
  try {
    const stats = await handle.stat();
    if (!stats.isFile()) {
      throw new RegularFileError('not-regular', path, `${path} is ${kindOf(stats)}, not a regular file`);
    }
    return { handle, stats };
  } catch (error) {
    await handle.close().catch(() => undefined);
    if (error instanceof RegularFileError) throw error;
    const errno = (error as NodeJS.ErrnoException).code;
    throw new RegularFileError('unreadable', path, `${path} cannot be examined (${errno ?? 'error'})`, errno);
  }
}

/**
 * Reads at most `length` bytes from `position` of an opened file (fewer at end of file).
 * Never allocates more than `length` bytes.
 */
export async function readRange(handle: FileHandle, position: number, length: number): Promise<Buffer> {
  const buffer = Buffer.allocUnsafe(length);
  let filled = 0;
  while (filled < length) {
    const { bytesRead } = await handle.read(buffer, filled, length - filled, position + filled);
    if (bytesRead === 0) break;
    filled += bytesRead;
  }
  return filled === length ? buffer : buffer.subarray(0, filled);
}

/**
 * The whole of a regular file of at most `maxBytes` bytes. A bigger file (by `fstat`, or by growing
 * while read) is `too-large`; nothing beyond `maxBytes + 1` bytes is ever read.
 */
export async function readRegularFile(path: string, maxBytes: number): Promise<Buffer> {
  const { handle, stats } = await openRegularFile(path);
  try {
    if (stats.size > maxBytes) {
      throw new RegularFileError('too-large', path, `${path} is ${stats.size} bytes, over the ${maxBytes}-byte limit for this file`);
    }
    const bytes = await readRange(handle, 0, maxBytes + 1);
    if (bytes.length > maxBytes) {
      throw new RegularFileError('too-large', path, `${path} grew past the ${maxBytes}-byte limit for this file while being read`);
    }
    return bytes;
  } catch (error) {
    if (error instanceof RegularFileError) throw error;
    const errno = (error as NodeJS.ErrnoException).code;
    throw new RegularFileError('unreadable', path, `${path} cannot be read (${errno ?? 'error'})`, errno);
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/** {@link readRegularFile} decoded as UTF-8. */
export async function readRegularText(path: string, maxBytes: number): Promise<string> {
  return (await readRegularFile(path, maxBytes)).toString('utf8');
}
