/**
 * Browser / Web Worker entry of the WASM binding (`wasm/browser.js`), over the wasm-bindgen
 * `--target web` module in ./web/. Same `RawBinding` as the Node entry, except:
 * - `await ready()` once before `buildInfo()` / `setThreads()` (instantiation is async here);
 * - `loadModel(url)` fetches the model's files relative to a base URL (e.g. `models/phoenix-ssm-lite/`);
 *   `loadModel((name) => Promise<Uint8Array | null>)` reads just the files the core asks for (e.g. from
 *   a folder picker's File objects); `loadModel({ 'config.json': bytes, … })` takes files in memory.
 * Run it in a Web Worker: every call runs synchronously on the calling thread.
 */
import { SizedBody, createBinding } from './binding.js';

const GLUE = new URL('./web/phoenix_local_core.js', import.meta.url);
const WASM = new URL('./web/phoenix_local_core_bg.wasm', import.meta.url);

let compiled = null;
let fresh = 0;

/** A fresh instance; the compiled module is reused, the glue is re-imported (its state is per module). */
async function instantiate() {
  compiled ??= WebAssembly.compileStreaming
    ? WebAssembly.compileStreaming(fetch(WASM))
    : fetch(WASM).then((r) => r.arrayBuffer()).then((b) => WebAssembly.compile(b));
  const glue = await import(fresh++ === 0 ? GLUE.href : `${GLUE.href}?instance=${fresh}`);
  await glue.default({ module_or_path: await compiled });
  return glue;
}

/**
 * Fetches files relative to `base`; a 404 means the file is absent. `{ probe: true }`: a HEAD request.
 * A URL to a `.gguf` file (e.g. `models/SmolLM2-135M-Instruct.Q4_1.gguf`) is that model: its files
 * are fetched from the folder URL holding it.
 */
async function fileReader(base, core) {
  const url = new URL(base, globalThis.location?.href);
  const last = decodeURIComponent(url.pathname.split('/').pop() ?? '');
  const modelFile = !url.pathname.endsWith('/') && (await core.isGgufName(last)) ? last : null;
  const root = modelFile ? new URL('./', url) : new URL(url.pathname.endsWith('/') ? url.href : `${url.href}/`);
  const read = readerAt(root);
  if (modelFile) {
    read.root = root.href;
    read.modelFile = modelFile;
  }
  return read;
}

function readerAt(root) {
  return async (name, { probe = false } = {}) => {
    const url = new URL(name, root);
    const response = await fetch(url, probe ? { method: 'HEAD' } : undefined).catch((error) => {
      throw new Error(`[E_MODEL_NOT_FOUND] cannot fetch ${url}: ${error instanceof Error ? error.message : String(error)}`);
    });
    if (response.status === 404) return null;
    if (!response.ok) throw new Error(`[E_MODEL_NOT_FOUND] cannot fetch ${url}: HTTP ${response.status}`);
    if (probe) return new SizedBody(Number(response.headers.get('content-length') ?? Number.NaN), null);
    // Known length and no content coding: stream the body straight into WASM memory. Otherwise a
    // Blob (held by the browser outside the JS heap), then streamed in.
    const header = response.headers.get('content-length');
    const length = header === null ? Number.NaN : Number(header);
    if (response.body && Number.isSafeInteger(length) && !response.headers.get('content-encoding')) {
      return new SizedBody(length, response.body);
    }
    return response.blob();
  };
}

const binding = createBinding({ instantiate, fileReader });

export const loadModel = binding.loadModel;
export const describeModel = binding.describeModel;
export const supportedFamilies = binding.supportedFamilies;
export const buildInfo = binding.buildInfo;
export const setThreads = binding.setThreads;
export const checkGenerateOptions = binding.checkGenerateOptions;
export const checkLoadOptions = binding.checkLoadOptions;
export const CancelFlag = binding.CancelFlag;
export const ready = binding.ready;
export const instances = binding.instances;
/** Test hook (see binding.js). */
export const injectFault = binding.injectFault;
