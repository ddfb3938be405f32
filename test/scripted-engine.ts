/**
 * An engine with scripted behaviour, for tests of the pipeline's orchestration (which model is tried,
 * in what order, what happens when a step is slow): it loads only the names it is told to, can hold a
 * load or a scoring call until released, and generates a fixed text after a delay. Inference itself is
 * covered on real models elsewhere (pipeline.test.ts).
 */
import { PhoenixError } from '../ts/binding/errors.js';
import type { GenerationResult, GenerationStream, InferenceEngine, LoadedModel, ScoreResult, TokenChunk } from '../ts/engines/types.js';
import type { ModelMetadata } from '../ts/models/metadata.js';

/** A promise released from outside. */
export class Gate {
  readonly opened: Promise<void>;
  open!: () => void;
  constructor() {
    this.opened = new Promise<void>((resolve) => (this.open = resolve));
  }
}

export class ScriptedEngine implements InferenceEngine {
  readonly name = 'scripted';
  readonly loadAttempts: string[] = [];
  /** Loads that returned a model, in order. */
  readonly loaded: LoadedModel[] = [];
  readonly started: string[] = [];
  /** Model types this engine accepts. */
  modelTypes = new Set(['mamba']);
  /** When set, every load waits for it. */
  loadGate: Gate | undefined;
  /** When set, every scoring call waits for it. */
  scoreGate: Gate | undefined;
  /** Tokens each generation yields (the first after `delayMs`, the rest one per event-loop turn). */
  tokensPerStream = 1;
  /** Tokens yielded by all generations so far. */
  produced = 0;
  /** Scoring calls that have not finished. */
  scoring = 0;
  active = 0;
  maxActive = 0;
  /** Streams whose `dispose()` was called. */
  disposedStreams = 0;
  constructor(
    readonly failing: Set<string>,
    readonly delayMs: number,
  ) {}
  canLoad(metadata: ModelMetadata): boolean {
    return this.modelTypes.has(metadata.modelType);
  }
  async loadModel(metadata: ModelMetadata): Promise<LoadedModel> {
    this.loadAttempts.push(metadata.name);
    await this.loadGate?.opened;
    if (this.failing.has(metadata.name)) throw new PhoenixError('E_BAD_WEIGHTS', `${metadata.name}: scripted failure`);
    let disposed = false;
    const model: LoadedModel = {
      name: metadata.name,
      metadata,
      info: { vocabSize: 512 } as LoadedModel['info'],
      engine: this.name,
      memoryBytes: metadata.sizeBytes,
      get disposed() {
        return disposed;
      },
      tokenize: async () => [],
      snapshotLength: () => 0,
      detokenize: () => '',
      dispose: () => {
        disposed = true;
      },
      [Symbol.dispose]() {
        disposed = true;
      },
    };
    this.loaded.push(model);
    return model;
  }
  async predict(): Promise<GenerationResult> {
    throw new Error('unused');
  }
  stream(model: LoadedModel, input: unknown, options: { signal?: AbortSignal } = {}): GenerationStream {
    const tag = typeof input === 'string' ? input : JSON.stringify(input);
    this.started.push(tag);
    const delay = this.delayMs;
    const self = this;
    let resolve!: (r: GenerationResult) => void;
    const result = new Promise<GenerationResult>((r) => (resolve = r));
    return {
      result,
      cancel() {},
      exportState: () => new Uint8Array(),
      dispose: () => {
        self.disposedStreams++;
      },
      async *[Symbol.asyncIterator](): AsyncIterator<TokenChunk> {
        self.active++;
        self.maxActive = Math.max(self.maxActive, self.active);
        await new Promise((r) => setTimeout(r, delay));
        self.active--;
        // Pull-based like the real engines: each token is computed when the reader asks for it.
        let generated = 0;
        while (generated < self.tokensPerStream && !options.signal?.aborted) {
          if (generated > 0) await new Promise((r) => setImmediate(r));
          generated++;
          self.produced++;
          yield { text: generated === 1 ? `${model.name}:${tag}` : '.', tokenId: 1 };
        }
        const aborted = generated < self.tokensPerStream;
        const text = generated === 0 ? '' : `${model.name}:${tag}${'.'.repeat(generated - 1)}`;
        resolve({
          text,
          tokenIds: Array.from({ length: generated }, () => 1),
          finishReason: aborted ? 'abort' : 'length',
          promptTokens: 1,
          generatedTokens: generated,
          timings: { prefillMs: delay, decodeMs: 0, timeToFirstTokenMs: delay, totalMs: delay },
          tokensPerSecond: 1000 / delay,
        });
      },
    };
  }
  async score(model: LoadedModel, input: unknown): Promise<ScoreResult> {
    this.scoring++;
    try {
      await this.scoreGate?.opened;
      if (model.disposed) throw new PhoenixError('E_INVALID_OPTION', `model "${model.name}" was disposed while scoring`);
      const ids = typeof input === 'object' && input && 'ids' in input ? [...(input as { ids: number[] }).ids] : [1];
      const tokenLogprobs = ids.slice(1).map(() => -Math.log(512));
      const logLikelihood = tokenLogprobs.reduce((a, b) => a + b, 0);
      return { ids, vocabSize: 512, logits: ids.map(() => new Float32Array(512)), tokenLogprobs, logLikelihood, perplexity: ids.length > 1 ? 512 : null, nextArgmax: ids.map(() => 0) };
    } finally {
      this.scoring--;
    }
  }
}
