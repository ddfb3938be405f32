/**
 * The demo's Web Worker: everything that touches the model runs here, through the library's public
 * browser entry (dist/browser.js), so the page's thread only paints.
 *
 * Messages in:  { type: 'load', model: { kind: 'url', url } | { kind: 'files', name, files: { [name]: File } } }
 *                 (files: a picked folder's files, or one picked `.gguf` file)
 *               { type: 'generate', prompt, options: { maxTokens, temperature, seed }, chat }
 *                 (chat: the prompt is a user message, rendered by the model's chat template)
 *               { type: 'stop' }
 * Messages out: ready, loaded, read, token, done, error (see each `post` below).
 */
import { defaultEngines, loadWasmBinding, modelFromFiles, modelFromUrl, toPhoenixError } from '../../dist/browser.js';

const selection = loadWasmBinding();
/** One engine per engine kind (state-space, transformer) on the one WASM binding. */
const engines = defaultEngines({ binding: selection });
/** @type {import('../../dist/browser.js').LoadedModel | null} */
let model = null;
/** The engine running `model`. */
let engine = engines[0];
/** @type {AbortController | null} */
let running = null;

const post = (message) => self.postMessage(message);

function reportError(error, during) {
  const typed = toPhoenixError(error);
  post({ type: 'error', during, code: typed.code, message: typed.message });
}

async function load(spec) {
  const startedAt = performance.now();
  const onRead = (name, bytes) => post({ type: 'read', name, bytes });
  const metadata =
    spec.kind === 'url' ? await modelFromUrl(spec.url, { binding: selection }) : await modelFromFiles(spec.name, spec.files, { onRead, binding: selection });
  // The core said which kind of engine runs the model (metadata.engine); a kind none runs fails as E_UNSUPPORTED_MODEL.
  const chosen = engines.find((candidate) => candidate.canLoad(metadata)) ?? engines[0];
  const loaded = await chosen.loadModel(metadata);
  model?.dispose();
  model = loaded;
  engine = chosen;
  const { info } = loaded;
  post({
    type: 'loaded',
    name: metadata.name,
    loadMs: performance.now() - startedAt,
    sizeBytes: metadata.sizeBytes,
    format: metadata.gguf ? `${metadata.format} ${metadata.gguf.quantization}` : metadata.format,
    info: { modelType: info.modelType, paramCount: info.paramCount, numLayers: info.numLayers, vocabSize: info.vocabSize, dtype: info.dtype, stateBytes: info.stateBytes },
  });
}

async function generate(prompt, options, chat) {
  if (!model) throw new Error('[E_INVALID_OPTION] no model loaded');
  running = new AbortController();
  const startedAt = performance.now();
  let firstAt = null;
  let tokens = 0;
  const withSignal = { ...options, signal: running.signal };
  const stream = chat ? engine.chatStream(model, [{ role: 'user', content: prompt }], withSignal) : engine.stream(model, prompt, withSignal);
  try {
    for await (const chunk of stream) {
      tokens += 1;
      firstAt ??= performance.now();
      post({ type: 'token', text: chunk.text, tokens, ttftMs: firstAt - startedAt, sinceFirstMs: performance.now() - firstAt });
    }
    const result = await stream.result;
    post({
      type: 'done',
      text: result.text,
      finishReason: result.finishReason,
      promptTokens: result.promptTokens,
      generatedTokens: result.generatedTokens,
      timings: result.timings,
      decodeTokensPerSecond: result.tokensPerSecond,
      prefillTokensPerSecond: result.timings.prefillMs > 0 ? (result.promptTokens * 1000) / result.timings.prefillMs : 0,
    });
  } finally {
    running = null;
  }
}

self.onmessage = ({ data }) => {
  if (data.type === 'stop') return running?.abort();
  const work = data.type === 'load' ? load(data.model) : data.type === 'generate' ? generate(data.prompt, data.options, data.chat === true) : null;
  work?.catch((error) => reportError(error, data.type));
};

selection.then(
  (s) => post({ type: 'ready', backend: s.backend, reason: s.reason, buildInfo: s.buildInfo }),
  (error) => reportError(error, 'start'),
);
