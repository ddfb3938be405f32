/**
 * The JS half of the WASM binding, shared by the Node entry (`phoenix-local.js`) and the browser
 * entry (`browser.js`). It turns the wasm-bindgen module (crates/wasm/src/lib.rs) into a `RawBinding`
 * of ts/binding/types.ts:
 *
 * - `loadModel(source, { kvCache }?)`: a folder path (Node) or base URL (browser) is read through the entry's
 *   `fileReader`; a reader function `(name) => Promise<Uint8Array | Blob | null>` is asked for just
 *   the files the core needs; an object / Map of file name → Uint8Array is copied in. Blobs are
 *   streamed into WASM memory in chunks (no whole-file JS copy).
 * - `describeModel(source)`: the same sources, described as the core would load them (family,
 *   format, the files a load reads) from the files the core's describe reads (`describeReads()`);
 *   every other file is only looked for (`read(name, { probe: true })`), so no weights are read.
 * - Traps (`WebAssembly.RuntimeError`): a Rust panic in a panic=abort build, or in any build a stack
 *   overflow / out-of-memory abort. Rethrown as `[E_INTERNAL] …` (with the panic message when there
 *   is one); the instance is marked dead (its memory may be mid-update), every handle from it then
 *   fails with `E_INTERNAL`, and the next `loadModel` instantiates a fresh module. (panic=unwind
 *   builds catch panics in the core instead: `[E_INTERNAL] internal error (caught panic): …`.)
 *
 * No model, tokenizer or sampling logic lives here.
 */

/**
 * Copies one file into the set: a `Uint8Array` at once; a `Blob` (a browser `File`, a fetched body,
 * Node's `fs.openAsBlob`) chunk by chunk, so no full JS copy of a large checkpoint is ever held.
 */
async function addFile(set, name, data) {
  if (data instanceof ArrayBuffer) data = new Uint8Array(data);
  if (data instanceof Uint8Array) return set.add(name, data);
  if (typeof Blob !== 'undefined' && data instanceof Blob) return appendStream(set, name, data.size, data.stream());
  if (data instanceof SizedBody) return appendStream(set, name, data.size, data.body);
  throw new Error(`[E_INVALID_OPTION] files[${JSON.stringify(name)}]: expected a Uint8Array, ArrayBuffer or Blob`);
}

/**
 * An HTTP body of known length (the browser entry's fetches): streamed straight into WASM memory,
 * without first collecting it into a Blob.
 */
export class SizedBody {
  constructor(size, body) {
    this.size = size;
    this.body = body;
  }
}

async function appendStream(set, name, size, stream) {
  const reader = stream.getReader();
  try {
    set.begin(name, size);
    for (let part = await reader.read(); !part.done; part = await reader.read()) set.append(part.value);
  } catch (error) {
    // Release the source (e.g. an open file handle) instead of leaving it to the garbage collector.
    await reader.cancel().catch(() => undefined);
    throw error;
  }
}

/**
 * What a reader returns for a file it found but will not read: `reason` is `not-regular` (a FIFO,
 * device or folder), `outside` (it resolves outside the model folder and the models dir) or
 * `dangling` (a link to nothing). The core then fails the load on that file exactly as its native
 * folder loader does (same code, same message).
 */
export class RefusedFile {
  constructor(reason) {
    this.reason = reason;
  }
}

/**
 * Fills a `ModelFileSet` through `read(name)` (resolves the file's bytes / Blob, or `null` when it
 * does not exist), asking the core which files to read next (`filesToRead`): the core's own order
 * and choice of weight container, so e.g. a folder holding both `model.safetensors` and
 * `pytorch_model.bin` does not load twice the bytes.
 */
async function readModelFiles(set, read) {
  const absent = [];
  describeSource(set, read);
  for (let wanted = set.filesToRead(absent); wanted.length > 0; wanted = set.filesToRead(absent)) {
    for (const name of wanted) {
      const data = await read(name);
      if (data === null || data === undefined) absent.push(name);
      else if (data instanceof RefusedFile) set.refuse(name, data.reason);
      else await addFile(set, name, data);
    }
  }
}

/** Lets go of what a reader returned for a file that is only looked for (closes a file, ends a download). */
async function discard(data) {
  const stream = data instanceof SizedBody ? data.body : null;
  await stream?.cancel?.().catch(() => undefined);
}

/**
 * Fills a `ModelFileSet` for describing: the files the load would look for, in the core's order
 * (`filesToRead`), read only when the core's describe reads them (`reads`), otherwise recorded as
 * found. `read(name, { probe: true })` may answer without reading (a HEAD request, an fstat).
 */
async function describeModelFiles(set, read) {
  const absent = [];
  describeSource(set, read);
  for (let wanted = set.filesToRead(absent); wanted.length > 0; wanted = set.filesToRead(absent)) {
    for (const name of wanted) {
      const probe = !set.describeReads(name);
      const data = await read(name, { probe });
      if (data === null || data === undefined) absent.push(name);
      else if (data instanceof RefusedFile) set.refuse(name, data.reason);
      else if (probe) {
        await discard(data);
        set.found(name);
      } else await addFile(set, name, data);
    }
  }
}

/**
 * Tells the set what the reader knows beyond single files: `read.modelFile`, the file a path / URL
 * named as the model (a `.gguf`), and `read.fileNames`, every name the source holds (a folder's
 * entries, a file map's keys), from which the core picks a lone `.gguf`. The core decides with both.
 */
function describeSource(set, read) {
  if (typeof read.modelFile === 'string') set.modelFile(read.modelFile);
  if (Array.isArray(read.fileNames)) set.listing(read.fileNames.filter((name) => typeof name === 'string'));
}

/** A reader over an in-memory `{ name: bytes }` object or `Map` (it lists its names). */
function mapReader(files) {
  const entries = new Map(fileEntries(files));
  const read = async (name) => entries.get(name) ?? null;
  read.fileNames = [...entries.keys()];
  return read;
}

/** The entries of an in-memory `{ name: bytes }` object or `Map`. */
function fileEntries(files) {
  if (files instanceof Map) return [...files.entries()];
  if (files && typeof files === 'object') return Object.entries(files);
  throw new Error('[E_INVALID_OPTION] loadModel: expected a folder path / URL, a reader function, or { name: Uint8Array }');
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

/**
 * The binding's cancel flag (the native addon's is a Rust object its worker threads read). Here a
 * call runs on the calling thread, so the core sees the flag as the call starts.
 */
export class CancelFlag {
  cancelled = false;

  cancel() {
    this.cancelled = true;
  }
}

function isTrap(error) {
  return typeof WebAssembly !== 'undefined' && error instanceof WebAssembly.RuntimeError;
}

/**
 * @param {{ instantiate: () => object | Promise<object>, fileReader?: (source: string, core: { isGgufName(name: string): Promise<boolean> }) => Promise<(name: string) => Promise<Uint8Array | null>> }} entry
 *   `fileReader(source)` checks a folder path / base URL and returns the reader of its files. A
 *   source naming one file (a path / URL to a `.gguf`) gives a reader of the folder holding it with
 *   `root` (that folder) and `modelFile` (the file's name) set; a reader that can list its folder
 *   sets `fileNames`.
 *   `instantiate` returns a fresh, initialised wasm-bindgen module on each call (synchronously in
 *   Node, so `buildInfo()` works right after import; browsers await `ready()` first).
 */
export function createBinding({ instantiate, fileReader }) {
  /** The live instance: `{ core, dead: string | null }`. */
  let current = null;
  /** Instances started so far (shown in messages, useful when a trap forced a new one). */
  let started = 0;

  /** A fresh instance's record; `stopped` is the core's error if it stops the instance on purpose. */
  function record(core) {
    const instance = { core, dead: null, stopped: null, number: ++started, interrupt: null };
    core.onStop?.((report) => {
      instance.stopped = String(report);
    });
    // Read between the layers of a prompt's forward: a flag another thread can set while the call
    // runs here (node-worker.js's shared cells) stops it there.
    core.setInterruptPoll?.(() => instance.interrupt?.cancelled === true);
    return instance;
  }

  async function live() {
    if (!current || current.dead) {
      const core = await instantiate();
      current = record(core);
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
      current = record(core);
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
    const what = instance.stopped ?? (panic ? `panic: ${panic}` : `WebAssembly trap: ${error.message}`);
    instance.dead = what;
    // The core stopped the instance on purpose (a chat template past its memory budget) and said why
    // in a core error; any other trap is an internal failure.
    const wrapped = instance.stopped
      ? new Error(`${instance.stopped} (the WASM module was stopped: its models are unloaded, load the model again)`)
      : new Error(`[E_INTERNAL] internal error in the WASM module (${what}); its models are unloaded, load the model again`);
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

  /** `call` with `flag` (an object whose `cancelled` says stop, or undefined) read between layers. */
  function interruptible(instance, flag, fn) {
    return call(instance, () => {
      instance.interrupt = flag ?? null;
      try {
        return fn();
      } finally {
        instance.interrupt = null;
      }
    });
  }

  /** Freeing or cancelling a handle whose instance trapped: nothing is left to free or stop. */
  function release(instance, fn) {
    if (!instance.dead) call(instance, fn);
  }

  function wrapGeneration(instance, raw) {
    return {
      // `interrupt`: a flag the caller may set while the step runs (see `interruptible`).
      next: (interrupt) => yieldToEventLoop().then(() => interruptible(instance, interrupt, () => raw.next())),
      cancel: () => release(instance, () => raw.cancel()),
      exportState: () => call(instance, () => raw.exportState()),
      stats: () => call(instance, () => raw.stats()),
      tokenIds: () => call(instance, () => raw.tokenIds()),
      dispose: () => release(instance, () => raw.dispose()),
    };
  }

  function wrapModel(instance, raw) {
    return {
      info: () => call(instance, () => raw.info()),
      tokenize: (text, addSpecialTokens) => yieldToEventLoop().then(() => call(instance, () => raw.tokenize(text, addSpecialTokens))),
      snapshotLength: (head) => call(instance, () => raw.snapshotLength(head)),
      detokenize: (ids, skipSpecialTokens) => call(instance, () => raw.detokenize(ids, skipSpecialTokens)),
      logits: (ids) => yieldToEventLoop().then(() => call(instance, () => raw.logits(ids))),
      score: (ids, options, cancel) =>
        yieldToEventLoop().then(() => interruptible(instance, cancel, () => raw.score(ids, options, cancel?.cancelled === true))),
      generate: (prompt, options, state) =>
        wrapGeneration(instance, call(instance, () => raw.generate(prompt, options, state ?? undefined))),
      renderChat: (messages, addGenerationPrompt) => call(instance, () => raw.renderChat(messages, addGenerationPrompt)),
      generateChat: (messages, options, state) =>
        wrapGeneration(instance, call(instance, () => raw.generateChat(messages, options, state ?? undefined))),
      dispose: () => release(instance, () => raw.dispose()),
      // Why the handle is gone (its instance trapped: weights and states went with it), or null.
      lost: () => instance.dead,
    };
  }

  /**
   * Runs `fill(set, read)` on a fresh `ModelFileSet` for `source` and then `finish(set)`; every call
   * into the set goes through `call`, so a trap while copying is translated too.
   */
  async function withFileSet(root, fill, finish) {
    const instance = await live();
    const set = call(instance, () => new instance.core.ModelFileSet(root));
    try {
      const guarded = {
        add: (name, bytes) => call(instance, () => set.add(name, bytes)),
        begin: (name, size) => call(instance, () => set.begin(name, size)),
        append: (chunk) => call(instance, () => set.append(chunk)),
        filesToRead: (absent) => call(instance, () => set.filesToRead(absent)),
        refuse: (name, reason) => call(instance, () => set.refuse(name, reason)),
        found: (name) => call(instance, () => set.found(name)),
        modelFile: (name) => call(instance, () => set.modelFile(name)),
        listing: (names) => call(instance, () => set.listing(names)),
        describeReads: (name) => call(instance, () => set.describeReads(name)),
      };
      await fill(instance, guarded);
      return finish(instance, set);
    } finally {
      if (!instance.dead) set.free();
    }
  }

  /**
   * The reader of `source` and the root its files are named in: a folder path / base URL through the
   * entry's `fileReader` (a path / URL to a `.gguf` file: the folder holding it, `read.root`), a
   * reader function as given, or a reader over a file map.
   */
  async function readerOf(source, what) {
    if (typeof source === 'function') return { read: source, root: undefined };
    if (typeof source !== 'string') return { read: mapReader(source), root: undefined };
    if (!fileReader) {
      throw new Error(`[E_INVALID_OPTION] ${what}: this WASM entry cannot read model folders; pass a reader function or { name: Uint8Array }`);
    }
    const read = await fileReader(source, { isGgufName });
    return { read, root: typeof read.root === 'string' ? read.root : source };
  }

  /** The core's answer to whether `name` names a GGUF file (a path / URL ending in one is a model file). */
  async function isGgufName(name) {
    const instance = await live();
    return call(instance, () => instance.core.isGgufName(name));
  }

  return {
    /**
     * A folder path (Node) / base URL (browser), a reader `(name) => Promise<Uint8Array | null>`, or
     * `{ name: Uint8Array }` / `Map` of the model's files.
     */
    async loadModel(source, options) {
      const kvCache = options?.kvCache; // shape checked by ts/binding/wrap.ts, value by the core
      if (typeof source !== 'string' && typeof source !== 'function') {
        // Files in memory are all copied in; the set learns their names, so a lone `.gguf` is the model.
        const entries = fileEntries(source);
        return withFileSet(
          undefined,
          async (_, set) => {
            set.listing(entries.map(([name]) => name));
            for (const [name, bytes] of entries) await addFile(set, name, bytes);
          },
          (instance, set) => wrapModel(instance, call(instance, () => set.load(kvCache))),
        );
      }
      const { read, root } = await readerOf(source, 'loadModel');
      return withFileSet(
        root,
        (_, set) => readModelFiles(set, read),
        (instance, set) => wrapModel(instance, call(instance, () => set.load(kvCache))),
      );
    },
    /**
     * What the core would load from `source` (the sources of `loadModel`): family, engine kind,
     * format and the files a load reads. Reads only the files the core's describe reads.
     */
    async describeModel(source) {
      const { read, root } = await readerOf(source, 'describeModel');
      return withFileSet(
        root,
        (_, set) => describeModelFiles(set, read),
        (instance, set) => call(instance, () => set.describe()),
      );
    },
    supportedFamilies() {
      const instance = liveSync();
      return call(instance, () => instance.core.supportedFamilies());
    },
    buildInfo() {
      const instance = liveSync();
      return call(instance, () => instance.core.buildInfo());
    },
    setThreads(n) {
      const instance = liveSync();
      return call(instance, () => instance.core.setThreads(n));
    },
    checkGenerateOptions(options) {
      const instance = liveSync();
      return call(instance, () => instance.core.checkGenerateOptions(options));
    },
    checkLoadOptions(options) {
      const instance = liveSync();
      return call(instance, () => instance.core.checkLoadOptions(options?.kvCache)); // useMmap: files are read whole here
    },
    /** Starts the first instance now (entries call this so `buildInfo()` works right after import). */
    async ready() {
      await live();
    },
    CancelFlag,
    /** How many instances were started (1 unless a trap forced re-instantiation). */
    instances: () => started,
    /** Test hook: fails inside WASM on purpose (`'panic'` | `'trap'`) to exercise the recovery above. */
    injectFault(kind) {
      const instance = liveSync();
      return call(instance, () => instance.core.injectFault(kind));
    },
  };
}
