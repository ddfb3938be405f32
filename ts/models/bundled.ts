/**
 * The package's bundled models folder (`<package root>/models`, holding phoenix-ssm-lite), found from
 * this module's own location so it works from `ts/` in a checkout and from `dist/` inside node_modules.
 */
import { fileURLToPath } from 'node:url';

/** Absolute path of `<package root>/models` (this file is `<root>/{ts,dist}/models/bundled.*`). */
export function bundledModelsDir(): string {
  return fileURLToPath(new URL('../../models', import.meta.url));
}
