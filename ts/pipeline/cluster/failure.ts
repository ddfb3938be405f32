/**
 * The `success: false` result a queue client returns when a request never got a result from a worker
 * (refused before enqueueing, cancelled, the queue unreachable): the same shape as in-process failures.
 */
import type { PhoenixError } from '../../binding/errors.js';
import { ProcessingMode } from '../modes.js';
import type { ProcessingRequest, ProcessingResult } from '../types.js';

/** What stopped a request on the client's side: queued (not yet on a worker), or running on one (`onWorker`) without sending its result in time. */
export interface ClientStop {
  by: 'signal' | 'deadline';
  onWorker: boolean;
  deadlineMs: number;
}

export function failedResult(request: ProcessingRequest, error: PhoenixError, startedAt: number, stop?: ClientStop): ProcessingResult {
  return {
    requestId: typeof request?.id === 'string' ? request.id : String(request?.id),
    success: false,
    errorCode: error.code,
    errorMessage: error.message,
    processingTime: performance.now() - startedAt,
    promptTokens: 0,
    generatedTokens: 0,
    tokensPerSecond: 0,
    energyConsumed: 0,
    energySource: 'estimate',
    fallbackUsed: false,
    skippedModels: [],
    metadata: {
      mode: request?.mode ?? ProcessingMode.FULL_CAPABILITY,
      ...(stop ? { stoppedBy: stop.by, stoppedDuring: stop.onWorker ? 'generation' : 'queue' } : {}),
      ...(stop && Number.isFinite(stop.deadlineMs) ? { deadlineMs: stop.deadlineMs } : {}),
    },
  };
}
