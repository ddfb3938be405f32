/**
 * The main thread's side of the WASM worker (node-worker.js): a `RawBinding` whose models and
 * generations live in the worker, so a prefill or a load never blocks this thread's event loop.
 *
 * - Promise-returning calls (loadModel, describeModel, tokenize, logits, score, next) are messages
 *   answered later. The worker is ref'd only while one is outstanding: an idle one never keeps the
 *   process alive.
 * - Synchronous calls (detokenize, renderChat, generate, exportState, tokenIds, …) post their
 *   request and wait with Atomics.wait until the worker answers on a MessagePort read with
 *   receiveMessageOnPort. They wait for whatever the worker is running (as the native addon's
 *   `exportState` waits for a running step) — except `generate` / `generateChat`, which, while the
 *   worker is busy, post the start and report its errors from the first `next()`.
 * - cancel() and dispose() are posted, never waited for; the worker runs them in order, before any
 *   later request. A running step cannot see those messages, but each generation also has a shared
 *   stop cell that cancel() and dispose() set at once: the core reads it between the layers of a
 *   prompt's forward (binding.js's `interruptible`), so a prefill stops within a layer's time (the
 *   state keeps the pieces fed before it). A decode step runs to its end, as natively.
 * - `info()`, a generation's `stats()` and `lost()` answer from what the worker sent with its last
 *   answers, so they never wait (stats change only through calls on the generation, and every
 *   answer to one carries them).
 * - The model-independent checks (buildInfo, supportedFamilies, checkGenerateOptions,
 *   checkLoadOptions) run on a small instance in this thread (node-core.js): same module, same
 *   answers, no wait behind a prefill. setThreads is checked there and then posted to the worker.
 * - A worker that stops (exits, throws) rejects every outstanding and later call on its handles with
 *   `[E_INTERNAL] …`; the next load starts a fresh worker.
 */
import { MessageChannel, Worker, receiveMessageOnPort } from 'node:worker_threads';

import { RefusedFile, SizedBody } from './binding.js';
import { ANSWERED, CELLS, GONE, STOPPED, SYNC, WAITING, errorFromWire, ownedCopy } from './node-wire.js';

const WORKER = new URL('./node-worker.js', import.meta.url);

const internal = (message) => new Error(`[E_INTERNAL] ${message}`);

/** A value postMessage cannot copy (a function, a class with private state) in an argument. */
function notData(error) {
  return error instanceof Error && error.name === 'DataCloneError'
    ? new Error(`[E_INVALID_OPTION] an argument cannot be passed to the WASM worker thread: ${error.message}`)
    : error;
}

/** One worker thread and the handles that live in it. */
class WorkerHost {
  /** Why the worker stopped (then every call on its handles fails), or null. */
  gone = null;
  /** Model handle → why its WASM instance trapped (binding.js's `lost()`), as the worker reported. */
  lost = new Map();
  /** binding.js's instance count in the worker, as of its last answer. */
  instances = 0;
  #cells = new Int32Array(new SharedArrayBuffer(CELLS * Int32Array.BYTES_PER_ELEMENT));
  #replies;
  #worker;
  #count = 0;
  /** Outstanding asynchronous calls: id → { resolve, reject, keep }. */
  #pending = new Map();
  /** Reader functions of loads in progress, and the first error each threw: load id → … */
  #readers = new Map();
  #readerErrors = new Map();
  /** Loads whose worker side waits for a reader function running here. */
  #reading = new Set();
  #onStop;

  constructor(onStop) {
    this.#onStop = onStop;
    const { port1, port2 } = new MessageChannel();
    this.#replies = port1;
    port1.unref(); // read with receiveMessageOnPort only
    // No inherited execArgv: the worker runs plain ESM and some flags (`--input-type`) stop a worker from starting.
    this.#worker = new Worker(WORKER, { workerData: { cells: this.#cells, replies: port2 }, transferList: [port2], execArgv: [] });
    this.#worker.unref();
    this.#worker.on('message', (message) => this.#onMessage(message));
    this.#worker.on('error', (error) => this.#stop(`uncaught ${error instanceof Error ? error.message : String(error)}`));
    this.#worker.on('exit', (code) => this.#stop(`exit code ${code}`));
    this.#worker.on('messageerror', (error) => {
      // An answer that cannot be read would leave its caller waiting: give up on this worker.
      this.#stop(`unreadable message: ${error.message}`);
      void this.#worker.terminate();
    });
  }

  /** A fresh handle number (models and generations of this worker). */
  handle() {
    return ++this.#count;
  }

  /** An asynchronous call; `keep(answer)` sees the whole answer (a generation's stats). */
  request(op, args = {}, transfer = [], keep = undefined, reader = undefined) {
    if (this.gone !== null) return Promise.reject(this.#staleError());
    const id = ++this.#count;
    return new Promise((resolve, reject) => {
      this.#pending.set(id, { resolve, reject, keep });
      if (reader) this.#readers.set(id, reader);
      try {
        this.#worker.postMessage({ ...args, op, id }, transfer);
      } catch (error) {
        this.#forget(id);
        reject(notData(error));
      }
      this.#refresh();
    });
  }

  /** A synchronous call: waits (Atomics.wait) for the worker's answer. */
  call(op, args = {}, transfer = [], keep = undefined) {
    if (this.gone !== null) throw this.#staleError();
    const id = ++this.#count;
    Atomics.store(this.#cells, SYNC, WAITING);
    // Checked after WAITING is stored: an exit from now on stores STOPPED over it.
    if (Atomics.load(this.#cells, GONE) !== 0) this.#stopFromReplies();
    try {
      this.#worker.postMessage({ ...args, op, id, sync: true }, transfer);
    } catch (error) {
      throw notData(error);
    }
    for (;;) {
      Atomics.wait(this.#cells, SYNC, WAITING);
      for (let message = receiveMessageOnPort(this.#replies)?.message; message !== undefined; message = receiveMessageOnPort(this.#replies)?.message) {
        if (message.gone !== undefined) this.#stop(message.gone, true);
        if (message.reply === id) return this.#settle(message, keep);
      }
      // ANSWERED with no answer of ours cannot happen; wait again rather than misread it.
      if (Atomics.compareExchange(this.#cells, SYNC, ANSWERED, WAITING) === STOPPED) this.#stopFromReplies();
    }
  }

  /** A message nothing waits for (cancel, dispose, drop). A stopped worker has nothing to run it on. */
  post(op, args = {}, transfer = []) {
    if (this.gone !== null) return;
    try {
      this.#worker.postMessage({ ...args, op }, transfer);
    } catch (error) {
      throw notData(error);
    }
  }

  /** Whether the worker may be running a call now (then a synchronous call would wait for it). */
  busy() {
    return this.#pending.size > 0;
  }

  /** The worker stopped while this thread waited or was about to: fail the call in hand too. */
  #stopFromReplies() {
    let why = 'it stopped';
    for (let message = receiveMessageOnPort(this.#replies)?.message; message !== undefined; message = receiveMessageOnPort(this.#replies)?.message) {
      if (message.gone !== undefined) why = message.gone;
    }
    this.#stop(why, true);
  }

  #staleError() {
    return internal(`this handle belongs to a WASM worker thread that stopped (${this.gone}); load the model again`);
  }

  #stopError() {
    return internal(`the WASM worker thread stopped (${this.gone}); its models are unloaded, load the model again`);
  }

  /** Marks the worker stopped and fails what waits on it; `now`: throw for the synchronous call in hand. */
  #stop(why, now = false) {
    if (this.gone === null) {
      this.gone = why;
      for (const { reject } of this.#pending.values()) reject(this.#stopError());
      this.#pending.clear();
      this.#readers.clear();
      this.#readerErrors.clear();
      this.#reading.clear();
      this.#worker.unref();
      this.#onStop(this);
    }
    if (now) throw this.#stopError();
  }

  #forget(id) {
    this.#pending.delete(id);
    this.#readers.delete(id);
    this.#readerErrors.delete(id);
    this.#reading.delete(id);
    this.#refresh();
  }

  /**
   * Ref'd while an asynchronous call is outstanding (its `await` must keep the process alive) — but
   * not while every such call waits for a caller's reader function: what keeps the process alive
   * then is the reader's own work, and a reader that never settles must not hold it forever.
   */
  #refresh() {
    const working = [...this.#pending.keys()].some((id) => !this.#reading.has(id));
    if (working) this.#worker.ref();
    else this.#worker.unref();
  }

  /** Takes what every answer carries, then the call's own outcome (throws its error). */
  #settle(message, keep, readerError) {
    this.instances = message.instances;
    for (const [handle, why] of message.lost ?? []) this.lost.set(handle, why);
    keep?.(message);
    if (message.ok) return message.value;
    throw message.error.readerFailure && readerError !== undefined ? readerError : errorFromWire(message.error);
  }

  #onMessage(message) {
    if (message.read !== undefined) return void this.#read(message.read);
    if (message.notice) return void this.#settle({ ...message, ok: true });
    const waiting = this.#pending.get(message.reply);
    if (!waiting) return;
    const readerError = this.#readerErrors.get(message.reply);
    this.#forget(message.reply);
    let value;
    try {
      value = this.#settle(message, waiting.keep, readerError);
    } catch (error) {
      return waiting.reject(error);
    }
    waiting.resolve(value);
  }

  /** Runs the caller's reader function for the worker and sends what it gave. */
  async #read({ load, req, name, options }) {
    const reader = this.#readers.get(load);
    this.#reading.add(load);
    this.#refresh();
    try {
      if (!reader) throw new Error('the load ended');
      const data = await (options === undefined ? reader(name) : reader(name, options));
      const { answer, transfer } = marshalFile(data, options?.probe === true);
      if (this.gone === null) this.#worker.postMessage({ ...answer, op: 'read', req }, transfer);
    } catch (error) {
      // The load fails with the reader's own error (see #settle).
      if (this.#readers.has(load) && !this.#readerErrors.has(load)) this.#readerErrors.set(load, notData(error));
      if (this.gone === null) this.#worker.postMessage({ failed: true, op: 'read', req });
    } finally {
      this.#reading.delete(load);
      this.#refresh();
    }
  }
}

/** Whether a Blob can be posted as is (a file-backed one, from fs.openAsBlob, cannot). */
function postable(blob) {
  try {
    structuredClone(blob);
    return true;
  } catch {
    return false;
  }
}

/**
 * One file's contents as they cross to the worker: bytes copied (the caller's array is never
 * detached), a Blob posted (no copy) or, where it cannot be, streamed from this thread, a
 * RefusedFile as its reason. A probed file (only its presence counts) sends nothing.
 */
function marshalFile(data, probe) {
  if (data === null || data === undefined) return { answer: { data }, transfer: [] };
  if (data instanceof RefusedFile) return { answer: { refused: data.reason }, transfer: [] };
  if (probe) {
    if (data instanceof SizedBody) void data.body?.cancel?.().catch(() => undefined);
    return { answer: { found: true }, transfer: [] };
  }
  if (data instanceof SizedBody) return { answer: { sized: true, size: data.size, body: data.body }, transfer: [data.body] };
  const value = fileValue(data);
  return { answer: value?.sized ? value : { data: value }, transfer: transfersOf(value) };
}

/** A file map's value as posted: see {@link marshalFile}; other values stand for "not bytes". */
function fileValue(data) {
  if (data instanceof Uint8Array) return ownedCopy(data);
  if (data instanceof ArrayBuffer) return new Uint8Array(data.slice(0));
  if (typeof Blob !== 'undefined' && data instanceof Blob) return postable(data) ? data : { sized: true, size: data.size, body: data.stream() };
  // binding.js refuses anything else with the same message, whatever it was.
  return data === null || data === undefined || !['object', 'function', 'symbol'].includes(typeof data) ? data : {};
}

function transferList(value) {
  return value instanceof Uint8Array ? [value.buffer] : [];
}

/** What to hand over with a file value: its copied bytes, or the stream it is read from. */
function transfersOf(value) {
  return value?.sized ? [value.body] : transferList(value);
}

/** A model source as it crosses to the worker (decoded by `sourceOf` in node-worker.js). */
function marshalSource(source) {
  if (typeof source === 'string') return { source: { path: source }, transfer: [] };
  if (typeof source === 'function') {
    const fileNames = Array.isArray(source.fileNames) ? source.fileNames.filter((name) => typeof name === 'string') : undefined;
    return { source: { reader: true, fileNames }, transfer: [] };
  }
  if (source === null || typeof source !== 'object') {
    // binding.js refuses these; a symbol cannot be posted, and is refused the same way as null.
    return { source: { value: typeof source === 'symbol' ? null : source }, transfer: [] };
  }
  const entries = source instanceof Map ? [...source.entries()] : Object.entries(source);
  const transfer = [];
  const files = entries.map(([name, data]) => {
    const value = fileValue(data);
    transfer.push(...transfersOf(value));
    return [name, value];
  });
  return { source: { files, isMap: source instanceof Map }, transfer };
}

/** A CancelFlag whose state the worker reads from shared memory as `score` runs (between layers). */
export class CancelFlag {
  cell = new Int32Array(new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT));

  cancel() {
    Atomics.store(this.cell, 0, 1);
  }

  get cancelled() {
    return Atomics.load(this.cell, 0) !== 0;
  }
}

/** When a handle is collected here, the worker lets go of its object (the WASM memory follows). */
const collected = new FinalizationRegistry(({ host, args }) => host.post('drop', args));

function generationOf(host, model, op, args, transfer) {
  const gen = host.handle();
  // Set on cancel / dispose: the worker reads it between the layers of this generation's prefill,
  // which therefore stops within a layer's time instead of at the step's end.
  const stop = new Int32Array(new SharedArrayBuffer(Int32Array.BYTES_PER_ELEMENT));
  const stopNow = () => Atomics.store(stop, 0, 1);
  /** `stats()` as the worker last reported it: `{ value }` or `{ error }`. */
  let stats;
  const keep = (answer) => {
    if (answer.stats !== undefined) stats = answer.stats;
  };
  if (host.busy()) {
    // The worker is running a call (another generation's prefill, a load): waiting for it here
    // would hold this thread for seconds. The start is posted instead, ahead of this generation's
    // first `next()`; an error starting it (a bad state, a prompt past the context) comes from that.
    host.post(op, { ...args, model, gen, stop, deferred: true }, transfer);
  } else {
    host.call(op, { ...args, model, gen, stop }, transfer, keep);
  }
  const lost = () => host.gone !== null || host.lost.has(model);
  const generation = {
    // The answer's callback refers to this handle: it cannot be collected (and dropped in the
    // worker) while its step is outstanding.
    next: () => host.request('next', { gen }, [], (answer) => keep(answer) ?? generation),
    cancel: () => {
      stopNow();
      host.post('cancel', { gen });
    },
    exportState: () => host.call('exportState', { gen }, [], keep),
    stats: () => {
      // A trapped instance answers with its error, which the worker words.
      if (lost() || stats === undefined) return host.call('stats', { gen });
      if (stats.error !== undefined) throw errorFromWire(stats.error);
      return { ...stats.value };
    },
    tokenIds: () => host.call('tokenIds', { gen }),
    dispose: () => {
      stopNow();
      host.post('disposeGeneration', { gen });
    },
  };
  collected.register(generation, { host, args: { gen } });
  return generation;
}

function modelOf(host, model, info) {
  let disposed = false;
  // Given as an outstanding call's answer callback, it keeps this handle from being collected (and
  // dropped in the worker) until the call is answered.
  const hold = () => proxy;
  const start = (op, args, bytes) => {
    const state = bytes === null || bytes === undefined ? undefined : ownedCopy(bytes);
    return generationOf(host, model, op, { ...args, state }, transferList(state));
  };
  const proxy = {
    info: () => (disposed || info === undefined || host.gone !== null || host.lost.has(model) ? host.call('info', { model }) : structuredClone(info)),
    tokenize: (text, addSpecialTokens) => host.request('tokenize', { model, text, addSpecialTokens }, [], hold),
    snapshotLength: (head) => {
      const copy = ownedCopy(head);
      return host.call('snapshotLength', { model, head: copy }, transferList(copy));
    },
    detokenize: (ids, skipSpecialTokens) => host.call('detokenize', { model, ids, skipSpecialTokens }),
    logits: (ids) => host.request('logits', { model, ids }, [], hold),
    score: (ids, options, cancel) =>
      host.request('score', { model, ids, options, cancel: cancel instanceof CancelFlag ? cancel.cell : cancel === undefined || cancel === null ? undefined : cancel.cancelled === true }, [], hold),
    generate: (prompt, options, state) => start('generate', { prompt, options }, state),
    renderChat: (messages, addGenerationPrompt) => host.call('renderChat', { model, messages, addGenerationPrompt }),
    generateChat: (messages, options, state) => start('generateChat', { messages, options }, state),
    dispose: () => {
      disposed = true;
      host.post('disposeModel', { model });
    },
    lost: () => (host.gone !== null ? `the WASM worker thread stopped: ${host.gone}` : (host.lost.get(model) ?? null)),
  };
  collected.register(proxy, { host, args: { model } });
  return proxy;
}

/**
 * The `RawBinding` over worker threads. `local`: the in-thread binding of node-core.js, which
 * answers the model-independent checks.
 */
export function workerBinding(local) {
  let host = null;
  /** Instances started by workers that stopped. */
  let retired = 0;
  let threads;

  function live() {
    if (host === null || host.gone !== null) {
      host = new WorkerHost((stopped) => {
        retired += stopped.instances;
      });
      if (threads !== undefined) host.post('setThreads', { n: threads });
    }
    return host;
  }

  async function load(op, source, options) {
    const target = live();
    const { source: wire, transfer } = marshalSource(source);
    const reader = typeof source === 'function' ? source : undefined;
    if (op === 'describeModel') return target.request(op, { source: wire }, transfer, undefined, reader);
    const handle = target.handle();
    const { info } = await target.request(op, { source: wire, options, handle }, transfer, undefined, reader);
    return modelOf(target, handle, info);
  }

  return {
    loadModel: (source, options) => load('loadModel', source, options),
    describeModel: (source) => load('describeModel', source),
    supportedFamilies: () => local.supportedFamilies(),
    buildInfo: () => local.buildInfo(),
    setThreads(n) {
      local.setThreads(n); // checks it, in the core's words
      threads = Number(n); // what the core read (an f64)
      host?.post('setThreads', { n: threads });
    },
    checkGenerateOptions: (options) => local.checkGenerateOptions(options),
    checkLoadOptions: (options) => local.checkLoadOptions(options),
    CancelFlag,
    instances: () => retired + (host === null || host.gone !== null ? 0 : host.instances),
    /** binding.js's test hook; `worker-exit` / `worker-throw` end the worker thread instead. */
    injectFault: (kind) => live().call(kind === 'worker-exit' || kind === 'worker-throw' ? 'crash' : 'injectFault', { kind, how: kind }),
  };
}
