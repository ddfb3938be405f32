/**
 * Files the CLI writes (`--save-state`): checked before any model loads, so a long generation is not
 * lost to a typo in the path, then written with a typed error naming the file.
 */
import { constants } from 'node:fs';
import { access, lstat, open, stat, unlink } from 'node:fs/promises';
import path from 'node:path';

import { PhoenixError } from '../binding/errors.js';
import { openRegularFile, RegularFileError } from '../fs/regular-file.js';

function refuse(flag: string, file: string, why: string): PhoenixError {
  return new PhoenixError('E_INVALID_OPTION', `--${flag} ${file}: ${why}`, { option: flag, usage: true });
}

/**
 * `file` can be read (`--state`): it exists and is a regular file. Checked before any model loads;
 * its contents are checked against the model once loaded.
 */
export async function checkReadableFile(flag: string, file: string): Promise<void> {
  if (file === '') throw refuse(flag, file, 'empty path');
  try {
    const { handle } = await openRegularFile(file);
    await handle.close();
  } catch (error) {
    if (!(error instanceof RegularFileError)) throw error;
    const why = error.problem === 'missing' ? 'no such file' : error.problem === 'not-regular' ? 'not a regular file' : `cannot be read (${error.errno ?? 'error'})`;
    throw refuse(flag, file, why);
  }
}

/**
 * `file` may be created or replaced: its folder exists and is writable, and `file` is absent or a
 * regular file (not a folder, FIFO or device, which would fail or block the write). Tried for real —
 * an absent file is created and removed again, an existing one opened for writing without truncating —
 * since permission bits do not say it all (root passes every `access` check, yet nothing can be
 * created in /proc or on a read-only mount).
 */
export async function checkWritableFile(flag: string, file: string): Promise<void> {
  if (file === '') throw refuse(flag, file, 'empty path');
  const folder = path.dirname(path.resolve(file));
  let folderStat;
  try {
    folderStat = await stat(folder);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw refuse(flag, file, code === 'ENOENT' || code === 'ENOTDIR' ? `folder ${folder} does not exist` : `folder ${folder} cannot be read (${code})`);
  }
  if (!folderStat.isDirectory()) throw refuse(flag, file, `${folder} is not a folder`);
  try {
    await access(folder, constants.W_OK);
  } catch {
    throw refuse(flag, file, `folder ${folder} is not writable`);
  }
  let fileStat;
  try {
    fileStat = await lstat(file).then((s) => (s.isSymbolicLink() ? stat(file) : s));
  } catch {
    fileStat = undefined; // absent (or a dangling link): the write creates it
  }
  if (fileStat === undefined) return tryCreating(flag, file);
  if (fileStat.isDirectory()) throw refuse(flag, file, 'is a folder');
  if (!fileStat.isFile()) throw refuse(flag, file, 'is not a regular file');
  try {
    // Non-blocking and not truncating: the file keeps its bytes until the state is written.
    await (await open(file, constants.O_WRONLY | constants.O_NONBLOCK)).close();
  } catch (error) {
    throw refuse(flag, file, `is not writable (${(error as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}

/** Creates the absent `file` and removes it again: what the write will do must work now. */
async function tryCreating(flag: string, file: string): Promise<void> {
  let handle;
  try {
    handle = await open(file, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NONBLOCK, 0o644);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return; // created meanwhile: the write checks what it finds then
    throw refuse(flag, file, `cannot be created (${code ?? 'error'})`);
  }
  await handle.close().catch(() => undefined);
  await unlink(file).catch(() => undefined);
}

/**
 * Writes `bytes` to `file`; a failure (disk full, folder removed meanwhile) names the flag and file.
 * The path was checked before the generation, but may have been replaced since: it is opened without
 * blocking (a FIFO put there would otherwise hang the write forever) and without truncating, and only
 * a regular file (by `fstat` of that descriptor) is truncated and written.
 */
export async function writeOutputFile(flag: string, file: string, bytes: Uint8Array): Promise<void> {
  const failed = (why: string): PhoenixError => new PhoenixError('E_INVALID_OPTION', `--${flag} ${file} cannot be written (${why})`, { option: flag });
  let handle;
  try {
    handle = await open(file, constants.O_WRONLY | constants.O_CREAT | constants.O_NONBLOCK, 0o644);
  } catch (error) {
    throw failed((error as NodeJS.ErrnoException).code ?? String(error));
  }
  try {
    if (!(await handle.stat()).isFile()) throw failed('not a regular file anymore');
    await handle.truncate(0);
    await handle.writeFile(bytes);
  } catch (error) {
    if (error instanceof PhoenixError) throw error;
    throw failed((error as NodeJS.ErrnoException).code ?? String(error));
  } finally {
    await handle.close().catch(() => undefined);
  }
}
