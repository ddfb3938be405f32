/**
 * The WASM binding run on the calling thread: the wasm-bindgen `--target nodejs` module in ./node/
 * behind binding.js, with a reader of model folders. WASM has no file system, so the model folder
 * (or the `.gguf` file named as the model) is read here and handed to the core as bytes, each file
 * copied once, chunk by chunk, straight into WASM memory. `phoenix-local.js` serves this binding
 * from a worker thread (node-worker.js), or on the main thread with PHOENIX_WASM_THREAD=main.
 */
import { constants } from 'node:fs';
import { lstat, open, opendir, realpath, stat } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';

import { RefusedFile, SizedBody, createBinding } from './binding.js';

export { RefusedFile, SizedBody };

const require = createRequire(import.meta.url);
const CORE = require.resolve('./node/phoenix_local_core.js');

/** A fresh module instance: the CommonJS glue instantiates its .wasm synchronously on require. */
function instantiate() {
  delete require.cache[CORE];
  return require(CORE);
}

const CHUNK_BYTES = 1 << 20;

function cannotOpen(file, error) {
  return new Error(`[E_MODEL_NOT_FOUND] cannot open ${file}: ${error instanceof Error ? error.message : String(error)}`);
}

/** The first `size` bytes of an opened file, chunk by chunk; the handle closes at the end or on cancel. */
function fileStream(handle, size) {
  let position = 0;
  return new ReadableStream({
    async pull(controller) {
      const want = Math.min(CHUNK_BYTES, size - position);
      const chunk = new Uint8Array(Math.max(want, 0));
      const { bytesRead } = want > 0 ? await handle.read(chunk, 0, want, position) : { bytesRead: 0 };
      if (bytesRead === 0) {
        await handle.close();
        controller.close();
        return;
      }
      position += bytesRead;
      controller.enqueue(chunk.subarray(0, bytesRead));
    },
    cancel: () => handle.close(),
  });
}

/** Most entries of a folder listed for the core (it looks for a lone `.gguf` among them). */
const LISTING_CAP = 4096;

/**
 * The reader for a model path: a folder (its files, listed), or a file — the model is then that file
 * (the core accepts a `.gguf` and refuses anything else, as natively), read from the folder holding it.
 */
async function fileReader(source) {
  const info = await stat(source).catch(() => null);
  if (!info) throw new Error(`[E_MODEL_NOT_FOUND] model folder ${source} does not exist`);
  if (info.isDirectory()) {
    const read = await folderReader(source);
    read.fileNames = await listing(source);
    return read;
  }
  const dir = path.dirname(source);
  const read = await folderReader(dir, path.basename(source));
  read.root = dir;
  read.modelFile = path.basename(source);
  // The core reads nothing beside a GGUF that shares its folder with other GGUFs (loose ones in a
  // models dir), as natively: it needs the folder's names to know.
  read.fileNames = await listing(dir);
  return read;
}

/**
 * The names in `dir` (at most LISTING_CAP; kinds are checked when a file is read), without folders
 * named like a GGUF (not model files, as natively).
 */
async function listing(dir) {
  const names = [];
  const entries = await opendir(dir).catch(() => null);
  if (!entries) return names;
  for await (const entry of entries) {
    if (entry.isDirectory() && /\.gguf$/i.test(entry.name)) continue;
    names.push(entry.name);
    if (names.length >= LISTING_CAP) break;
  }
  return names;
}

/**
 * Checks `dir` (same messages as the core's folder loader, crates/core/src/loader/files.rs) and
 * returns the reader of its files. The core's rules for folders, applied where the files are: a
 * file must resolve inside the model folder or the folder holding it (the models dir), and only a
 * regular file is read — opened without blocking (a FIFO's open would wait for a writer) and checked
 * with fstat on the opened handle, which is then the one read. A refused file is reported to the
 * core (RefusedFile), which words the error. `{ probe: true }`: the same checks, nothing read.
 * `named`: the file the caller named (a `.gguf` path). It is the model they chose, so a link to it
 * is followed wherever it leads (a Hugging Face cache snapshot links it into `../../blobs/<hash>`),
 * as the core's folder loader does; the files beside it keep the rule.
 */
async function folderReader(dir, named = null) {
  const info = await stat(dir).catch(() => null);
  if (!info) throw new Error(`[E_MODEL_NOT_FOUND] model folder ${dir} does not exist`);
  if (!info.isDirectory()) throw new Error(`[E_MODEL_NOT_FOUND] model path ${dir} is not a folder`);
  const realDir = await realpath(dir);
  const roots = [realDir, path.dirname(realDir)];
  const namedParent = await realpath(path.dirname(path.resolve(dir))).catch(() => null);
  if (namedParent !== null) roots.push(namedParent);
  const inside = (real) => roots.some((root) => real === root || real.startsWith(root.endsWith(path.sep) ? root : root + path.sep));

  return async (name, { probe = false } = {}) => {
    const file = path.join(dir, name);
    const entry = await lstat(file).catch((error) => {
      if (error && (error.code === 'ENOENT' || error.code === 'ENOTDIR')) return null;
      throw cannotOpen(file, error);
    });
    if (!entry) return null;
    const real = await realpath(file).catch((error) => {
      if (error && error.code === 'ENOENT') return null;
      throw cannotOpen(file, error);
    });
    if (real === null) return new RefusedFile('dangling');
    if (name !== named && !inside(real)) return new RefusedFile('outside');
    const handle = await open(real, constants.O_RDONLY | constants.O_NONBLOCK).catch((error) => {
      throw cannotOpen(file, error);
    });
    const stats = await handle.stat().catch(async (error) => {
      await handle.close();
      throw cannotOpen(file, error);
    });
    if (!stats.isFile()) {
      await handle.close();
      return new RefusedFile('not-regular');
    }
    if (probe) {
      await handle.close();
      return new SizedBody(stats.size, null);
    }
    return new SizedBody(stats.size, fileStream(handle, stats.size));
  };
}

/** The in-thread `RawBinding` (plus the `instances()` / `injectFault()` test hooks of binding.js). */
export const binding = createBinding({ instantiate, fileReader });
