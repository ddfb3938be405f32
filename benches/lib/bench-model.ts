/**
 * Makes sure the benchmark models exist under benches/.work/ (generated once, reused while valid):
 * a Python venv with benches/requirements.txt, then benches/make_weights.py (the Mamba-1 model, f32 and
 * bf16) or benches/make_family_weights.py (SmolLM-135M, Mamba-2-130M and granite-4.0-h-350m shapes, f32)
 * writes the HF folder, the GGUF file, float64 reference logits and manifest.json.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { spawnSync } from 'node:child_process';

export interface BenchModelManifest {
  generator_sha256: string;
  /** make_family_weights.py models only. */
  family?: string;
  seed: number;
  spec: Record<string, number>;
  dtype: string;
  param_count: number;
  check_ids: number[];
  reference_logits: { file: string; rows: number; cols: number; dtype: string; abs_max: number; std: number };
  files: Record<string, { bytes: number }>;
  /** The same weights per dtype (f32, bf16): folders, GGUF and reference logits, relative to the model folder. */
  variants: Record<string, { hf_dir: string; gguf: string; reference_logits: string; reference_abs_max: number }>;
}

/** One model as the rows run it: a Hugging Face folder for phoenix and, where llama.cpp runs it too, a GGUF. */
export interface BenchVariant {
  /** Row label. */
  model: string;
  /** Weight dtype as stored in the files. */
  dtype: string;
  hfDir: string;
  /** The same weights as GGUF; absent: a phoenix-only row. */
  ggufPath?: string;
  /** Float64 logits of manifest.check_ids for these exact weights (the logit check). */
  reference?: { file: string; absMax: number };
  /** One past the largest prompt id (the model's vocabulary); absent: the default prompt range. */
  vocabSize?: number;
  /** Whether phoenix's WASM binding runs it too (single-threaded row). */
  wasm: boolean;
  /** Why phoenix-local gets no row for it (the core does not load this family yet); absent: it does. */
  phoenixSkip?: string;
  /**
   * Check-prompt ids whose logits phoenix-local and llama.cpp are compared on where there is no float64
   * reference (quantized files: llama.cpp rounds activations to 8 bits, so differences are reported, not failed).
   */
  crossCheckIds?: number[];
  /** transformer / ssm / hybrid (the context table); absent: ssm (Mamba-1). */
  kind?: 'transformer' | 'ssm' | 'hybrid';
}

export interface BenchModel {
  dir: string;
  hfDir: string;
  ggufPath: string;
  manifest: BenchModelManifest;
  /** f32 (every engine) and bf16 (phoenix native and both llama.cpp builds) of the same weights. */
  variants: BenchVariant[];
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
function invalidReason(
  dir: string,
  generatorSha: string,
  expectedSpec: Record<string, number>,
  variants: readonly string[],
  generatorName = 'benches/make_weights.py',
): string | null {
  const manifestPath = path.join(dir, 'manifest.json');
  if (!existsSync(manifestPath)) return 'not generated yet';
  let manifest: BenchModelManifest;
  try {
    manifest = JSON.parse(readFileSync(manifestPath, 'utf8')) as BenchModelManifest;
  } catch (error) {
    return `unreadable manifest.json (${(error as Error).message})`;
  }
  if (manifest.generator_sha256 !== generatorSha) return `${generatorName} changed since it was generated`;
  for (const v of variants) if (!manifest.variants?.[v]) return `manifest has no ${v} variant`;
  for (const [key, value] of Object.entries(expectedSpec)) {
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

/** The GPT-NeoX-20B tokenizer every benchmark model is built with (cut or padded to its vocabulary). */
function benchTokenizerDir(repoRoot: string): string {
  const tokenizerDir = process.env.PHOENIX_BENCH_TOKENIZER_DIR ?? path.join(repoRoot, 'test', 'fixtures', 'gpt-neox-20b');
  if (!existsSync(path.join(tokenizerDir, 'tokenizer.json'))) {
    throw new Error(
      `bench: the GPT-NeoX-20B tokenizer is needed to build the benchmark models and was not found at ${tokenizerDir} ` +
        '(set PHOENIX_BENCH_TOKENIZER_DIR to a folder with tokenizer.json + tokenizer_config.json)',
    );
  }
  return tokenizerDir;
}

export function ensureBenchModel(repoRoot: string): BenchModel {
  const workDir = path.join(repoRoot, 'benches', '.work');
  const dir = path.join(workDir, MODEL_NAME);
  const generator = path.join(repoRoot, 'benches', 'make_weights.py');
  const reason = invalidReason(dir, sha256File(generator), EXPECTED_SPEC, ['f32', 'bf16']);
  let generated = false;
  if (reason !== null) {
    const tokenizerDir = benchTokenizerDir(repoRoot);
    console.log(`bench: generating the benchmark model in ${path.relative(repoRoot, dir)} (${reason})`);
    const python = ensureVenv(repoRoot, workDir);
    run(python, [generator, '--out', dir, '--tokenizer-dir', tokenizerDir], repoRoot);
    const after = invalidReason(dir, sha256File(generator), EXPECTED_SPEC, ['f32', 'bf16']);
    if (after !== null) throw new Error(`bench: generated model is not valid: ${after}`);
    generated = true;
  }
  const manifest = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as BenchModelManifest;
  const variants = (['f32', 'bf16'] as const).map((dtype): BenchVariant => {
    const v = manifest.variants[dtype]!;
    return {
      model: MODEL_NAME,
      dtype,
      hfDir: path.join(dir, v.hf_dir),
      ggufPath: path.join(dir, v.gguf),
      reference: { file: path.join(dir, v.reference_logits), absMax: v.reference_abs_max },
      wasm: dtype === 'f32',
    };
  });
  return { dir, hfDir: path.join(dir, 'hf'), ggufPath: path.join(dir, 'model.gguf'), manifest, variants, generated };
}

/** The project's default model: a phoenix-only row, so per-op overhead of a small (6-layer) model shows. */
export const DEFAULT_MODEL_NAME = 'phoenix-ssm-lite';

export function defaultModelVariant(repoRoot: string): BenchVariant | string {
  const hfDir = path.join(repoRoot, 'models', DEFAULT_MODEL_NAME);
  const configPath = path.join(hfDir, 'config.json');
  if (!existsSync(configPath)) return `${path.relative(repoRoot, hfDir)} not found`;
  // The repository's own model: its config is trusted here (only the prompt's id range is taken from it).
  const config = JSON.parse(readFileSync(configPath, 'utf8')) as { vocab_size?: unknown; dtype?: unknown; torch_dtype?: unknown };
  const vocab = config.vocab_size;
  if (typeof vocab !== 'number' || !Number.isInteger(vocab) || vocab < 16) return `${path.relative(repoRoot, configPath)}: no usable vocab_size`;
  const dtype = String(config.dtype ?? config.torch_dtype ?? 'float32');
  return { model: DEFAULT_MODEL_NAME, dtype: dtype === 'float32' ? 'f32' : dtype, hfDir, vocabSize: vocab, wasm: false };
}

/**
 * The newer families' benchmark models (benches/make_family_weights.py): f32 weights as a Hugging Face folder
 * for phoenix and an F32 GGUF for llama.cpp, with float64 reference logits of the check prompt.
 */
export interface FamilyModelDef {
  /** `--models=` name. */
  key: string;
  /** Row label. */
  name: string;
  /** make_family_weights.py --family. */
  family: 'llama' | 'mamba2' | 'granitehybrid';
  /** What its decode cost grows with: the KV cache (transformer), nothing (ssm), or a few layers' KV cache (hybrid). */
  kind: 'transformer' | 'ssm' | 'hybrid';
  /** Shape facts the manifest must state (a stale folder with another shape is regenerated). */
  spec: Record<string, number>;
}

export const FAMILY_MODELS: readonly FamilyModelDef[] = [
  {
    key: 'smollm135m',
    name: 'smollm-135m-random',
    family: 'llama',
    kind: 'transformer',
    spec: { hidden_size: 576, num_hidden_layers: 30, num_attention_heads: 9, num_key_value_heads: 3, head_dim: 64, intermediate_size: 1536, vocab_size: 49152 },
  },
  {
    key: 'mamba2-130m',
    name: 'mamba2-130m-random',
    family: 'mamba2',
    kind: 'ssm',
    spec: { hidden_size: 768, num_hidden_layers: 24, expand: 2, head_dim: 64, num_heads: 24, state_size: 128, n_groups: 1, conv_kernel: 4, vocab_size: 50288 },
  },
  {
    key: 'granite350m',
    name: 'granite-h-350m-random',
    family: 'granitehybrid',
    kind: 'hybrid',
    spec: { hidden_size: 768, num_hidden_layers: 32, num_attention_heads: 12, num_key_value_heads: 4, mamba_n_heads: 48, mamba_d_head: 32, mamba_d_state: 128, mamba_n_groups: 1, shared_intermediate_size: 2048, vocab_size: 100352 },
  },
];

/** sha256 over the family generator and the script it imports, in the order make_family_weights.py hashes them. */
function familyGeneratorSha(repoRoot: string): string {
  const hash = createHash('sha256');
  for (const name of ['make_family_weights.py', 'make_weights.py']) hash.update(readFileSync(path.join(repoRoot, 'benches', name)));
  return hash.digest('hex');
}

export interface FamilyModel {
  def: FamilyModelDef;
  dir: string;
  manifest: BenchModelManifest;
  variant: BenchVariant;
  generated: boolean;
}

/** Creates (or reuses) one family model in benches/.work/<name>. */
export function ensureFamilyModel(repoRoot: string, def: FamilyModelDef): FamilyModel {
  const dir = path.join(repoRoot, 'benches', '.work', def.name);
  const sha = familyGeneratorSha(repoRoot);
  const generatorName = 'benches/make_family_weights.py (or make_weights.py)';
  const reason = invalidReason(dir, sha, def.spec, ['f32'], generatorName);
  let generated = false;
  if (reason !== null) {
    const tokenizerDir = benchTokenizerDir(repoRoot);
    console.log(`bench: generating ${def.name} in ${path.relative(repoRoot, dir)} (${reason})`);
    const python = ensureVenv(repoRoot, path.join(repoRoot, 'benches', '.work'));
    run(python, [path.join(repoRoot, 'benches', 'make_family_weights.py'), '--family', def.family, '--out', dir, '--tokenizer-dir', tokenizerDir], repoRoot);
    const after = invalidReason(dir, sha, def.spec, ['f32'], generatorName);
    if (after !== null) throw new Error(`bench: generated ${def.name} is not valid: ${after}`);
    generated = true;
  }
  const manifest = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as BenchModelManifest;
  const v = manifest.variants.f32!;
  const variant: BenchVariant = {
    model: def.name,
    dtype: 'f32',
    hfDir: path.join(dir, v.hf_dir),
    ggufPath: path.join(dir, v.gguf),
    reference: { file: path.join(dir, v.reference_logits), absMax: v.reference_abs_max },
    vocabSize: def.spec.vocab_size,
    wasm: false,
    kind: def.kind,
  };
  return { def, dir, manifest, variant, generated };
}
