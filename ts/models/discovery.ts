/**
 * Reads what a model folder on disk is (family, format, weight files, version) without loading
 * weights: the folder side of ./describe.ts. Every problem is a typed error naming the file at fault.
 */
import { readFile, readdir, stat } from 'node:fs/promises';
import path from 'node:path';

import { PhoenixError } from '../binding/errors.js';
import { describeModel, type ModelDescription, type ModelFileAccess } from './describe.js';

/** What a folder's files say about the model in it. */
export type FolderDescription = ModelDescription;

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

/** A version line in the folder's README.md (`version: 1.2`, `**Version**: v3`), if any. */
async function readmeVersion(dir: string, files: Set<string>): Promise<string | undefined> {
  if (!files.has('README.md')) return undefined;
  const readme = await readFile(path.join(dir, 'README.md'), 'utf8').catch(() => '');
  return /^[\s*_-]*version[*_]*\s*[:=]\s*`?v?([0-9][\w.+-]*)/im.exec(readme)?.[1];
}

/**
 * Describes the model folder `dir`.
 * @throws `E_MODEL_NOT_FOUND` (no such / unreadable folder), `E_BAD_CONFIG` (config.json missing or
 * malformed), `E_BAD_WEIGHTS` (no weight file, missing shard).
 */
export async function describeFolder(dir: string): Promise<FolderDescription> {
  const names = await listFolder(dir);
  const access: ModelFileAccess = {
    where: dir,
    describe: (file) => path.join(dir, file),
    has: async (file) => names.has(file),
    async readText(file) {
      const full = path.join(dir, file);
      try {
        return await readFile(full, 'utf8');
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code ?? String(error);
        throw new PhoenixError('E_BAD_CONFIG', `${full} cannot be read (${code})`, { file: full });
      }
    },
  };
  return describeModel(access, () => readmeVersion(dir, names));
}
