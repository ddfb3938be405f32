/**
 * The one binding loader. It walks an ordered list of backend candidates (native addon first, then
 * WASM), records why each one was or was not used, and returns the first that loads — wrapped so its
 * errors are typed. `PHOENIX_BACKEND=native|wasm` (or the `backend` option) forces one backend.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import path from 'node:path';

import { PhoenixError } from './errors.js';
import { optionKeys, refuseUnknownKeys } from '../engines/known-keys.js';
import type { BackendKind, RawBinding, RawModelSource } from './types.js';
import { checkBindingShape, wrapBinding } from './wrap.js';

/** Options of {@link loadBinding}. */
export interface LoadBindingOptions {
  /** Force one backend (`auto` = try all in order). Overrides `PHOENIX_BACKEND`. */
  backend?: BackendKind | 'auto';
  /** Explicit path of the native `.node` file (default: `PHOENIX_NATIVE_PATH`, else the dev build `native/phoenix-local.<platform>.node`, else the platform package `phoenix-local-<platform>`). */
  nativePath?: string;
  /** Explicit path of the WASM glue module (default: `PHOENIX_WASM_PATH`, else `wasm/phoenix-local.js`). */
  wasmPath?: string;
  /** Environment to read `PHOENIX_BACKEND`, `PHOENIX_NATIVE_PATH` and `PHOENIX_WASM_PATH` from (default `process.env`). */
  env?: Readonly<Record<string, string | undefined>>;
}

/** The outcome of trying one backend. */
export interface BackendAttempt {
  backend: BackendKind;
  /** The file that was tried. */
  path: string;
  ok: boolean;
  /** Why it loaded or why not. */
  reason: string;
}

/** The binding that was chosen, and why. */
export interface BindingSelection {
  /** The loaded binding; every call throws {@link PhoenixError} on failure. */
  readonly binding: RawBinding;
  readonly backend: BackendKind;
  /** File the backend was loaded from. */
  readonly path: string;
  /** Human-readable reason for the choice (e.g. "forced by PHOENIX_BACKEND=native"). */
  readonly reason: string;
  /** Every candidate tried, in order. */
  readonly attempts: readonly BackendAttempt[];
  /** Core version and build facts reported by the backend. */
  readonly buildInfo: { version: string; simd: string; threads: number };
}

/** One way of obtaining a binding. */
interface BackendCandidate {
  backend: BackendKind;
  path: string;
  /** Throws with a reason when the backend cannot be used here. */
  load(): Promise<RawBinding>;
}

const PACKAGE_ROOT = fileURLToPath(new URL('../../', import.meta.url));

/** napi-rs platform suffix of this process, e.g. `linux-x64-gnu`, `darwin-arm64`, `win32-x64-msvc`. */
export function nativePlatformSuffix(): string {
  const { platform, arch } = process;
  if (platform === 'linux') return `linux-${arch}-${isMusl() ? 'musl' : 'gnu'}`;
  if (platform === 'win32') return `win32-${arch}-msvc`;
  return `${platform}-${arch}`;
}

function isMusl(): boolean {
  const report = process.report?.getReport() as { header?: { glibcVersionRuntime?: string } } | undefined;
  return !report?.header?.glibcVersionRuntime;
}

/**
 * The npm package that carries this platform's native addon (napi-rs convention: `<name>-<platform>`,
 * an optional dependency of phoenix-local, so npm installs only the one matching `os`/`cpu`/`libc`).
 */
export function nativePackageName(): string {
  return `phoenix-local-${nativePlatformSuffix()}`;
}

/**
 * Where the native addon for this platform is, for the package rooted at `packageRoot`: the dev build
 * in `native/` (`npm run build:native`) when it exists, else the addon of the platform package installed
 * beside it (resolved the way Node resolves a dependency of `packageRoot`). When neither exists, the
 * dev build's path, so the loader's message names where to build it.
 */
export function locateNativeAddon(packageRoot: string): string {
  const devBuild = path.join(packageRoot, 'native', `phoenix-local.${nativePlatformSuffix()}.node`);
  if (existsSync(devBuild)) return devBuild;
  try {
    // The platform package's `main` is its `.node` file; resolve fails when it is absent.
    return createRequire(path.join(packageRoot, 'package.json')).resolve(nativePackageName());
  } catch {
    return devBuild;
  }
}

/** Default location of the native addon for this platform (see {@link locateNativeAddon}). */
export function defaultNativePath(): string {
  return locateNativeAddon(PACKAGE_ROOT);
}

/** Default location of the WASM glue module (built by `crates/wasm`). */
export function defaultWasmPath(): string {
  return path.join(PACKAGE_ROOT, 'wasm', 'phoenix-local.js');
}

/** The native addon reads folders itself (memory-mapped); other sources are a WASM feature. */
function pathsOnly(raw: RawBinding): RawBinding {
  const folderPath = (source: RawModelSource): string => {
    if (typeof source !== 'string') {
      throw new PhoenixError(
        'E_INVALID_OPTION',
        'the native backend loads model folders by path; in-memory files and file readers need the WASM backend',
        { option: 'source' },
      );
    }
    return source;
  };
  return {
    ...raw,
    loadModel: (source, options) => raw.loadModel(folderPath(source), options),
    describeModel: (source) => raw.describeModel(folderPath(source)),
    supportedFamilies: () => raw.supportedFamilies(),
    buildInfo: () => raw.buildInfo(),
    setThreads: (n) => raw.setThreads(n),
  };
}

function nativeCandidate(file: string, isDefault: boolean): BackendCandidate {
  return {
    backend: 'native',
    path: file,
    async load() {
      if (!existsSync(file)) {
        const where = isDefault ? `; the package ${nativePackageName()} is not installed either` : '';
        // Building is advice for a checkout's default path, not for an installed package or a path the caller gave.
        const build = isDefault && !file.split(/[\\/]/).includes('node_modules') ? ' (run `npm run build:native`)' : '';
        throw new Error(`native addon not found at ${file}${build}${where}`);
      }
      // require() runs any other file as JavaScript: a PHOENIX_NATIVE_PATH pointing at the wrong file
      // must fail, not execute it.
      if (path.extname(file) !== '.node') throw new Error(`${file} is not a native addon (a .node file)`);
      const require = createRequire(import.meta.url);
      let module: unknown;
      try {
        module = require(file);
      } catch (error) {
        throw new Error(`${file} does not load as a native addon: ${error instanceof Error ? error.message : String(error)}`);
      }
      return pathsOnly(checkBindingShape(module, file));
    },
  };
}

function wasmCandidate(file: string, isDefault: boolean): BackendCandidate {
  return {
    backend: 'wasm',
    path: file,
    async load() {
      if (!existsSync(file)) {
        // Building is advice for the default path of a checkout, not for a path the caller gave.
        throw new Error(`WASM build not found at ${file}${isDefault ? ' (crates/wasm is not built in this checkout: `npm run build:wasm`)' : ''}`);
      }
      const module = (await import(pathToFileURL(file).href)) as { default?: unknown } & Record<string, unknown>;
      // wasm-bindgen `web` targets export an async init as default; `nodejs` targets are ready.
      if (typeof module.default === 'function' && typeof module.loadModel !== 'function') {
        await (module.default as () => Promise<unknown>)();
      }
      return checkBindingShape(module, file);
    },
  };
}

const LOAD_BINDING_OPTION_KEYS = optionKeys<LoadBindingOptions>({ backend: true, nativePath: true, wasmPath: true, env: true });

/** The backend `options` (then `PHOENIX_BACKEND`) asks for. @throws `E_INVALID_OPTION` for a value that names none. */
export function requestedBackend(options: LoadBindingOptions): BackendKind | 'auto' {
  refuseUnknownKeys(options, LOAD_BINDING_OPTION_KEYS, 'loadBinding option');
  if (options.backend !== undefined) {
    if (!['auto', 'native', 'wasm'].includes(options.backend)) {
      throw new PhoenixError('E_INVALID_OPTION', `backend must be "native", "wasm" or "auto", got ${JSON.stringify(options.backend)}`, { option: 'backend' });
    }
    return options.backend;
  }
  const fromEnv = (options.env ?? process.env).PHOENIX_BACKEND;
  if (fromEnv === undefined || fromEnv === '' || fromEnv === 'auto') return 'auto';
  if (fromEnv === 'native' || fromEnv === 'wasm') return fromEnv;
  throw new PhoenixError('E_INVALID_OPTION', `PHOENIX_BACKEND must be "native", "wasm" or "auto", got ${JSON.stringify(fromEnv)}`, { option: 'PHOENIX_BACKEND' });
}

/**
 * Loads a binding backend: the native addon, else the WASM build (or only the one forced by
 * `options.backend` / `PHOENIX_BACKEND`).
 *
 * @throws {@link PhoenixError} `E_BACKEND_UNAVAILABLE` when no candidate loads; its message and
 * `details.attempts` carry each candidate's reason.
 */
export async function loadBinding(options: LoadBindingOptions = {}): Promise<BindingSelection> {
  const requested = requestedBackend(options);
  const forcedBy = options.backend !== undefined ? `backend option "${requested}"` : `PHOENIX_BACKEND=${requested}`;
  const env = options.env ?? process.env;
  const explicitNative = options.nativePath ?? (env.PHOENIX_NATIVE_PATH || undefined);
  const explicitWasm = options.wasmPath ?? (env.PHOENIX_WASM_PATH || undefined);
  const all = [
    nativeCandidate(explicitNative ?? defaultNativePath(), explicitNative === undefined),
    wasmCandidate(explicitWasm ?? defaultWasmPath(), explicitWasm === undefined),
  ];
  const candidates = requested === 'auto' ? all : all.filter((c) => c.backend === requested);

  const attempts: BackendAttempt[] = [];
  for (const candidate of candidates) {
    let raw: RawBinding;
    try {
      raw = await candidate.load();
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      attempts.push({ backend: candidate.backend, path: candidate.path, ok: false, reason });
      continue;
    }
    const binding = wrapBinding(raw);
    const failed = attempts.map((a) => `${a.backend}: ${a.reason}`).join('; ');
    const reason =
      requested !== 'auto'
        ? `forced by ${forcedBy}`
        : failed
          ? `fallback: ${failed}`
          : `${candidate.backend} is the first candidate for ${process.platform}-${process.arch} and loaded`;
    attempts.push({ backend: candidate.backend, path: candidate.path, ok: true, reason: 'loaded' });
    return { binding, backend: candidate.backend, path: candidate.path, reason, attempts, buildInfo: binding.buildInfo() };
  }
  const why = attempts.map((a) => `${a.backend}: ${a.reason}`).join('; ');
  const prefix = requested === 'auto' ? 'no backend could be loaded' : `backend "${requested}" (${forcedBy}) cannot be loaded`;
  throw new PhoenixError('E_BACKEND_UNAVAILABLE', `${prefix}: ${why}`, { attempts });
}

let shared: Promise<BindingSelection> | undefined;

/**
 * The process-wide default binding (loaded once with {@link loadBinding}'s defaults, honouring
 * `PHOENIX_BACKEND`). A failed load is not cached, so a later call can retry.
 */
export function getDefaultBinding(): Promise<BindingSelection> {
  if (!shared) {
    shared = loadBinding().catch((error: unknown) => {
      shared = undefined;
      throw error;
    });
  }
  return shared;
}
