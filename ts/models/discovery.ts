/**
 * Reads what a model folder on disk is (family, format, weight files, version) without loading
 * weights: the folder side of ./describe.ts. The core describes the folder (through the binding);
 * this side reads only what the manager keeps for itself (the version in config.json or README.md),
 * through ./model-files.ts (regular files inside the folder, bounded reads). Every problem is a
 * typed error naming the file at fault.
 */
import { readdir, stat } from 'node:fs/promises';
import path from 'node:path';

import { PhoenixError } from '../binding/errors.js';
import type { RawBinding } from '../binding/types.js';
import { CONFIG_FILE, describeModel, type ModelDescription } from './describe.js';
import { isGgufFile, isGgufName } from './gguf-path.js';
import { readModelText, readModelTextPrefix, type ModelFolder } from './model-files.js';
import { README_SCAN_BYTES, versionFromReadme } from './readme-version.js';

/** What a folder's files say about the model in it. */
export type FolderDescription = ModelDescription;

/** Cap on config.json read for its version (a real config is a few KB; the core refuses larger ones too). */
const CONFIG_MAX_BYTES = 4 << 20;

async function listFolder(dir: string): Promise<Set<string>> {
  let info;
  try {
    info = await stat(dir);
  } catch {
    // A path naming a .gguf is a model file, not a folder.
    throw new PhoenixError('E_MODEL_NOT_FOUND', `${isGgufName(path.basename(dir)) ? 'model file' : 'model folder'} ${dir} does not exist`, { path: dir });
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
 * Describes the model folder `dir` (or GGUF file `dir`) with the core (`binding.describeModel`), plus
 * its version. Its files must resolve inside `dir` (the GGUF's folder) or one of `roots` (the models dir).
 * @throws `E_MODEL_NOT_FOUND` (no such / unreadable folder, no config.json, no weights),
 * `E_BAD_CONFIG` (config.json malformed, not a regular file, too large), `E_UNSUPPORTED_MODEL` (a
 * family this build does not run), `E_BAD_WEIGHTS` (a bad shard index, a missing shard).
 */
export async function describeFolder(dir: string, roots: readonly string[], binding: RawBinding): Promise<FolderDescription> {
  if (isGgufFile(dir)) {
    // A single GGUF file: the core reads its header; no config.json or README to take a version from.
    await listFolder(path.dirname(dir));
    return describeModel(binding, dir, async () => '');
  }
  const names = await listFolder(dir);
  const model: ModelFolder = { folder: dir, roots };
  // A folder holding one .gguf has no config.json: the core described it from the GGUF header.
  const configText = names.has(CONFIG_FILE) ? () => readModelText(model, CONFIG_FILE, CONFIG_MAX_BYTES) : async () => '';
  return describeModel(binding, dir, configText, () => readmeVersion(model, names));
}
