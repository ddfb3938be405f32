/**
 * What the main thread (node-host.js) and the WASM worker (node-worker.js) share: the layout of the
 * shared cells a synchronous call waits on, and how errors and bytes cross the thread boundary.
 */

/** `cells[SYNC]`: the state of the synchronous call in flight. */
export const SYNC = 0;
/** `cells[GONE]`: 1 once the worker thread is exiting (set by its `exit` handler). */
export const GONE = 1;
export const CELLS = 2;

export const WAITING = 0;
export const ANSWERED = 1;
export const STOPPED = 2;

/**
 * An error as it crosses threads: the message carries the core's `[E_CODE] …` wire form, which is
 * all ts/binding/errors.ts reads (`code` too, for errors that carry one).
 */
export function errorToWire(error) {
  if (!(error instanceof Error)) return { message: String(error) };
  const wire = { message: error.message, name: error.name };
  if (typeof error.code === 'string') wire.code = error.code;
  return wire;
}

export function errorFromWire(wire) {
  const error = new Error(wire.message);
  if (wire.name && wire.name !== 'Error') error.name = wire.name;
  if (wire.code !== undefined) error.code = wire.code;
  return error;
}

/**
 * A copy of `bytes` that owns its whole buffer, to be transferred: a caller's array is never
 * detached, and a view into a larger buffer does not drag the rest of it along (structured clone
 * copies a view's entire buffer). Anything else is returned as is, for the receiver to refuse.
 */
export function ownedCopy(bytes) {
  return bytes instanceof Uint8Array ? new Uint8Array(bytes) : bytes;
}

/** The transfer list for a typed array made for the receiver (it owns its buffer outright). */
export function transferOf(view) {
  return ArrayBuffer.isView(view) && view.byteOffset === 0 && view.byteLength === view.buffer.byteLength && !(view.buffer instanceof SharedArrayBuffer)
    ? [view.buffer]
    : [];
}
