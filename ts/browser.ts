/**
 * phoenix-local in a browser or Web Worker (`dist/browser.js`): the engine, typed errors, the WASM
 * binding (`wasm/browser.js`) and model metadata for models given by URL or as files.
 *
 * Nothing here imports a `node:` module, directly or through the engine, so it loads as a plain ES
 * module. Run generation in a Web Worker: WASM calls run synchronously on the calling thread.
 *
 * @example
 * ```ts
 * import { MambaSSMEngine, loadWasmBinding, modelFromUrl } from 'phoenix-local/browser';
 * const engine = new MambaSSMEngine({ binding: await loadWasmBinding() });
 * const model = await engine.loadModel(await modelFromUrl('/models/phoenix-ssm-lite/'));
 * for await (const chunk of engine.stream(model, 'Once upon a time', { maxTokens: 32 })) out.textContent += chunk.text;
 * ```
 *
 * @packageDocumentation
 */
export * from './portable.js';
export { loadWasmBinding } from './browser/binding.js';
export type { LoadWasmBindingOptions } from './browser/binding.js';
export { modelFromFiles, modelFromUrl } from './browser/models.js';
export type { BrowserModelFiles, BrowserModelOptions } from './browser/models.js';
