/**
 * A `.gguf` file is a model by itself (llama.cpp's single-file format): named by its path, or lying
 * loose in the models dir. Its files — the GGUF, and a tokenizer.json beside it if any (only when no
 * other `.gguf` shares the folder) — are named
 * by the core relative to the folder holding it; these helpers give that folder.
 */
import path from 'node:path';

import { isDirectory } from './models-dir.js';

/** Whether `name` ends in `.gguf` (any case). */
export function isGgufName(name: string): boolean {
  return /\.gguf$/i.test(name);
}

/** Whether the model at `modelPath` is a single GGUF file (not a folder). */
export function isGgufFile(modelPath: string): boolean {
  return isGgufName(modelPath) && !isDirectory(modelPath);
}

/** The folder the core names a model's files in: the model folder, or the folder holding a GGUF file. */
export function filesFolderOf(modelPath: string): string {
  return isGgufFile(modelPath) ? path.dirname(modelPath) : modelPath;
}
