/**
 * Whether this build of phoenix-local loads a benchmark model: asks the native addon's `describeModel`
 * (reads config.json only), so a family the core does not run yet gets its rows skipped with the core's own
 * reason instead of a failed worker, and the rows appear by themselves once the family lands.
 */
import { loadBinding } from '../../ts/index.js';

import type { BenchVariant } from './bench-model.js';

/**
 * null when phoenix-local can load `variant`; otherwise why not (the core's error code and message). `backend`
 * 'wasm' asks the WASM binding instead (a .gguf file there needs a WASM build that reads GGUF).
 */
export async function phoenixSkipReason(variant: BenchVariant, backend: 'native' | 'wasm' = 'native'): Promise<string | null> {
  let binding;
  try {
    binding = (await loadBinding({ backend })).binding;
  } catch (error) {
    return `${backend === 'native' ? 'native addon' : 'WASM binding'} unavailable: ${(error as Error).message.split('\n')[0]}`;
  }
  try {
    await binding.describeModel(variant.hfDir);
    return null;
  } catch (error) {
    const e = error as Error & { code?: string };
    return `${e.code ? `${e.code}: ` : ''}${e.message.split('\n')[0]}`;
  }
}
