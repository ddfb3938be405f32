/**
 * Node entry of the WASM binding (`wasm/phoenix-local.js`, loaded by ts/binding/load.ts): the
 * `RawBinding` exports `loadModel(dir)`, `buildInfo()`, `setThreads(n)` over the wasm-bindgen
 * `--target nodejs` module in ./node/. WASM has no file system, so the model folder is read here
 * and handed to the core as bytes.
 */
import { openAsBlob } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';

import { createBinding } from './binding.js';

const require = createRequire(import.meta.url);
const CORE = require.resolve('./node/phoenix_local_core.js');

/** A fresh module instance: the CommonJS glue instantiates its .wasm synchronously on require. */
function instantiate() {
  delete require.cache[CORE];
  return require(CORE);
}

/** Checks `dir` (same messages as the core's folder loader, crates/core/src/loader/files.rs) and reads its files. */
async function fileReader(dir) {
  const info = await stat(dir).catch(() => null);
  if (!info) throw new Error(`[E_MODEL_NOT_FOUND] model folder ${dir} does not exist`);
  if (!info.isDirectory()) throw new Error(`[E_MODEL_NOT_FOUND] model path ${dir} is not a folder`);
  return async (name) => {
    const file = path.join(dir, name);
    const found = await stat(file).catch((error) => {
      if (error && error.code === 'ENOENT') return null;
      throw new Error(`[E_MODEL_NOT_FOUND] cannot open ${file}: ${error instanceof Error ? error.message : String(error)}`);
    });
    // Like the core's folder loader on native: only regular files count (reading a FIFO blocks
    // forever, a device such as /dev/zero never ends).
    if (!found || !found.isFile()) return null;
    try {
      // A lazy Blob over the file: binding.js streams it into WASM memory in chunks.
      return await openAsBlob(file);
    } catch (error) {
      throw new Error(`[E_MODEL_NOT_FOUND] cannot open ${file}: ${error instanceof Error ? error.message : String(error)}`);
    }
  };
}

const binding = createBinding({ instantiate, fileReader });

export const loadModel = binding.loadModel;
export const buildInfo = binding.buildInfo;
export const setThreads = binding.setThreads;
/** Instances started so far (more than 1 after a trap forced a fresh one). */
export const instances = binding.instances;
/** Test hook (see binding.js). */
export const injectFault = binding.injectFault;
