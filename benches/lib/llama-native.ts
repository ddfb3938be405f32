/**
 * Finds llama.cpp built from source for this CPU (scripts/build-llama-native.sh). The bench never
 * starts that build itself (10+ minutes): when it is missing, the native rows are skipped with a note.
 */
import { spawnSync } from 'node:child_process';
import path from 'node:path';

export function findNativeLlama(repoRoot: string): { driver: string } | { missing: string } {
  const script = path.join(repoRoot, 'scripts', 'build-llama-native.sh');
  const res = spawnSync('bash', [script, '--check'], { encoding: 'utf8', timeout: 120_000 });
  if (res.error) return { missing: `${script} could not run: ${res.error.message}` };
  if (res.status !== 0) {
    const why = res.stderr.trim().split('\n').slice(-2).join(' | ') || `exit ${res.status}`;
    return { missing: why };
  }
  const driver = res.stdout.trim().split('\n').pop() ?? '';
  return driver ? { driver } : { missing: `${script} --check printed no driver path` };
}
