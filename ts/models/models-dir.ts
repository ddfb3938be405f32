/**
 * Which folder is the models dir when none is given: `PHOENIX_MODELS_DIR`, else `./models` when it
 * exists, else the package's bundled models (./bundled.ts) — so an installed package finds its default
 * model without a `models/` folder in the working directory.
 */
import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { bundledModelsDir } from './bundled.js';
import { MANIFEST_FILE_NAME } from './manifest.js';

/** Whether `dir` is an existing folder. */
export function isDirectory(dir: string): boolean {
  try {
    return statSync(dir).isDirectory();
  } catch {
    return false;
  }
}

/** Where {@link defaultModelsDir} looks, in order (PHOENIX_MODELS_DIR alone when set). */
export function modelsDirCandidates(env: NodeJS.ProcessEnv = process.env): string[] {
  if (env.PHOENIX_MODELS_DIR) return [path.resolve(env.PHOENIX_MODELS_DIR)];
  return [...new Set([path.resolve('models'), bundledModelsDir()])];
}

/**
 * The default models dir: `PHOENIX_MODELS_DIR`, else `<cwd>/models` when it exists, else the package's
 * bundled models folder (`<package root>/models`) when it exists, else `<cwd>/models`.
 */
export function defaultModelsDir(env: NodeJS.ProcessEnv = process.env): string {
  const candidates = modelsDirCandidates(env);
  return candidates.find(isDirectory) ?? (candidates[0] as string);
}


/**
 * Where the manifest (checksums, measured profiles) of `modelsDir` lives: in it, except for a models
 * dir inside `node_modules` — an installed package's bundled models, which the CLI falls back to and
 * which also record models named by path. That folder belongs to the package manager (often
 * read-only, wiped by a reinstall, where a manifest that cannot be saved means rehashing every run),
 * so its manifest goes to the user's cache: `$XDG_CACHE_HOME/phoenix-local/` (`%LOCALAPPDATA%` on
 * Windows, else `~/.cache`), one file per such folder.
 */
export function defaultManifestPath(modelsDir: string, env: NodeJS.ProcessEnv = process.env): string {
  const dir = path.resolve(modelsDir);
  if (!dir.split(/[\\/]/).includes('node_modules')) return path.join(dir, MANIFEST_FILE_NAME);
  // The XDG spec: a relative $XDG_CACHE_HOME is invalid and ignored.
  const xdg = env.XDG_CACHE_HOME && path.isAbsolute(env.XDG_CACHE_HOME) ? env.XDG_CACHE_HOME : undefined;
  const cacheRoot = xdg || (process.platform === 'win32' && env.LOCALAPPDATA) || path.join(os.homedir(), '.cache');
  const key = createHash('sha256').update(dir).digest('hex').slice(0, 16);
  return path.join(cacheRoot, 'phoenix-local', `manifest-${key}.json`);
}
