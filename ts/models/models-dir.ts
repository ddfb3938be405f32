/**
 * Which folder is the models dir when none is given: `PHOENIX_MODELS_DIR`, else `./models` when it
 * exists, else the package's bundled models (./bundled.ts) — so an installed package finds its default
 * model without a `models/` folder in the working directory.
 */
import { statSync } from 'node:fs';
import path from 'node:path';

import { bundledModelsDir } from './bundled.js';

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

