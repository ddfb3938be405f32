/**
 * Finds llama.cpp built from source for this CPU (scripts/build-llama-native.sh). The bench never
 * starts that build itself (10+ minutes): when it is missing, the native rows are skipped with a note.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';

/** The script links llama.cpp's quantizer (benches/native/llama-quantize.c) next to the driver. */
const QUANTIZER = 'phoenix-llama-quantize';

export function findNativeLlama(repoRoot: string): { driver: string; quantizer?: string } | { missing: string } {
  const script = path.join(repoRoot, 'scripts', 'build-llama-native.sh');
  const res = spawnSync('bash', [script, '--check'], { encoding: 'utf8', timeout: 120_000 });
  if (res.error) return { missing: `${script} could not run: ${res.error.message}` };
  if (res.status !== 0) {
    const why = res.stderr.trim().split('\n').slice(-2).join(' | ') || `exit ${res.status}`;
    return { missing: why };
  }
  const driver = res.stdout.trim().split('\n').pop() ?? '';
  if (!driver) return { missing: `${script} --check printed no driver path` };
  const quantizer = path.join(path.dirname(driver), QUANTIZER);
  return existsSync(quantizer) ? { driver, quantizer } : { driver };
}
