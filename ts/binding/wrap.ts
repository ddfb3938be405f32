/**
 * Wraps a raw binding so every error it throws — synchronously or from a promise — surfaces as a
 * typed {@link PhoenixError}. Nothing above `ts/binding/` ever sees a raw binding error.
 */
import { PhoenixError, toPhoenixError } from './errors.js';
import type { RawBinding, RawGeneration, RawLoadOptions, RawModel } from './types.js';

function guard<T>(call: () => T): T {
  try {
    return call();
  } catch (error) {
    throw toPhoenixError(error);
  }
}

async function guardAsync<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (error) {
    throw toPhoenixError(error);
  }
}

/** Wraps one running generation. */
export function wrapGeneration(raw: RawGeneration): RawGeneration {
  return {
    next: () => guardAsync(() => raw.next()),
    cancel: () => guard(() => raw.cancel()),
    exportState: () => guard(() => raw.exportState()),
    stats: () => guard(() => raw.stats()),
    tokenIds: () => guard(() => raw.tokenIds()),
    dispose: () => guard(() => raw.dispose()),
  };
}

/** Wraps a loaded model (and the generations it starts). */
export function wrapModel(raw: RawModel): RawModel {
  return {
    info: () => guard(() => raw.info()),
    tokenize: (text, addSpecialTokens) => guardAsync(() => raw.tokenize(text, addSpecialTokens)),
    snapshotLength: (head) => guard(() => raw.snapshotLength(head)),
    detokenize: (ids, skipSpecialTokens) => guard(() => raw.detokenize(ids, skipSpecialTokens)),
    logits: (ids) => guardAsync(() => raw.logits(ids)),
    score: (ids, options, cancel) => guardAsync(() => raw.score(ids, options, cancel)),
    generate: (prompt, options, state) => wrapGeneration(guard(() => raw.generate(prompt, options, state ?? null))),
    renderChat: (messages, addGenerationPrompt) => guard(() => raw.renderChat(messages, addGenerationPrompt)),
    generateChat: (messages, options, state) => wrapGeneration(guard(() => raw.generateChat(messages, options, state ?? null))),
    dispose: () => guard(() => raw.dispose()),
    lost: () => raw.lost?.() ?? null,
  };
}

/**
 * The load options in the shape both bindings convert (an object whose `kvCache` is a string and
 * `useMmap` a boolean, or absent); the core checks the values.
 */
function loadOptions(options: RawLoadOptions | undefined): RawLoadOptions | undefined {
  if (options === undefined) return undefined;
  if (options === null || typeof options !== 'object') throw new PhoenixError('E_INVALID_OPTION', 'loadModel: options must be an object', { option: 'options' });
  const { kvCache, useMmap } = options as { kvCache: unknown; useMmap: unknown };
  if (kvCache !== undefined && typeof kvCache !== 'string') {
    throw new PhoenixError('E_INVALID_OPTION', `loadModel: option \`kvCache\` must be a string, got ${typeof kvCache}`, { option: 'kvCache' });
  }
  if (useMmap !== undefined && typeof useMmap !== 'boolean') {
    throw new PhoenixError('E_INVALID_OPTION', `loadModel: option \`useMmap\` must be a boolean, got ${typeof useMmap}`, { option: 'useMmap' });
  }
  return {
    ...(kvCache === undefined ? {} : { kvCache: kvCache as RawLoadOptions['kvCache'] }),
    ...(useMmap === undefined ? {} : { useMmap }),
  };
}

/** Wraps a whole binding module. */
export function wrapBinding(raw: RawBinding): RawBinding {
  return {
    loadModel: (source, options) => guardAsync(async () => wrapModel(await raw.loadModel(source, loadOptions(options)))),
    describeModel: (source) => guardAsync(() => raw.describeModel(source)),
    supportedFamilies: () => guard(() => raw.supportedFamilies()),
    buildInfo: () => guard(() => raw.buildInfo()),
    setThreads: (n) => guard(() => raw.setThreads(n)),
    checkGenerateOptions: (options) => guard(() => raw.checkGenerateOptions(options)),
    checkLoadOptions: (options) => guard(() => raw.checkLoadOptions(loadOptions(options) ?? {})),
    CancelFlag: raw.CancelFlag,
  };
}

/**
 * Checks that a loaded module exports the `RawBinding` functions (and `extra` ones, e.g. the browser
 * entry's `ready`); throws naming the first missing one.
 */
export function checkBindingShape<T extends RawBinding = RawBinding>(module: unknown, file: string, extra: readonly string[] = []): T {
  const candidate = module as Record<string, unknown> | null;
  for (const name of ['loadModel', 'describeModel', 'supportedFamilies', 'buildInfo', 'setThreads', 'checkGenerateOptions', 'checkLoadOptions', 'CancelFlag', ...extra]) {
    if (typeof candidate?.[name] !== 'function') {
      throw new Error(`${file} does not export ${name}() (not a phoenix-local binding, or an outdated build)`);
    }
  }
  return module as T;
}
