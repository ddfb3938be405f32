/**
 * The JS half of the WASM binding, shared by the Node entry (`phoenix-local.js`) and the browser
 * entry (`browser.js`). It turns the wasm-bindgen module (crates/wasm/src/lib.rs) into a `RawBinding`
 * of ts/binding/types.ts:
 *
 * - `loadModel(source)`: a folder path (Node) or base URL (browser) is read into memory by the
 *   entry's `readModelFiles`; an object / Map of file name → Uint8Array is passed through.
 * - Traps (`WebAssembly.RuntimeError`): a Rust panic in a panic=abort build, or in any build a stack
 *   overflow / out-of-memory abort. Rethrown as `[E_INTERNAL] …` (with the panic message when there
 *   is one); the instance is marked dead (its memory may be mid-update), every handle from it then
 *   fails with `E_INTERNAL`, and the next `loadModel` instantiates a fresh module. (panic=unwind
 *   builds catch panics in the core instead: `[E_INTERNAL] internal error (caught panic): …`.)
 *
 * No model, tokenizer or sampling logic lives here.
 */

/** Files the core may read from a model folder, besides the weights. */
const CONFIG_FILE = 'config.json';
const TOKENIZER_FILE = 'tokenizer.json';
/** Weight containers in the core's detection order (crates/core/src/loader.rs `TensorStore::open`). */
const SAFETENSORS_INDEX_FILE = 'model.safetensors.index.json';
const SAFETENSORS_FILE = 'model.safetensors';
const PTH_FILE = 'pytorch_model.bin';

/**
 * Reads the files of one model through `read(name)` (resolves `Uint8Array`, or `null` when the file
 * does not exist). Only the weight container the core will pick is read, so a folder holding both
 * `model.safetensors` and `pytorch_model.bin` does not load twice the bytes.
 */
export async function collectModelFiles(read) {
  const files = {};
  const take = async (name) => {
    const bytes = await read(name);
    if (bytes) files[name] = bytes;
    return bytes;
  };
  await take(CONFIG_FILE);
  await take(TOKENIZER_FILE);
  const index = await take(SAFETENSORS_INDEX_FILE);
  if (index) {
    // Shard names only; the core parses and checks the index itself (bad JSON → its E_BAD_WEIGHTS).
    let shards = [];
    try {
      shards = [...new Set(Object.values(JSON.parse(new TextDecoder().decode(index)).weight_map ?? {}))];
    } catch {
      shards = [];
    }
    for (const shard of shards) {
      if (typeof shard === 'string') await take(shard);
    }
  } else if (!(await take(SAFETENSORS_FILE))) {
    await take(PTH_FILE);
  }
  return files;
}

/**
 * Resolves after the pending macrotasks (timers, I/O callbacks) ran. WASM calls run synchronously
 * and return settled promises, so a loop awaiting `next()` would otherwise never let a timer fire
 * (an AbortSignal.timeout, a deadline) until the whole generation ended; the native addon runs steps
 * on worker threads and has no such problem. Costs microseconds per step.
 */
const yieldToEventLoop =
  typeof setImmediate === 'function'
    ? () => new Promise((resolve) => setImmediate(resolve))
    : (() => {
        // Browsers / workers: a message round-trip is a macrotask without setTimeout's 4 ms clamp.
        const channel = new MessageChannel();
        const waiting = [];
        channel.port1.onmessage = () => waiting.shift()?.();
        return () =>
          new Promise((resolve) => {
            waiting.push(resolve);
            channel.port2.postMessage(0);
          });
      })();

function isTrap(error) {
  return typeof WebAssembly !== 'undefined' && error instanceof WebAssembly.RuntimeError;
}

/**
 * @param {{ instantiate: () => object | Promise<object>, readModelFiles?: (source: string) => Promise<Record<string, Uint8Array>> }} entry
 *   `instantiate` returns a fresh, initialised wasm-bindgen module on each call (synchronously in
 *   Node, so `buildInfo()` works right after import; browsers await `ready()` first).
 */
export function createBinding({ instantiate, readModelFiles }) {
  /** The live instance: `{ core, dead: string | null }`. */
  let current = null;
  /** Instances started so far (shown in messages, useful when a trap forced a new one). */
  let started = 0;

  async function live() {
    if (!current || current.dead) {
      const core = await instantiate();
      current = { core, dead: null, number: ++started };
    }
    return current;
  }

  /** The live instance for synchronous calls: made now if `instantiate` is synchronous (Node). */
  function liveSync() {
    if (!current || current.dead) {
      const core = instantiate();
      if (core && typeof core.then === 'function') {
        throw new Error('[E_BACKEND_UNAVAILABLE] the WASM module is not instantiated yet (await ready() first)');
      }
      current = { core, dead: null, number: ++started };
    }
    return current;
  }

  function translate(instance, error) {
    if (!isTrap(error)) return error;
    let panic = null;
    try {
      panic = instance.core.lastPanic()?.replace(/\s*\n\s*/g, ' ') ?? null;
    } catch {
      panic = null;
    }
    const what = panic ? `panic: ${panic}` : `WebAssembly trap: ${error.message}`;
    instance.dead = what;
    const wrapped = new Error(`[E_INTERNAL] internal error in the WASM module (${what}); its models are unloaded, load the model again`);
    wrapped.cause = error;
    return wrapped;
  }

  /** Runs one call into `instance`, translating traps (thrown or from a returned promise). */
  function call(instance, fn) {
    if (instance.dead) {
      throw new Error(`[E_INTERNAL] this handle belongs to a WASM instance that trapped earlier (${instance.dead}); load the model again`);
    }
    let result;
    try {
      result = fn();
    } catch (error) {
      throw translate(instance, error);
    }
    if (result && typeof result.then === 'function') {
      return result.then(undefined, (error) => {
        throw translate(instance, error);
      });
    }
    return result;
  }

  function wrapGeneration(instance, raw) {
    return {
      next: () => yieldToEventLoop().then(() => call(instance, () => raw.next())),
      cancel: () => call(instance, () => raw.cancel()),
      exportState: () => call(instance, () => raw.exportState()),
      stats: () => call(instance, () => raw.stats()),
      tokenIds: () => call(instance, () => raw.tokenIds()),
    };
  }

  function wrapModel(instance, raw) {
    return {
      info: () => call(instance, () => raw.info()),
      tokenize: (text, addSpecialTokens) => call(instance, () => raw.tokenize(text, addSpecialTokens)),
      detokenize: (ids, skipSpecialTokens) => call(instance, () => raw.detokenize(ids, skipSpecialTokens)),
      logits: (ids) => yieldToEventLoop().then(() => call(instance, () => raw.logits(ids))),
      generate: (prompt, options, state) =>
        wrapGeneration(instance, call(instance, () => raw.generate(prompt, options, state ?? undefined))),
      dispose: () => call(instance, () => raw.dispose()),
    };
  }

  return {
    /** A folder path (Node) / base URL (browser), or `{ name: Uint8Array }` / `Map` of the model's files. */
    async loadModel(source) {
      let files = source;
      if (typeof source === 'string') {
        if (!readModelFiles) {
          throw new Error('[E_INVALID_OPTION] loadModel: this WASM entry cannot read model folders; pass the files as { name: Uint8Array }');
        }
        files = await readModelFiles(source);
      }
      const instance = await live();
      return wrapModel(instance, call(instance, () => instance.core.loadModelFromFiles(files)));
    },
    buildInfo() {
      const instance = liveSync();
      return call(instance, () => instance.core.buildInfo());
    },
    setThreads(n) {
      const instance = liveSync();
      return call(instance, () => instance.core.setThreads(n));
    },
    /** Starts the first instance now (entries call this so `buildInfo()` works right after import). */
    async ready() {
      await live();
    },
    /** How many instances were started (1 unless a trap forced re-instantiation). */
    instances: () => started,
  };
}
