/**
 * Model names are folder names inside the models dir. Anything that could reach outside it
 * (separators, `..`, absolute paths, symlinks pointing elsewhere) is rejected with `E_INVALID_OPTION`.
 */
import { lstat, realpath } from 'node:fs/promises';
import path from 'node:path';

import { PhoenixError } from '../binding/errors.js';

function escapeError(name: string, why: string): PhoenixError {
  return new PhoenixError('E_INVALID_OPTION', `model name ${JSON.stringify(name)} is not a folder name inside the models dir (${why})`, {
    option: 'model',
    model: name,
  });
}

/** Checks the syntax of a model name without touching the disk. */
export function assertModelName(name: unknown): asserts name is string {
  if (typeof name !== 'string' || name.length === 0) throw escapeError(String(name), 'empty or not a string');
  if (name.includes('\0')) throw escapeError(name, 'contains a NUL byte');
  if (path.isAbsolute(name) || path.win32.isAbsolute(name)) throw escapeError(name, 'absolute path');
  if (name.includes('/') || name.includes('\\')) throw escapeError(name, 'contains a path separator');
  if (name === '.' || name === '..') throw escapeError(name, 'refers to a parent or the models dir itself');
  if (name.startsWith('.')) throw escapeError(name, 'hidden entries are not models');
}

/** Whether `child` is `parent` or lies beneath it (both absolute, normalised). */
export function isInside(parent: string, child: string): boolean {
  const rel = path.relative(parent, child);
  return rel === '' || (!rel.startsWith('..') && !path.isAbsolute(rel));
}

/**
 * Resolves a model name to its folder inside `modelsDir`.
 * @throws `E_INVALID_OPTION` for names that leave the models dir, `E_MODEL_NOT_FOUND` when absent.
 */
export async function resolveModelFolder(modelsDir: string, name: unknown): Promise<string> {
  assertModelName(name);
  const folder = path.join(modelsDir, name);
  let isLink: boolean;
  try {
    isLink = (await lstat(folder)).isSymbolicLink();
  } catch {
    throw new PhoenixError('E_MODEL_NOT_FOUND', `model "${name}" not found: ${folder} does not exist`, { model: name, path: folder });
  }
  if (isLink) {
    let target: string;
    try {
      target = await realpath(folder);
    } catch {
      throw new PhoenixError('E_MODEL_NOT_FOUND', `model "${name}" not found: ${folder} is a dangling symlink`, { model: name, path: folder });
    }
    const root = await realpath(modelsDir);
    if (!isInside(root, target)) throw escapeError(name, `symlink to ${target} escapes ${root}`);
  }
  return folder;
}
