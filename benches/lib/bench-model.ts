/**
 * Makes sure the benchmark model exists under benches/.work/ (generated once, reused while valid):
 * a Python venv with benches/requirements.txt, then benches/make_weights.py writes the HF folder,
 * the GGUF file, float64 reference logits and manifest.json.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';

export interface BenchModelManifest {
  generator_sha256: string;
  seed: number;
  spec: Record<string, number>;
  dtype: string;
  param_count: number;
  check_ids: number[];
  reference_logits: { file: string; rows: number; cols: number; dtype: string; abs_max: number; std: number };
  files: Record<string, { bytes: number }>;
}

export interface BenchModel {
  dir: string;
  hfDir: string;
  ggufPath: string;
  manifest: BenchModelManifest;
  /** Whether this call generated it. */
  generated: boolean;
}

/** Mamba-130M's shape (state-spaces/mamba-130m-hf config). */
export const MODEL_NAME = 'mamba-130m-random';
const EXPECTED_SPEC: Record<string, number> = {
  hidden_size: 768,
  num_hidden_layers: 24,
  vocab_size: 50280,
  state_size: 16,
  conv_kernel: 4,
  expand: 2,
  time_step_rank: 48,
};

function sha256File(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

function run(command: string, args: string[], cwd: string): void {
  const res = spawnSync(command, args, { cwd, stdio: 'inherit' });
  if (res.error) throw new Error(`${command} could not start: ${res.error.message}`);
  if (res.status !== 0) throw new Error(`${command} ${args.join(' ')} failed with exit code ${res.status}`);
}

/** Why the existing model cannot be reused, or null when it can. */
function invalidReason(dir: string, generatorSha: string): string | null {
  const manifestPath = path.join(dir, 'manifest.json');
  if (!existsSync(manifestPath)) return 'not generated yet';
  let manifest: BenchModelManifest;
  try {
    manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as BenchModelManifest;
  } catch (error) {
    return `unreadable manifest.json (${(error as Error).message})`;
  }
  if (manifest.generator_sha256 !== generatorSha) return 'benches/make_weights.py changed since it was generated';
  for (const [key, value] of Object.entries(EXPECTED_SPEC)) {
    if (manifest.spec?.[key] !== value) return `manifest spec.${key} is ${manifest.spec?.[key]}, expected ${value}`;
  }
  for (const [file, { bytes }] of Object.entries(manifest.files ?? {})) {
    const full = path.join(dir, file);
    if (!existsSync(full)) return `${file} is missing`;
    if (statSync(full).size !== bytes) return `${file} has ${statSync(full).size} bytes, manifest says ${bytes}`;
  }
  return null;
}

/** Creates (or reuses) benches/.work/venv with the generator's requirements installed. */
function ensureVenv(repoRoot: string, workDir: string): string {
  const venv = path.join(workDir, 'venv');
  const python = path.join(venv, 'bin', 'python');
  const requirements = path.join(repoRoot, 'benches', 'requirements.txt');
  const stamp = path.join(venv, '.requirements.sha256');
  const want = sha256File(requirements);
  if (existsSync(python) && existsSync(stamp) && readFileSync(stamp, 'utf8').trim() === want) return python;
  const basePython = process.env.PYTHON ?? 'python3';
  console.log(`bench: setting up ${path.relative(repoRoot, venv)} (${basePython} -m venv; pip install -r benches/requirements.txt)`);
  if (!existsSync(python)) run(basePython, ['-m', 'venv', venv], repoRoot);
  run(python, ['-m', 'pip', 'install', '--quiet', '--disable-pip-version-check', '-r', requirements], repoRoot);
  writeFileSync(stamp, want + '\n');
  return python;
}

export function ensureBenchModel(repoRoot: string): BenchModel {
  const workDir = path.join(repoRoot, 'benches', '.work');
  const dir = path.join(workDir, MODEL_NAME);
  const generator = path.join(repoRoot, 'benches', 'make_weights.py');
  const reason = invalidReason(dir, sha256File(generator));
  let generated = false;
  if (reason !== null) {
    const tokenizerDir = process.env.PHOENIX_BENCH_TOKENIZER_DIR ?? path.join(repoRoot, 'test', 'fixtures', 'gpt-neox-20b');
    if (!existsSync(path.join(tokenizerDir, 'tokenizer.json'))) {
      throw new Error(
        `bench: the GPT-NeoX-20B tokenizer is needed to build the benchmark model and was not found at ${tokenizerDir} ` +
          '(set PHOENIX_BENCH_TOKENIZER_DIR to a folder with tokenizer.json + tokenizer_config.json)',
      );
    }
    console.log(`bench: generating the benchmark model in ${path.relative(repoRoot, dir)} (${reason})`);
    const python = ensureVenv(repoRoot, workDir);
    run(python, [generator, '--out', dir, '--tokenizer-dir', tokenizerDir], repoRoot);
    const after = invalidReason(dir, sha256File(generator));
    if (after !== null) throw new Error(`bench: generated model is not valid: ${after}`);
    generated = true;
  }
  const manifest = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as BenchModelManifest;
  return { dir, hfDir: path.join(dir, 'hf'), ggufPath: path.join(dir, 'model.gguf'), manifest, generated };
}
