/**
 * Reads what a model folder on disk is (family, format, weight files, version) without loading
 * weights: the folder side of ./describe.ts. Every problem is a typed error naming the file at fault;
 * every file is read through ./model-files.ts (regular files inside the folder, bounded reads).
 */
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';

import { PhoenixError } from '../binding/errors.js';
import { describeModel, SHARD_INDEX_FILE, type ModelDescription, type ModelFileAccess } from './describe.js';
import { readModelText, readModelTextPrefix, type ModelFolder } from './model-files.js';
import { README_SCAN_BYTES, versionFromReadme } from './readme-version.js';

/** What a folder's files say about the model in it. */
export type FolderDescription = ModelDescription;

/** Caps on metadata files read whole (a real config is a few KB; a shard index of a huge model a few MB). */
export const METADATA_MAX_BYTES: Readonly<Record<string, number>> = {
  [SHARD_INDEX_FILE]: 32 << 20,
};
const DEFAULT_METADATA_MAX_BYTES = 4 << 20;

async function listFolder(dir: string): Promise<Set<string>> {
  let info;
  try {
    info = await stat(dir);
  } catch {
    throw new PhoenixError('E_MODEL_NOT_FOUND', `model folder ${dir} does not exist`, { path: dir });
  }
  if (!info.isDirectory()) throw new PhoenixError('E_MODEL_NOT_FOUND', `${dir} is not a folder`, { path: dir });
  try {
    return new Set(await readdir(dir));
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code ?? String(error);
    throw new PhoenixError('E_MODEL_NOT_FOUND', `model folder ${dir} cannot be read (${code})`, { path: dir });
  }
}

/** A version line in the folder's README.md, if any. An unreadable README (a FIFO, a folder…) has none. */
async function readmeVersion(model: ModelFolder, files: Set<string>): Promise<string | undefined> {
  if (!files.has('README.md')) return undefined;
  const readme = await readModelTextPrefix(model, 'README.md', README_SCAN_BYTES).catch(() => '');
  return versionFromReadme(readme);
}

/**
 * Describes the model folder `dir`. Its files must resolve inside `dir` or one of `roots` (the models dir).
 * @throws `E_MODEL_NOT_FOUND` (no such / unreadable folder), `E_BAD_CONFIG` (config.json missing,
 * malformed, not a regular file, too large), `E_BAD_WEIGHTS` (no weight file, missing shard).
 */
export async function describeFolder(dir: string, roots: readonly string[] = []): Promise<FolderDescription> {
  const names = await listFolder(dir);
  const model: ModelFolder = { folder: dir, roots };
  const access: ModelFileAccess = {
    where: dir,
    describe: (file) => path.join(dir, file),
    has: async (file) => names.has(file),
    readText: (file) => readModelText(model, file, METADATA_MAX_BYTES[file] ?? DEFAULT_METADATA_MAX_BYTES),
  };
  return describeModel(access, () => readmeVersion(model, names));
}
