/**
 * Node entry of the WASM binding (`wasm/phoenix-local.js`, loaded by ts/binding/load.ts): the
 * `RawBinding` exports `loadModel(source)`, `describeModel(source)`, `buildInfo()`, `setThreads(n)`…
 * over the wasm-bindgen `--target nodejs` module in ./node/.
 *
 * The core runs in a worker thread (node-worker.js, driven by node-host.js): WASM calls are
 * synchronous, and on the main thread a prompt's prefill would stall the event loop — timers, I/O,
 * an AbortSignal, Ctrl-C — for seconds. PHOENIX_WASM_THREAD=main runs it on the calling thread
 * instead (node-core.js), as before the worker existed.
 */
import { binding as inThread } from './node-core.js';
import { workerBinding } from './node-host.js';

const where = process.env.PHOENIX_WASM_THREAD || 'worker';
if (where !== 'worker' && where !== 'main') {
  throw new Error(`[E_INVALID_OPTION] PHOENIX_WASM_THREAD must be "worker" or "main", got ${JSON.stringify(where)}`);
}
const binding = where === 'main' ? inThread : workerBinding(inThread);

export const loadModel = binding.loadModel;
export const describeModel = binding.describeModel;
export const supportedFamilies = binding.supportedFamilies;
export const buildInfo = binding.buildInfo;
export const setThreads = binding.setThreads;
export const checkGenerateOptions = binding.checkGenerateOptions;
export const checkLoadOptions = binding.checkLoadOptions;
export const CancelFlag = binding.CancelFlag;
/** Instances started so far (more than 1 after a trap forced a fresh one). */
export const instances = binding.instances;
/** Test hook (see binding.js); on the worker, `injectFault('worker-exit' | 'worker-throw')` ends its thread. */
export const injectFault = binding.injectFault;
