/**
 * Typed errors with stable codes, shared by every layer of phoenix-local.
 *
 * Bindings throw JS errors whose message is the core's wire form `[E_CODE] message`;
 * {@link toPhoenixError} turns those (and anything else thrown) into a {@link PhoenixError}.
 */

/** Every stable error code. The strings are public API: they never change meaning. */
export const ERROR_CODES = [
  'E_MODEL_NOT_FOUND',
  'E_BAD_CONFIG',
  'E_UNSUPPORTED_MODEL',
  'E_BAD_WEIGHTS',
  'E_TOKENIZER',
  'E_INVALID_OPTION',
  'E_ABORTED',
  'E_BACKEND_UNAVAILABLE',
  'E_STATE_MISMATCH',
  'E_CHECKSUM',
  'E_OFFLINE_VIOLATION',
  'E_INTERNAL',
] as const;

/**
 * A stable error code:
 * - `E_MODEL_NOT_FOUND` – no such model name / folder / weight file.
 * - `E_BAD_CONFIG` – `config.json` missing, malformed or inconsistent.
 * - `E_UNSUPPORTED_MODEL` – a model family or format this build cannot run.
 * - `E_BAD_WEIGHTS` – weight file truncated, tensor missing or of the wrong shape/dtype.
 * - `E_TOKENIZER` – text in/out requested but no usable `tokenizer.json`.
 * - `E_INVALID_OPTION` – an argument or option out of range (also: a disposed model).
 * - `E_ABORTED` – the operation was cancelled (signal, deadline, full queue).
 * - `E_BACKEND_UNAVAILABLE` – no binding backend (native / wasm) could be loaded.
 * - `E_STATE_MISMATCH` – a state snapshot does not belong to this model.
 * - `E_CHECKSUM` – weight files changed since their checksum was recorded.
 * - `E_OFFLINE_VIOLATION` – something attempted network access in offline mode.
 * - `E_INTERNAL` – a bug (a caught panic or an unexpected exception).
 */
export type ErrorCode = (typeof ERROR_CODES)[number];

const CODE_SET: ReadonlySet<string> = new Set(ERROR_CODES);

/** Whether `value` is one of the stable {@link ErrorCode}s. */
export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && CODE_SET.has(value);
}

/**
 * The one error type phoenix-local throws.
 *
 * @example
 * ```ts
 * try { await manager.loadModel('nope'); }
 * catch (e) { if (e instanceof PhoenixError && e.code === 'E_MODEL_NOT_FOUND') … }
 * ```
 */
export class PhoenixError extends Error {
  /** Stable machine-readable code. */
  readonly code: ErrorCode;
  /** Structured context (file, option, model name…), when known. */
  readonly details: Readonly<Record<string, unknown>>;

  constructor(code: ErrorCode, message: string, details: Record<string, unknown> = {}, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'PhoenixError';
    this.code = code;
    this.details = details;
  }

  /** The wire form used across bindings: `[E_CODE] message`. */
  toWire(): string {
    return `[${this.code}] ${this.message}`;
  }

  /** A JSON-friendly view (`JSON.stringify` of an Error drops its message otherwise). */
  toJSON(): { name: string; code: ErrorCode; message: string; details: Readonly<Record<string, unknown>> } {
    return { name: this.name, code: this.code, message: this.message, details: this.details };
  }
}

const WIRE_RE = /^\[(E_[A-Z_]+)\]\s?([\s\S]*)$/;

/**
 * Parses the wire form `[E_CODE] message`. Returns `undefined` when `text` is not in that form
 * or names an unknown code.
 */
export function parseWireError(text: string): { code: ErrorCode; message: string } | undefined {
  const match = WIRE_RE.exec(text);
  if (!match) return undefined;
  const [, code, message] = match;
  if (!isErrorCode(code)) return undefined;
  return { code, message: message ?? '' };
}

/**
 * Turns anything thrown into a {@link PhoenixError}: a `PhoenixError` is returned as is, a wire-form
 * message keeps its code, anything else becomes `E_INTERNAL` (with the original as `cause`).
 *
 * @param context - extra details merged into `details` (e.g. `{ model: 'x' }`).
 */
export function toPhoenixError(error: unknown, context: Record<string, unknown> = {}): PhoenixError {
  if (error instanceof PhoenixError) return error;
  const text = error instanceof Error ? error.message : String(error);
  const parsed = parseWireError(text);
  if (parsed) return new PhoenixError(parsed.code, parsed.message, context, { cause: error });
  // napi-rs may put the code on `.code` and the bare message in `.message`.
  const code = (error as { code?: unknown } | null)?.code;
  if (isErrorCode(code)) return new PhoenixError(code, text, context, { cause: error });
  return new PhoenixError('E_INTERNAL', `internal error: ${text}`, context, { cause: error });
}

/** Whether `error` is a {@link PhoenixError}, optionally with the given code. */
export function isPhoenixError(error: unknown, code?: ErrorCode): error is PhoenixError {
  return error instanceof PhoenixError && (code === undefined || error.code === code);
}
