/**
 * The WASM binding's worker thread (started by node-host.js): it runs the in-thread binding of
 * node-core.js — so the core's long synchronous calls (a prompt's prefill, a load) block this
 * thread, never the main thread's event loop — and answers the main thread's messages:
 *
 *   { op, id, sync: true, … }  a synchronous call: answered on `replies`, then `cells[SYNC]` is
 *                              notified (the main thread waits on it with Atomics.wait)
 *   { op, id, … }              an asynchronous call: answered with { reply: id, … } on parentPort
 *   { op, … }                  no answer (cancel, dispose, drop, setThreads)
 *
 * Models and generations stay here, under the numeric handles the main thread picked. Every answer
 * carries `instances` (binding.js's count); a failed one also carries `lost`, the handles whose WASM
 * instance trapped, so the main thread's `lost()` needs no round trip.
 */
import { parentPort, workerData } from 'node:worker_threads';

import { RefusedFile, SizedBody, binding } from './node-core.js';
import { ANSWERED, GONE, STOPPED, SYNC, errorToWire, transferOf } from './node-wire.js';

const { cells, replies } = workerData;

// However this thread ends, a main thread blocked in a synchronous call must not wait forever.
let fatal = null;
process.on('uncaughtExceptionMonitor', (error) => {
  fatal ??= error instanceof Error ? error.message : String(error);
});
process.on('exit', (code) => {
  replies.postMessage({ gone: fatal ?? `exit code ${code}` });
  Atomics.store(cells, GONE, 1);
  Atomics.store(cells, SYNC, STOPPED);
  Atomics.notify(cells, SYNC);
});

/** Handle → binding.js model / generation (kept after dispose: later calls answer "disposed"). */
const models = new Map();
const generations = new Map();

/** A reader function's failure: the main thread rethrows the reader's own error in its place. */
class ReaderFailed extends Error {}

/** Reads the main thread answers for a reader-function source: request number → its promise. */
const reads = new Map();
let readCount = 0;

/** A reader function that asks the main thread, where the caller's reader runs, for each file. */
function remoteReader(load, fileNames) {
  const read = (name, options) =>
    new Promise((resolve, reject) => {
      const req = ++readCount;
      reads.set(req, { resolve, reject });
      parentPort.postMessage({ read: { load, req, name, options } });
    });
  if (fileNames !== undefined) read.fileNames = fileNames;
  return read;
}

/** What a file's answer stands for in binding.js's terms. */
function fileData(answer) {
  if (answer.refused !== undefined) return new RefusedFile(answer.refused);
  if (answer.sized) return new SizedBody(answer.size, answer.body);
  // A probed file the caller's reader found: only its presence counts (nothing is read).
  if (answer.found) return new Uint8Array(0);
  return answer.data;
}

function answerRead({ req, failed, ...answer }) {
  const waiting = reads.get(req);
  reads.delete(req);
  if (failed) waiting?.reject(new ReaderFailed('the model file reader failed'));
  else waiting?.resolve(fileData(answer));
}

/** The source as binding.js takes it (see `marshalSource` in node-host.js). */
function sourceOf({ source }, id) {
  if (source.path !== undefined) return source.path;
  if (source.reader) return remoteReader(id, source.fileNames);
  if (source.files === undefined) return source.value;
  // Streamed Blobs come as { sized, size, body }; node-host.js replaced any other object value.
  const entries = source.files.map(([name, value]) => [name, value?.sized ? fileData(value) : value]);
  return source.isMap ? new Map(entries) : Object.fromEntries(entries);
}

function model(handle) {
  return models.get(handle);
}

/** Generation handle → its stop flag: a shared cell the main thread sets on cancel / dispose, read
 * between the layers of the generation's prefill (binding.js's `interruptible`). */
const stops = new Map();

/** Generations whose posted (deferred) start failed: handle → the error, thrown by every later call. */
const failedStarts = new Map();

function generation(handle) {
  const failed = failedStarts.get(handle);
  if (failed !== undefined) throw failed;
  return generations.get(handle);
}

/** A generation's stats as `stats()` would answer now (the main thread answers `stats()` from it). */
function statsOf(handle) {
  try {
    return { value: generation(handle).stats() };
  } catch (error) {
    return { error: errorToWire(error) };
  }
}

/** A result with the buffers to hand over instead of copying. */
class Moving {
  constructor(value, transfer) {
    this.value = value;
    this.transfer = transfer;
  }
}
const moving = (value, transfer) => new Moving(value, transfer);

/** A cancel flag as binding.js reads it: a shared cell the main thread sets (a CancelFlag's, a
 * generation's stop cell), or a snapshot. */
function cancelFlag(cell) {
  if (cell === undefined) return undefined;
  return {
    get cancelled() {
      return typeof cell === 'boolean' ? cell : Atomics.load(cell, 0) !== 0;
    },
  };
}

/** Answers of a load: the model's info rides along (the main thread's `info()` reads it). */
function loaded(handle, raw) {
  models.set(handle, raw);
  try {
    return { info: raw.info() };
  } catch {
    return {}; // the main thread asks again, and gets this error then
  }
}

function started(handle, raw) {
  generations.set(handle, raw);
  return null;
}

/** Starts a generation; a deferred start (nothing waits for it) keeps its error for the calls that follow. */
function start(m, begin) {
  if (m.stop !== undefined) stops.set(m.gen, cancelFlag(m.stop));
  try {
    return started(m.gen, begin(model(m.model)));
  } catch (error) {
    if (!m.deferred) throw error;
    failedStarts.set(m.gen, error);
    return null;
  }
}

const OPS = {
  loadModel: async (m) => loaded(m.handle, await binding.loadModel(sourceOf(m, m.id), m.options)),
  describeModel: (m) => binding.describeModel(sourceOf(m, m.id)),
  setThreads: (m) => binding.setThreads(m.n),
  injectFault: (m) => binding.injectFault(m.kind),

  info: (m) => model(m.model).info(),
  tokenize: (m) => model(m.model).tokenize(m.text, m.addSpecialTokens),
  detokenize: (m) => model(m.model).detokenize(m.ids, m.skipSpecialTokens),
  snapshotLength: (m) => model(m.model).snapshotLength(m.head),
  logits: async (m) => {
    const logits = await model(m.model).logits(m.ids);
    return moving(logits, transferOf(logits));
  },
  score: async (m) => {
    const score = await model(m.model).score(m.ids, m.options, cancelFlag(m.cancel));
    return moving(score, transferOf(score?.logits));
  },
  renderChat: (m) => model(m.model).renderChat(m.messages, m.addGenerationPrompt),
  generate: (m) => start(m, (raw) => raw.generate(m.prompt, m.options, m.state)),
  generateChat: (m) => start(m, (raw) => raw.generateChat(m.messages, m.options, m.state)),
  disposeModel: (m) => model(m.model).dispose(),

  next: (m) => generation(m.gen).next(stops.get(m.gen)),
  cancel: (m) => generation(m.gen).cancel(),
  exportState: (m) => {
    const state = generation(m.gen).exportState();
    return moving(state, transferOf(state));
  },
  stats: (m) => generation(m.gen).stats(),
  tokenIds: (m) => generation(m.gen).tokenIds(),
  disposeGeneration: (m) => {
    stops.delete(m.gen);
    return generation(m.gen).dispose();
  },

  // Test hook, injectFault('worker-exit' | 'worker-throw'): this thread ends as a crash would end it.
  crash: (m) => {
    if (m.how === 'worker-exit') process.exit(70);
    setImmediate(() => {
      throw new Error('fault injected on request (worker-throw)');
    });
    return new Promise(() => undefined);
  },

  // A handle collected on the main thread can never be used again: free what it held now, rather
  // than when this thread's collector (which sees no pressure from WASM memory) gets to it.
  drop: (m) => {
    for (const [map, handle] of [
      [models, m.model],
      [generations, m.gen],
    ]) {
      if (handle === undefined) continue;
      try {
        map.get(handle)?.dispose();
      } catch {
        // already gone with a trapped instance
      }
      map.delete(handle);
    }
    failedStarts.delete(m.gen);
    stops.delete(m.gen);
  },
};

/** The handles of models whose WASM instance trapped, with why (binding.js's `lost()`). */
function lostModels() {
  const lost = [];
  for (const [handle, raw] of models) {
    const why = raw.lost();
    if (why !== null) lost.push([handle, why]);
  }
  return lost;
}

function answer(m, outcome) {
  const message = { reply: m.id, instances: binding.instances(), ...outcome };
  // Calls on a generation report its stats as they are after the call (ok or not).
  if (m.gen !== undefined) message.stats = statsOf(m.gen);
  let transfer = [];
  if (outcome.ok && outcome.value instanceof Moving) {
    transfer = outcome.value.transfer;
    message.value = outcome.value.value;
  }
  if (!m.sync) return parentPort.postMessage(message, transfer);
  replies.postMessage(message, transfer);
  Atomics.store(cells, SYNC, ANSWERED);
  Atomics.notify(cells, SYNC);
}

function failure(error) {
  return { ok: false, error: { ...errorToWire(error), readerFailure: error instanceof ReaderFailed }, lost: lostModels() };
}

function serve(m) {
  if (m.op === 'read') return answerRead(m);
  let result;
  try {
    result = OPS[m.op](m);
  } catch (error) {
    result = Promise.reject(error);
  }
  if (m.id === undefined) {
    // Nothing waits for an answer; a trap is still news to the main thread's lost().
    Promise.resolve(result).catch(() => parentPort.postMessage({ notice: true, instances: binding.instances(), lost: lostModels() }));
    return;
  }
  if (m.sync && !(result instanceof Promise)) return answer(m, { ok: true, value: result });
  Promise.resolve(result).then(
    (value) => answer(m, { ok: true, value }),
    (error) => answer(m, failure(error)),
  );
}

parentPort.on('message', serve);
