/**
 * Opening the files of a model folder on disk, treating the folder as hostile: a file must resolve
 * (through any symlinks) inside the model folder or the models dir, must be a regular file (checked
 * with `fstat` on the opened descriptor, see ts/fs/regular-file.ts), and metadata files are read up
 * to a byte cap. Problems become typed errors naming the file — never its contents.
 */
import { realpath } from 'node:fs/promises';
import path from 'node:path';

import { PhoenixError, type ErrorCode } from '../binding/errors.js';
import { openRegularFile, readRange, RegularFileError, type OpenedRegularFile } from '../fs/regular-file.js';
import { CHAT_FILES, CONFIG_FILE, TOKENIZER_FILE } from './describe.js';
import { isInside } from './names.js';

/**
 * The error code for a problem with `name`: the file's role decides it, as in the core's loader
 * (config → E_BAD_CONFIG, tokenizer → E_TOKENIZER, weights and the shard index → E_BAD_WEIGHTS), so a
 * file the manager cannot open is reported under the code the core's load gives for it.
 */
export function codeForFile(name: string): ErrorCode {
  if (name === CONFIG_FILE || CHAT_FILES.includes(name)) return 'E_BAD_CONFIG';
  if (name === TOKENIZER_FILE) return 'E_TOKENIZER';
  return 'E_BAD_WEIGHTS';
}

/** Where a model's files may live: its own folder, plus (when known) the models dir holding it. */
export interface ModelFolder {
  folder: string;
  /** Extra roots a file may resolve into (the models dir, for shared blobs). */
  roots: readonly string[];
  /**
   * The `.gguf` file the caller named as the model: a link to it is followed wherever it leads (the
   * caller chose that file), as the core follows it; the other files keep the containment rule.
   */
  namedFile?: string;
}

async function realRoots(model: ModelFolder): Promise<string[]> {
  const roots = await Promise.all([model.folder, ...model.roots].map((r) => realpath(r).catch(() => path.resolve(r))));
  return [...new Set(roots)];
}

/**
 * Opens the file `name` of a model folder, as a regular file resolving inside the allowed roots.
 * The caller closes the handle.
 * @throws PhoenixError with the file's code ({@link codeForFile}) naming the file.
 */
export async function openModelFile(model: ModelFolder, name: string): Promise<OpenedRegularFile> {
  const full = path.join(model.folder, name);
  const code = codeForFile(name);
  let real: string;
  try {
    real = await realpath(full);
  } catch (error) {
    const errno = (error as NodeJS.ErrnoException).code;
    const why = errno === 'ENOENT' || errno === 'ENOTDIR' ? 'is missing' : `cannot be resolved (${errno ?? 'error'})`;
    throw new PhoenixError(code, `${full} ${why}`, { file: full });
  }
  const roots = await realRoots(model);
  if (name !== model.namedFile && !roots.some((root) => isInside(root, real))) {
    throw new PhoenixError(code, `${full} resolves to ${real}, outside the model folder`, { file: full });
  }
  try {
    return await openRegularFile(real);
  } catch (error) {
    if (!(error instanceof RegularFileError)) throw error;
    const why =
      error.problem === 'not-regular' ? error.message.slice(real.length).trim() : error.problem === 'missing' ? 'is missing' : `cannot be read (${error.errno ?? 'error'})`;
    throw new PhoenixError(code, `${full} ${why}`, { file: full });
  }
}

/**
 * The text of `name` when it is at most `maxBytes` long.
 * @throws PhoenixError ({@link codeForFile}) for a missing, irregular, escaping or too large file.
 */
export async function readModelText(model: ModelFolder, name: string, maxBytes: number): Promise<string> {
  const full = path.join(model.folder, name);
  const { handle, stats } = await openModelFile(model, name);
  try {
    if (stats.size > maxBytes) {
      throw new PhoenixError(codeForFile(name), `${full} is ${stats.size} bytes, over the ${maxBytes}-byte limit for this file`, { file: full });
    }
    const bytes = await readRange(handle, 0, maxBytes + 1);
    if (bytes.length > maxBytes) {
      throw new PhoenixError(codeForFile(name), `${full} grew past the ${maxBytes}-byte limit for this file while being read`, { file: full });
    }
    return bytes.toString('utf8');
  } catch (error) {
    if (error instanceof PhoenixError) throw error;
    const errno = (error as NodeJS.ErrnoException).code;
    throw new PhoenixError(codeForFile(name), `${full} cannot be read (${errno ?? 'error'})`, { file: full });
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/** The first `maxBytes` of `name` as text (for optional metadata such as a README: longer files are cut). */
export async function readModelTextPrefix(model: ModelFolder, name: string, maxBytes: number): Promise<string> {
  const { handle } = await openModelFile(model, name);
  try {
    return (await readRange(handle, 0, maxBytes)).toString('utf8');
  } finally {
    await handle.close().catch(() => undefined);
  }
}
