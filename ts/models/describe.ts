/**
 * What a model is, from any file source (a folder on disk: ./discovery.ts; files in a browser:
 * ts/browser/models.ts), without loading weights. The core decides every rule — family, engine kind,
 * format name, which files hold the weights, which others a load reads — through the binding's
 * `describeModel`; this module only adds what the model manager keeps for itself: a version.
 * Imports no `node:` module.
 */
import type { RawBinding, RawModelLayout, RawModelSource } from '../binding/types.js';

/** Names the manager needs for its own file handling (error codes, version lookup). */
export const CONFIG_FILE = 'config.json';
export const TOKENIZER_FILE = 'tokenizer.json';
/** Where a chat template lives (the core reads them; a problem with one is E_BAD_CONFIG). */
export const CHAT_FILES: readonly string[] = ['tokenizer_config.json', 'chat_template.jinja'];

/** What a model's files say about it: the core's layout plus a version. */
export interface ModelDescription extends RawModelLayout {
  /** From config.json (`version` / `model_version`), else the fallback (README), else `"1"`. */
  version: string;
}

/** `version` / `model_version` of a config.json text (the core has already checked it parses). */
function configVersion(configText: string): string | undefined {
  let config: unknown;
  try {
    config = JSON.parse(configText);
  } catch {
    return undefined; // changed since the core read it: the checksum step reports the change
  }
  if (config === null || typeof config !== 'object') return undefined;
  for (const key of ['version', 'model_version']) {
    const value = (config as Record<string, unknown>)[key];
    if (typeof value === 'string' && value.trim()) return value.trim();
    if (typeof value === 'number') return String(value);
  }
  return undefined;
}

/**
 * Describes the model at `source` with the core (`binding.describeModel`), then finds its version:
 * config.json's text (read by the caller, with its own checks) or `fallbackVersion` (the folder
 * reader looks at README.md); `"1"` when neither names one.
 * @throws the core's typed error for the files (as a load of them would fail first).
 */
export async function describeModel(
  binding: RawBinding,
  source: RawModelSource,
  configText: (layout: RawModelLayout) => Promise<string>,
  fallbackVersion?: () => Promise<string | undefined>,
): Promise<ModelDescription> {
  const layout = await binding.describeModel(source);
  const version = configVersion(await configText(layout)) ?? (await fallbackVersion?.()) ?? '1';
  return { ...layout, version };
}

/**
 * The checksum of a set of weight files: the file's own sha256 when there is one file, otherwise the
 * sha256 (by `hashText`) of a `sha256sum`-style listing (`<hex>  <name>\n`, sorted by name).
 */
export function combineChecksums<T extends string | Promise<string>>(
  files: readonly { name: string; sha256: string }[],
  hashText: (text: string) => T,
): string | T {
  if (files.length === 1) return (files[0] as { sha256: string }).sha256;
  const listing = [...files]
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .map((f) => `${f.sha256}  ${f.name}\n`)
    .join('');
  return hashText(listing);
}
