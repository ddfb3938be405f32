/**
 * What crosses the queue back to the caller: results, typed errors and streamed chunks as plain JSON,
 * and their checked decoding on the client (a payload from Redis is not trusted either).
 */
import { PhoenixError, isErrorCode } from '../../binding/errors.js';
import type { TokenChunk } from '../../engines/types.js';
import type { ProcessingResult } from '../types.js';

/** A typed error as it travels: the stable code and its message. */
export interface WireError {
  code: string;
  message: string;
}

/** A {@link ProcessingResult} as it travels (a state snapshot as base64). */
export type WireResult = Omit<ProcessingResult, 'metadata'> & { metadata: Omit<ProcessingResult['metadata'], 'state'> & { state?: string } };

export function encodeError(error: PhoenixError): WireError {
  return { code: error.code, message: error.message };
}

/** The error a worker sent, as a `PhoenixError`; an unknown code or malformed payload is `E_INTERNAL`. */
export function decodeError(value: unknown): PhoenixError {
  const wire = value as Partial<WireError> | null;
  if (wire && typeof wire === 'object' && isErrorCode(wire.code) && typeof wire.message === 'string') return new PhoenixError(wire.code, wire.message);
  return new PhoenixError('E_INTERNAL', 'a queue worker sent a malformed error');
}

export function encodeResult(result: ProcessingResult): WireResult {
  const { state, ...metadata } = result.metadata;
  return { ...result, metadata: { ...metadata, ...(state ? { state: Buffer.from(state).toString('base64') } : {}) } };
}

/** A result a worker sent; anything that is not shaped like one is `E_INTERNAL`. */
export function decodeResult(value: unknown): ProcessingResult {
  const wire = value as Partial<WireResult> | null;
  if (!wire || typeof wire !== 'object' || typeof wire.requestId !== 'string' || typeof wire.success !== 'boolean' || !wire.metadata || typeof wire.metadata !== 'object') {
    throw new PhoenixError('E_INTERNAL', 'a queue worker sent a malformed result');
  }
  if (wire.errorCode !== undefined && !isErrorCode(wire.errorCode)) throw new PhoenixError('E_INTERNAL', 'a queue worker sent a result with an unknown error code');
  const { state, ...metadata } = wire.metadata;
  return { ...(wire as WireResult), metadata: { ...metadata, ...(typeof state === 'string' ? { state: new Uint8Array(Buffer.from(state, 'base64')) } : {}) } } as ProcessingResult;
}

/** A streamed chunk with its position, so a reader can put chunks in order and drop repeats. */
export interface WireChunk {
  seq: number;
  text: string;
  tokenId: number | null;
}

export function encodeChunk(seq: number, chunk: TokenChunk): WireChunk {
  return { seq, text: chunk.text, tokenId: chunk.tokenId };
}

export function decodeChunk(value: unknown): WireChunk {
  const wire = value as Partial<WireChunk> | null;
  if (!wire || typeof wire !== 'object' || !Number.isSafeInteger(wire.seq) || typeof wire.text !== 'string' || !(wire.tokenId === null || Number.isSafeInteger(wire.tokenId))) {
    throw new PhoenixError('E_INTERNAL', 'a queue worker sent a malformed chunk');
  }
  return { seq: wire.seq as number, text: wire.text, tokenId: wire.tokenId as number | null };
}
