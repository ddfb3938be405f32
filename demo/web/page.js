/**
 * The demo page: forms in, tokens out. All model work happens in worker.js; this thread only sends
 * requests and paints what comes back, so it stays responsive while the model generates.
 * `body[data-state]` (starting | ready | loading | loaded | generating | done | error) lets tests and
 * styles follow along.
 */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));
const DEFAULT_MODEL_URL = new URL('../../models/phoenix-ssm-lite/', location.href).href;

const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });
/** Which model the worker holds (a key of the current choice), and a generate waiting for a load. */
let loadedKey = null;
let pendingGenerate = null;
const filesRead = [];

function setState(state, status) {
  document.body.dataset.state = state;
  $('status').textContent = status;
  const busy = state === 'starting' || state === 'loading' || state === 'generating';
  /** @type {HTMLButtonElement} */ ($('generate')).disabled = busy;
  /** @type {HTMLButtonElement} */ ($('load')).disabled = busy;
  /** @type {HTMLButtonElement} */ ($('stop')).disabled = state !== 'generating';
}

const rate = (tokens, ms) => (ms > 0 ? `${((tokens * 1000) / ms).toFixed(1)} tokens/s` : '–');
const mb = (bytes) => (bytes < 2 ** 20 ? `${(bytes / 1024).toFixed(1)} KB` : `${(bytes / 2 ** 20).toFixed(1)} MB`);

/** The model the form currently asks for, as a worker `load` spec plus a key to compare choices. */
function chosenModel() {
  if (/** @type {HTMLInputElement} */ ($('model-default')).checked) return { key: 'default', spec: { kind: 'url', url: DEFAULT_MODEL_URL } };
  if (/** @type {HTMLInputElement} */ ($('model-file')).checked) {
    // One .gguf file is a whole model (weights, tokenizer, chat template): the core finds it among the files.
    const file = /** @type {HTMLInputElement} */ ($('gguf-input')).files?.[0];
    if (!file) throw new Error('pick a .gguf file first');
    return { key: `file:${file.name}:${file.size}:${file.lastModified}`, spec: { kind: 'files', name: file.name, files: { [file.name]: file } } };
  }
  const list = [...(/** @type {HTMLInputElement} */ ($('folder-input')).files ?? [])];
  if (list.length === 0) throw new Error('pick a model folder first');
  // webkitRelativePath is "<folder>/<file>": keep the folder's own files, not its subfolders.
  const files = {};
  let name = 'model';
  for (const file of list) {
    const parts = file.webkitRelativePath.split('/');
    if (parts.length === 2) [name, files[parts[1]]] = [parts[0], file];
  }
  return { key: `folder:${name}:${list.length}:${list.map((f) => f.lastModified).join()}`, spec: { kind: 'files', name, files } };
}

function requestLoad() {
  const { key, spec } = chosenModel();
  filesRead.length = 0;
  $('files-read').textContent = spec.kind === 'url' ? 'fetched from the server' : '–';
  setState('loading', `loading ${spec.kind === 'url' ? 'phoenix-ssm-lite' : spec.name}…`);
  worker.postMessage({ type: 'load', model: spec });
  return key;
}

function numberField(id) {
  return Number(/** @type {HTMLInputElement} */ ($(id)).value);
}

function requestGenerate() {
  for (const id of ['output', 'prefill-tps', 'decode-tps', 'ttft', 'token-count', 'finish-reason']) $(id).textContent = id === 'output' ? '' : '–';
  const prompt = /** @type {HTMLTextAreaElement} */ ($('prompt')).value;
  const options = { maxTokens: numberField('max-tokens'), temperature: numberField('temperature'), seed: numberField('seed') };
  const chat = /** @type {HTMLInputElement} */ ($('chat')).checked;
  setState('generating', 'generating…');
  worker.postMessage({ type: 'generate', prompt, options, chat });
}

const handlers = {
  ready({ backend, buildInfo, reason }) {
    $('backend').textContent = `backend: ${backend} · ${buildInfo.simd} · core ${buildInfo.version} · ${buildInfo.threads} thread${buildInfo.threads === 1 ? '' : 's'}`;
    $('backend').title = reason;
    setState('ready', 'ready: load a model or press Generate');
  },
  loaded({ name, loadMs, sizeBytes, format, info }) {
    $('load-time').textContent = `${loadMs.toFixed(0)} ms`;
    $('model-info').textContent = `${name}: ${info.modelType}, ${(info.paramCount / 1e6).toFixed(1)} M parameters, ${info.numLayers} layers, vocab ${info.vocabSize}, ${info.dtype}, ${format}, ${mb(sizeBytes)}, state ${(info.stateBytes / 1024).toFixed(0)} KiB`;
    setState('loaded', 'model loaded');
    if (pendingGenerate) {
      loadedKey = pendingGenerate;
      pendingGenerate = null;
      requestGenerate();
    }
  },
  read({ name, bytes }) {
    filesRead.push(`${name} (${mb(bytes)})`);
    $('files-read').textContent = filesRead.join(', ');
  },
  token({ text, tokens, ttftMs, sinceFirstMs }) {
    $('output').append(text);
    $('token-count').textContent = String(tokens);
    $('ttft').textContent = `${ttftMs.toFixed(1)} ms`;
    if (tokens > 1) $('decode-tps').textContent = rate(tokens - 1, sinceFirstMs);
  },
  done({ finishReason, promptTokens, generatedTokens, timings, decodeTokensPerSecond, prefillTokensPerSecond }) {
    $('prefill-tps').textContent = `${prefillTokensPerSecond.toFixed(1)} tokens/s (${promptTokens} tokens in ${timings.prefillMs.toFixed(1)} ms)`;
    $('decode-tps').textContent = `${decodeTokensPerSecond.toFixed(1)} tokens/s`;
    $('token-count').textContent = `${generatedTokens} generated, ${promptTokens} prompt`;
    $('finish-reason').textContent = finishReason;
    setState('done', `done (${finishReason})`);
  },
  error({ during, code, message }) {
    pendingGenerate = null;
    if (during === 'load') loadedKey = null;
    setState('error', `${code}: ${message}`);
  },
};

worker.onmessage = ({ data }) => handlers[data.type]?.(data);
worker.onerror = (event) => setState('error', `worker failed: ${event.message || 'could not start (is dist/ built? npm run build:ts)'}`);

$('load').addEventListener('click', () => {
  try {
    pendingGenerate = null;
    loadedKey = requestLoad();
  } catch (error) {
    setState('error', String(error instanceof Error ? error.message : error));
  }
});

$('generate-form').addEventListener('submit', (event) => {
  event.preventDefault();
  try {
    const { key } = chosenModel();
    if (key === loadedKey) return requestGenerate();
    pendingGenerate = requestLoad();
  } catch (error) {
    setState('error', String(error instanceof Error ? error.message : error));
  }
});

$('stop').addEventListener('click', () => worker.postMessage({ type: 'stop' }));
$('folder-input').addEventListener('change', () => {
  /** @type {HTMLInputElement} */ ($('model-folder')).checked = true;
});
$('gguf-input').addEventListener('change', () => {
  /** @type {HTMLInputElement} */ ($('model-file')).checked = true;
});

// A page-side timer: if the page's thread were blocked by the model, this would freeze.
let beats = 0;
setInterval(() => {
  beats += 1;
  $('heartbeat').textContent = `UI heartbeat ${beats}`;
  $('heartbeat').dataset.beats = String(beats);
}, 50);
