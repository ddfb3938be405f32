#!/usr/bin/env python3
"""Writes the benchmark model: a Mamba-130M-shaped Mamba-1 with seeded random weights.

The same weights are written twice so two engines can run the *same* model:
  <out>/hf/    Hugging Face folder (config.json model_type "mamba", model.safetensors, tokenizer.json)
  <out>/model.gguf   GGUF F32 for llama.cpp, converted exactly as llama.cpp's Mamba converter does
                     (A_log -> ssm_a = -exp(A_log), conv weight squeezed to [E, K], tied head omitted,
                     GPT-NeoX BPE vocab padded to the embedding rows with UNUSED "[PAD<id>]" tokens).
and once more in bfloat16, as a bf16 checkpoint of the same model would be shipped:
  <out>/hf-bf16/         every tensor BF16 (the f32 weights rounded to nearest even)
  <out>/model-bf16.gguf  what the converter makes of that checkpoint with --outtype bf16: BF16 matrices,
                         F32 for 1-D tensors, norms, ssm_conv1d and ssm_a (its tensor-type rules)
It also writes float64 reference logits of a short check prompt (a plain numpy forward pass) for both
weight sets and manifest.json (written last), which benches/run.ts uses to decide whether the files can
be reused.

Real (trained) weights cannot be fetched offline; for speed only the shapes matter, and the
magnitudes below follow Mamba's own initialisation so activations stay finite and realistic.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from safetensors import TensorSpec, serialize_file
from safetensors.numpy import save_file
import gguf
from gguf import quants

SPEC = {
    "hidden_size": 768,
    "num_hidden_layers": 24,
    "vocab_size": 50280,
    "state_size": 16,
    "conv_kernel": 4,
    "expand": 2,
    "time_step_rank": 48,
    "layer_norm_epsilon": 1e-5,
}

# "Hey how are you doing?" + "Mamba is a state-space model." as GPT-NeoX ids (verified encodings listed in the project shared data, tokenizers/README.md).
CHECK_IDS = [8262, 849, 403, 368, 2509, 32, 46, 31834, 310, 247, 1375, 14, 5641, 1566, 15]


def make_weights(seed: int) -> dict[str, np.ndarray]:
    """HF-named float32 tensors (PyTorch shapes)."""
    rng = np.random.default_rng(seed)
    d = SPEC["hidden_size"]
    n_layer = SPEC["num_hidden_layers"]
    v = SPEC["vocab_size"]
    n = SPEC["state_size"]
    k = SPEC["conv_kernel"]
    e = SPEC["expand"] * d
    r = SPEC["time_step_rank"]

    def normal(shape, std):
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)

    def uniform(shape, bound):
        return rng.uniform(-bound, bound, size=shape).astype(np.float32)

    w: dict[str, np.ndarray] = {}
    w["backbone.embeddings.weight"] = normal((v, d), 0.02)
    a_log = np.log(np.tile(np.arange(1, n + 1, dtype=np.float32), (e, 1))).astype(np.float32)
    for i in range(n_layer):
        p = f"backbone.layers.{i}."
        w[p + "norm.weight"] = (1.0 + normal((d,), 0.02)).astype(np.float32)
        w[p + "mixer.in_proj.weight"] = normal((2 * e, d), 1.0 / math.sqrt(d))
        # PyTorch Conv1d default init: bound 1/sqrt(fan_in), fan_in = K for a depthwise conv.
        w[p + "mixer.conv1d.weight"] = uniform((e, 1, k), 1.0 / math.sqrt(k))
        w[p + "mixer.conv1d.bias"] = uniform((e,), 1.0 / math.sqrt(k))
        w[p + "mixer.x_proj.weight"] = normal((r + 2 * n, e), 1.0 / math.sqrt(e))
        # Mamba's dt init: weight ~ U(+-R^-0.5); bias = softplus^-1(dt), dt log-uniform in [1e-3, 1e-1].
        w[p + "mixer.dt_proj.weight"] = uniform((e, r), r ** -0.5)
        dt = np.exp(rng.uniform(math.log(1e-3), math.log(1e-1), size=e)).clip(min=1e-4)
        w[p + "mixer.dt_proj.bias"] = (dt + np.log(-np.expm1(-dt))).astype(np.float32)
        w[p + "mixer.A_log"] = a_log.copy()
        w[p + "mixer.D"] = np.ones((e,), dtype=np.float32)
        # Scaled by 1/sqrt(n_layer) (Mamba's rescale_prenorm_residual idea) so the residual stays O(1).
        w[p + "mixer.out_proj.weight"] = normal((d, e), 1.0 / math.sqrt(e) / math.sqrt(n_layer))
    w["backbone.norm_f.weight"] = (1.0 + normal((d,), 0.02)).astype(np.float32)
    return w


def to_bf16(weights: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """The weights rounded to bfloat16 (gguf-py's rounding, the converter's own), held widened as float32."""
    bf16 = gguf.GGMLQuantizationType.BF16
    return {k: quants.dequantize(quants.quantize(v, bf16), bf16).reshape(v.shape) for k, v in weights.items()}


def save_bf16_safetensors(path: Path, weights: dict[str, np.ndarray]) -> None:
    """A BF16 model.safetensors (numpy has no bfloat16 dtype: the raw bits go through safetensors' serializer)."""
    bf16 = gguf.GGMLQuantizationType.BF16
    bits = {k: np.ascontiguousarray(quants.quantize(v, bf16)) for k, v in weights.items()}  # keeps buffers alive
    specs = {k: TensorSpec(dtype="bfloat16", shape=list(weights[k].shape), data_ptr=b.ctypes.data, data_len=b.nbytes)
             for k, b in bits.items()}
    serialize_file(specs, str(path), metadata={"format": "pt"})


def hf_config() -> dict:
    d = SPEC["hidden_size"]
    return {
        "architectures": ["MambaForCausalLM"],
        "model_type": "mamba",
        "bos_token_id": 0,
        "eos_token_id": 0,
        "pad_token_id": 0,
        "hidden_size": d,
        "num_hidden_layers": SPEC["num_hidden_layers"],
        "vocab_size": SPEC["vocab_size"],
        "state_size": SPEC["state_size"],
        "conv_kernel": SPEC["conv_kernel"],
        "expand": SPEC["expand"],
        "intermediate_size": SPEC["expand"] * d,
        "time_step_rank": SPEC["time_step_rank"],
        "layer_norm_epsilon": SPEC["layer_norm_epsilon"],
        "use_bias": False,
        "use_conv_bias": True,
        "hidden_act": "silu",
        "residual_in_fp32": True,
        "rms_norm": True,
        "tie_word_embeddings": True,
        "pad_vocab_size_multiple": 8,
        "torch_dtype": "float32",
    }


def write_hf(out: Path, weights: dict[str, np.ndarray], tokenizer_dir: Path, dtype: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    config = hf_config()
    config["torch_dtype"] = {"f32": "float32", "bf16": "bfloat16"}[dtype]
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    if dtype == "bf16":
        save_bf16_safetensors(out / "model.safetensors", weights)
    else:
        save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copyfile(tokenizer_dir / name, out / name)


def gguf_vocab(tokenizer_json: Path, n_vocab: int) -> tuple[list[str], list[int]]:
    """Token list and types as llama.cpp's converter builds them (get_vocab_base)."""
    tok = json.loads(tokenizer_json.read_text(encoding="utf-8"))
    by_id: dict[int, str] = {i: t for t, i in tok["model"]["vocab"].items()}
    added = {a["id"]: a for a in tok["added_tokens"]}
    for i, a in added.items():
        by_id[i] = a["content"]
    assert max(by_id) < n_vocab, "tokenizer larger than the embedding"
    tokens: list[str] = []
    types: list[int] = []
    for i in range(n_vocab):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
            continue
        text = by_id[i]
        if i in added:
            special = added[i]["special"] or (text.startswith("<|") and text.endswith("|>"))
            types.append(gguf.TokenType.CONTROL if special else gguf.TokenType.USER_DEFINED)
        else:
            types.append(gguf.TokenType.NORMAL)
        tokens.append(text)
    return tokens, types


def gguf_tensor_type(gguf_name: str, n_dims: int, dtype: str) -> gguf.GGMLQuantizationType:
    """The converter's tensor-type rules (conversion/base.py prepare_tensors) for the tensors of a Mamba-1."""
    f32 = gguf.GGMLQuantizationType.F32
    if dtype == "f32" or n_dims <= 1 or gguf_name.endswith("_norm.weight"):
        return f32
    if ".ssm_conv1d." in gguf_name or not gguf_name.endswith(".weight"):  # ssm_conv1d; ssm_a
        return f32
    return gguf.GGMLQuantizationType.BF16


def write_gguf(path: Path, weights: dict[str, np.ndarray], hf_dir: Path, dtype: str) -> None:
    d = SPEC["hidden_size"]
    n_layer = SPEC["num_hidden_layers"]
    w = gguf.GGUFWriter(str(path), "mamba")
    w.add_name("phoenix-bench-mamba-130m-random")
    w.add_context_length(2**20)  # what the converter writes: a recurrent model has no context limit
    w.add_embedding_length(d)
    w.add_feed_forward_length(0)
    w.add_head_count(0)
    w.add_block_count(n_layer)
    w.add_ssm_conv_kernel(SPEC["conv_kernel"])
    w.add_ssm_inner_size(SPEC["expand"] * d)
    w.add_ssm_state_size(SPEC["state_size"])
    w.add_ssm_time_step_rank(SPEC["time_step_rank"])
    w.add_layer_norm_rms_eps(SPEC["layer_norm_epsilon"])
    w.add_ssm_dt_b_c_rms(False)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16 if dtype == "bf16" else gguf.LlamaFileType.ALL_F32)

    tokens, types = gguf_vocab(hf_dir / "tokenizer.json", SPEC["vocab_size"])
    w.add_tokenizer_model("gpt2")
    # The GPT-NeoX-20B pre-tokenizer hash maps to "olmo" (same as "mpt") in the converter's table.
    w.add_tokenizer_pre("olmo")
    w.add_token_list(tokens)
    w.add_token_types(types)
    special = gguf.SpecialVocab(hf_dir, load_merges=True, n_vocab=len(tokens))
    special.add_to_gguf(w, quiet=True)

    def add(name: str, data: np.ndarray) -> None:
        qtype = gguf_tensor_type(name, data.ndim, dtype)
        # GGUFWriter writes ne[] reversed from the numpy shape, i.e. PyTorch [out, in] -> ne {in, out}.
        w.add_tensor(name, quants.quantize(data, qtype), raw_dtype=qtype)

    add("token_embd.weight", weights["backbone.embeddings.weight"])
    for i in range(n_layer):
        p = f"backbone.layers.{i}."
        b = f"blk.{i}."
        add(b + "attn_norm.weight", weights[p + "norm.weight"])
        add(b + "ssm_in.weight", weights[p + "mixer.in_proj.weight"])
        add(b + "ssm_conv1d.weight", np.ascontiguousarray(weights[p + "mixer.conv1d.weight"][:, 0, :]))
        add(b + "ssm_conv1d.bias", weights[p + "mixer.conv1d.bias"])
        add(b + "ssm_x.weight", weights[p + "mixer.x_proj.weight"])
        add(b + "ssm_dt.weight", weights[p + "mixer.dt_proj.weight"])
        add(b + "ssm_dt.bias", weights[p + "mixer.dt_proj.bias"])
        add(b + "ssm_a", (-np.exp(weights[p + "mixer.A_log"].astype(np.float64))).astype(np.float32))
        add(b + "ssm_d", weights[p + "mixer.D"])
        add(b + "ssm_out.weight", weights[p + "mixer.out_proj.weight"])
    add("output_norm.weight", weights["backbone.norm_f.weight"])
    # output.weight omitted: the head is tied, and the converter drops it when equal to token_embd.
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def reference_logits(weights: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    """Float64 Mamba-1 forward (model-reference.md §2.3) over `ids`: [L, V] logits."""
    eps = SPEC["layer_norm_epsilon"]
    n_layer = SPEC["num_hidden_layers"]
    n = SPEC["state_size"]
    k = SPEC["conv_kernel"]
    r = SPEC["time_step_rank"]
    f = lambda name: weights[name].astype(np.float64)  # noqa: E731
    silu = lambda t: t / (1.0 + np.exp(-t))  # noqa: E731

    def rms(x, wt):
        return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * wt

    emb = f("backbone.embeddings.weight")
    x = emb[ids]
    length = len(ids)
    for i in range(n_layer):
        p = f"backbone.layers.{i}.mixer."
        h = rms(x, f(f"backbone.layers.{i}.norm.weight"))
        xz = h @ f(p + "in_proj.weight").T
        e = xz.shape[1] // 2
        xs, z = xz[:, :e], xz[:, e:]
        cw = f(p + "conv1d.weight")[:, 0, :]
        padded = np.concatenate([np.zeros((k - 1, e)), xs])
        conv = f(p + "conv1d.bias") + sum(padded[j:j + length] * cw[:, j] for j in range(k))
        u = silu(conv)
        xdbl = u @ f(p + "x_proj.weight").T
        dt_low, bm, cm = xdbl[:, :r], xdbl[:, r:r + n], xdbl[:, r + n:]
        dt_raw = dt_low @ f(p + "dt_proj.weight").T + f(p + "dt_proj.bias")
        dt = np.where(dt_raw > 20, dt_raw, np.log1p(np.exp(np.minimum(dt_raw, 20))))
        a = -np.exp(f(p + "A_log"))
        dvec = f(p + "D")
        s = np.zeros((e, n))
        y = np.empty((length, e))
        for t in range(length):
            s = np.exp(dt[t][:, None] * a) * s + (dt[t] * u[t])[:, None] * bm[t][None, :]
            y[t] = s @ cm[t] + dvec * u[t]
        y = y * silu(z)
        x = x + y @ f(p + "out_proj.weight").T
    x = rms(x, f("backbone.norm_f.weight"))
    return x @ emb.T


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, required=True, help="output folder (e.g. benches/.work/mamba-130m-random)")
    ap.add_argument("--tokenizer-dir", type=Path, required=True,
                    help="folder with the GPT-NeoX-20B tokenizer.json + tokenizer_config.json")
    ap.add_argument("--seed", type=int, default=20240601)
    args = ap.parse_args()

    for name in ("tokenizer.json", "tokenizer_config.json"):
        if not (args.tokenizer_dir / name).is_file():
            print(f"make_weights: missing {args.tokenizer_dir / name}", file=sys.stderr)
            return 2

    t0 = time.time()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest_path.unlink(missing_ok=True)  # written last: its presence marks a complete model

    weights = make_weights(args.seed)
    files: dict[str, Path] = {}
    variants: dict[str, dict] = {}
    ref = None
    for dtype, tensors, suffix in (("f32", weights, ""), ("bf16", to_bf16(weights), "-bf16")):
        hf_dir = out / f"hf{suffix}"
        write_hf(hf_dir, tensors, args.tokenizer_dir, dtype)
        gguf_path = out / f"model{suffix}.gguf"
        write_gguf(gguf_path, tensors, hf_dir, dtype)
        logits = reference_logits(tensors, CHECK_IDS)
        if not np.isfinite(logits).all():
            print(f"make_weights: {dtype} reference logits are not finite", file=sys.stderr)
            return 1
        ref_path = out / f"reference_logits{suffix}.f64"
        logits.astype("<f8").tofile(ref_path)
        for name in ("config.json", "model.safetensors", "tokenizer.json"):
            files[f"{hf_dir.name}/{name}"] = hf_dir / name
        files[gguf_path.name] = gguf_path
        files[ref_path.name] = ref_path
        variants[dtype] = {"hf_dir": hf_dir.name, "gguf": gguf_path.name, "reference_logits": ref_path.name,
                           "reference_abs_max": float(np.abs(logits).max())}
        if dtype == "f32":
            ref = logits
    hf_dir = out / "hf"
    gguf_path = out / "model.gguf"
    manifest = {
        # benches/run.ts regenerates when this script changes (its hash no longer matches).
        "generator_sha256": sha256(Path(__file__)),
        "seed": args.seed,
        "spec": SPEC,
        "dtype": "f32",
        "param_count": int(sum(t.size for t in weights.values())),
        "check_ids": CHECK_IDS,
        "reference_logits": {"file": "reference_logits.f64", "rows": len(CHECK_IDS), "cols": SPEC["vocab_size"],
                             "dtype": "float64-le", "abs_max": float(np.abs(ref).max()),
                             "std": float(ref.std())},
        "files": {k: {"bytes": p.stat().st_size} for k, p in files.items()},
        # The same weights per dtype: HF folder, GGUF and float64 reference logits of the check prompt.
        "variants": variants,
        "gguf_sha256": sha256(gguf_path),
        "safetensors_sha256": sha256(hf_dir / "model.safetensors"),
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"make_weights: wrote {out} ({manifest['param_count']:,} params, logits std {ref.std():.3f}) "
          f"in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
