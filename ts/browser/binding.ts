/**
 * The WASM binding in a browser or Web Worker: imports `wasm/browser.js`, waits for the module to be
 * instantiated and wraps it like the Node loader (ts/binding/load.ts) does. No `node:` imports.
 */
import { PhoenixError } from '../binding/errors.js';
import type { BackendAttempt, BindingSelection } from '../binding/load.js';
import type { RawBinding } from '../binding/types.js';
import { checkBindingShape, wrapBinding } from '../binding/wrap.js';

/** Options of {@link loadWasmBinding}. */
export interface LoadWasmBindingOptions {
  /** URL of the binding's browser entry (default: `wasm/browser.js` beside this package's `dist/`). */
  moduleUrl?: string | URL;
}

/** What `wasm/browser.js` exports: a RawBinding plus the async instantiation browsers need. */
interface BrowserWasmModule extends RawBinding {
  ready(): Promise<void>;
}

const REASON = 'browser: WASM is the only backend';
const BUILD_HINT = 'build it with `npm run build:wasm` and serve wasm/ beside dist/';

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Loads the WASM binding in a browser or worker: imports its browser entry, waits for the module to
 * be compiled and instantiated, and wraps it so every error is a {@link PhoenixError}.
 *
 * @throws {@link PhoenixError} `E_BACKEND_UNAVAILABLE` when the module cannot be imported or started.
 */
export async function loadWasmBinding(options: LoadWasmBindingOptions = {}): Promise<BindingSelection> {
  const url = new URL(options.moduleUrl ?? new URL('../../wasm/browser.js', import.meta.url), globalThis.location?.href);
  const fail = (why: string): PhoenixError => {
    const attempts: BackendAttempt[] = [{ backend: 'wasm', path: url.href, ok: false, reason: why }];
    return new PhoenixError('E_BACKEND_UNAVAILABLE', `backend "wasm" cannot be loaded: ${why}`, { attempts });
  };
  let raw: BrowserWasmModule;
  try {
    raw = checkBindingShape<BrowserWasmModule>(await import(/* @vite-ignore */ url.href), url.href, ['ready']);
  } catch (error) {
    throw fail(`cannot use ${url.href}: ${messageOf(error)}; ${BUILD_HINT}`);
  }
  try {
    await raw.ready();
  } catch (error) {
    throw fail(`the WASM module at ${url.href} failed to start (${messageOf(error)}); ${BUILD_HINT}`);
  }
  const binding = wrapBinding(raw);
  const attempts: BackendAttempt[] = [{ backend: 'wasm', path: url.href, ok: true, reason: 'loaded' }];
  return { binding, backend: 'wasm', path: url.href, reason: REASON, attempts, buildInfo: binding.buildInfo() };
}
