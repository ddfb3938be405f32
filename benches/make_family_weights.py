#!/usr/bin/env python3
"""Writes one benchmark model of a newer family with seeded random weights, for phoenix and llama.cpp alike.

  --family llama          SmolLM-135M shape (model_type "llama", GGUF arch "llama")
  --family mamba2         Mamba-2-130M shape (model_type "mamba2", GGUF arch "mamba2")
  --family granitehybrid  granite-4.0-h-350m shape, dense (model_type "granitemoehybrid", GGUF arch "granitehybrid")

Output, as benches/make_weights.py does for the Mamba-1 model (f32 only):
  <out>/hf/            Hugging Face folder (config.json, model.safetensors, tokenizer.json, tokenizer_config.json)
  <out>/model.gguf     GGUF F32, converted the way llama.cpp's converter does for that architecture
                       (conversion/llama.py, mamba.py, granite.py of the llama.cpp the native bench build vendors)
  <out>/reference_logits.f64   float64 logits of the check prompt from a plain numpy forward pass of the HF weights
  <out>/manifest.json  written last (benches/lib/bench-model.ts reuses the folder while it matches)

The numpy forward passes follow the Hugging Face modeling code (shared/docs/model-reference.md §3-§5), not the GGUF:
llama.cpp agreeing with them checks the conversion (Q/K row permutation, -exp(A_log), grouped ssm_norm, ...).
"""
from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import time
from pathlib import Path

import numpy as np
from safetensors.numpy import save_file
import gguf

from make_weights import CHECK_IDS, gguf_vocab, sha256

# ---------------------------------------------------------------------------------------------------------------
# Shapes. SmolLM-135M (HuggingFaceTB/SmolLM-135M config) with max_position_embeddings 8192 (SmolLM2's) so the
# 4k-context rows fit; Mamba-2-130M (state-spaces/mamba2-130m: vocab 50277 padded to 50288); granite-4.0-h-350m
# (dense; values as third-party ports reproduce its config.json: 32 layers with attention at 10, 13, 17, 27,
# 12 heads / 4 KV heads, 48 Mamba heads of 32, state 128, 1 group, shared MLP 2048, vocab 100352, µP scalars).
SPECS: dict[str, dict] = {
    "llama": {
        "hidden_size": 576, "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
        "head_dim": 64, "intermediate_size": 1536, "vocab_size": 49152, "rope_theta": 10000.0,
        "rms_norm_eps": 1e-5, "max_position_embeddings": 8192,
    },
    "mamba2": {
        "hidden_size": 768, "num_hidden_layers": 24, "expand": 2, "head_dim": 64, "num_heads": 24,
        "state_size": 128, "n_groups": 1, "conv_kernel": 4, "chunk_size": 256, "vocab_size": 50288,
        "layer_norm_epsilon": 1e-5,
    },
    "granitehybrid": {
        "hidden_size": 768, "num_hidden_layers": 32, "attention_layers": [10, 13, 17, 27],
        "num_attention_heads": 12, "num_key_value_heads": 4, "mamba_n_heads": 48, "mamba_d_head": 32,
        "mamba_d_state": 128, "mamba_n_groups": 1, "mamba_expand": 2, "mamba_d_conv": 4, "mamba_chunk_size": 256,
        "shared_intermediate_size": 2048, "vocab_size": 100352, "rms_norm_eps": 1e-5,
        "embedding_multiplier": 12.0, "attention_multiplier": 0.015625, "residual_multiplier": 0.246,
        "logits_scaling": 3.0, "max_position_embeddings": 32768,
    },
}

GGUF_ARCH = {"llama": "llama", "mamba2": "mamba2", "granitehybrid": "granitehybrid"}


class Init:
    """Seeded initialisers with the scales the families train from, so activations stay O(1)."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def normal(self, shape, std) -> np.ndarray:
        return (self.rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)

    def uniform(self, shape, bound) -> np.ndarray:
        return self.rng.uniform(-bound, bound, size=shape).astype(np.float32)

    def norm(self, d) -> np.ndarray:
        return (1.0 + self.normal((d,), 0.02)).astype(np.float32)


def mamba2_mixer_weights(init: Init, prefix: str, d: int, e: int, h: int, n: int, g: int, k: int, n_layer: int) -> dict:
    """One Mamba-2 mixer (mamba_ssm's init: A in [1, 16], dt log-uniform in [1e-3, 1e-1], conv as PyTorch)."""
    c = e + 2 * g * n
    dt = np.exp(init.rng.uniform(math.log(1e-3), math.log(1e-1), size=h)).clip(min=1e-4)
    return {
        prefix + "in_proj.weight": init.normal((2 * e + 2 * g * n + h, d), 1.0 / math.sqrt(d)),
        prefix + "conv1d.weight": init.uniform((c, 1, k), 1.0 / math.sqrt(k)),
        prefix + "conv1d.bias": init.uniform((c,), 1.0 / math.sqrt(k)),
        prefix + "dt_bias": (dt + np.log(-np.expm1(-dt))).astype(np.float32),
        prefix + "A_log": np.log(init.rng.uniform(1.0, 16.0, size=h)).astype(np.float32),
        prefix + "D": np.ones((h,), dtype=np.float32),
        prefix + "norm.weight": init.norm(e),
        # Scaled by 1/sqrt(n_layer) so the residual stream stays O(1) through the stack.
        prefix + "out_proj.weight": init.normal((d, e), 1.0 / math.sqrt(e) / math.sqrt(n_layer)),
    }


def make_weights(family: str, seed: int) -> dict[str, np.ndarray]:
    """HF-named float32 tensors (PyTorch shapes)."""
    s = SPECS[family]
    init = Init(seed)
    d, n_layer, v = s["hidden_size"], s["num_hidden_layers"], s["vocab_size"]
    w: dict[str, np.ndarray] = {}
    if family == "llama":
        nh, nkv, hd, ff = s["num_attention_heads"], s["num_key_value_heads"], s["head_dim"], s["intermediate_size"]
        w["model.embed_tokens.weight"] = init.normal((v, d), 0.02)
        out_std = 1.0 / math.sqrt(2 * n_layer)
        for i in range(n_layer):
            p = f"model.layers.{i}."
            w[p + "input_layernorm.weight"] = init.norm(d)
            w[p + "self_attn.q_proj.weight"] = init.normal((nh * hd, d), 1.0 / math.sqrt(d))
            w[p + "self_attn.k_proj.weight"] = init.normal((nkv * hd, d), 1.0 / math.sqrt(d))
            w[p + "self_attn.v_proj.weight"] = init.normal((nkv * hd, d), 1.0 / math.sqrt(d))
            w[p + "self_attn.o_proj.weight"] = init.normal((d, nh * hd), out_std / math.sqrt(nh * hd))
            w[p + "post_attention_layernorm.weight"] = init.norm(d)
            w[p + "mlp.gate_proj.weight"] = init.normal((ff, d), 1.0 / math.sqrt(d))
            w[p + "mlp.up_proj.weight"] = init.normal((ff, d), 1.0 / math.sqrt(d))
            w[p + "mlp.down_proj.weight"] = init.normal((d, ff), out_std / math.sqrt(ff))
        w["model.norm.weight"] = init.norm(d)
    elif family == "mamba2":
        e = s["expand"] * d
        w["backbone.embeddings.weight"] = init.normal((v, d), 0.02)
        for i in range(n_layer):
            w[f"backbone.layers.{i}.norm.weight"] = init.norm(d)
            w.update(mamba2_mixer_weights(init, f"backbone.layers.{i}.mixer.", d, e, s["num_heads"], s["state_size"],
                                          s["n_groups"], s["conv_kernel"], n_layer))
        w["backbone.norm_f.weight"] = init.norm(d)
    elif family == "granitehybrid":
        e = s["mamba_expand"] * d
        nh, nkv, ff = s["num_attention_heads"], s["num_key_value_heads"], s["shared_intermediate_size"]
        hd = d // nh
        w["model.embed_tokens.weight"] = init.normal((v, d), 0.02)
        for i in range(n_layer):
            p = f"model.layers.{i}."
            w[p + "input_layernorm.weight"] = init.norm(d)
            if i in s["attention_layers"]:
                w[p + "self_attn.q_proj.weight"] = init.normal((nh * hd, d), 1.0 / math.sqrt(d))
                w[p + "self_attn.k_proj.weight"] = init.normal((nkv * hd, d), 1.0 / math.sqrt(d))
                w[p + "self_attn.v_proj.weight"] = init.normal((nkv * hd, d), 1.0 / math.sqrt(d))
                w[p + "self_attn.o_proj.weight"] = init.normal((d, nh * hd), 1.0 / math.sqrt(nh * hd))
            else:
                w.update(mamba2_mixer_weights(init, p + "mamba.", d, e, s["mamba_n_heads"], s["mamba_d_state"],
                                              s["mamba_n_groups"], s["mamba_d_conv"], 1))
            w[p + "post_attention_layernorm.weight"] = init.norm(d)
            w[p + "shared_mlp.input_linear.weight"] = init.normal((2 * ff, d), 1.0 / math.sqrt(d))
            w[p + "shared_mlp.output_linear.weight"] = init.normal((d, ff), 1.0 / math.sqrt(ff))
        w["model.norm.weight"] = init.norm(d)
    else:
        raise ValueError(f"unknown family {family}")
    return w


def hf_config(family: str) -> dict:
    """config.json as transformers 4.x writes it (what most checkpoints on disk carry)."""
    s = SPECS[family]
    if family == "llama":
        return {
            "architectures": ["LlamaForCausalLM"], "model_type": "llama",
            "hidden_size": s["hidden_size"], "intermediate_size": s["intermediate_size"],
            "num_hidden_layers": s["num_hidden_layers"], "num_attention_heads": s["num_attention_heads"],
            "num_key_value_heads": s["num_key_value_heads"], "head_dim": s["head_dim"],
            "hidden_act": "silu", "max_position_embeddings": s["max_position_embeddings"],
            "rms_norm_eps": s["rms_norm_eps"], "rope_theta": s["rope_theta"], "rope_scaling": None,
            "attention_bias": False, "mlp_bias": False, "tie_word_embeddings": True,
            "vocab_size": s["vocab_size"], "bos_token_id": 0, "eos_token_id": 0, "torch_dtype": "float32",
        }
    if family == "mamba2":
        return {
            "architectures": ["Mamba2ForCausalLM"], "model_type": "mamba2",
            "hidden_size": s["hidden_size"], "num_hidden_layers": s["num_hidden_layers"], "expand": s["expand"],
            "head_dim": s["head_dim"], "num_heads": s["num_heads"], "state_size": s["state_size"],
            "n_groups": s["n_groups"], "conv_kernel": s["conv_kernel"], "chunk_size": s["chunk_size"],
            "vocab_size": s["vocab_size"], "layer_norm_epsilon": s["layer_norm_epsilon"],
            "use_bias": False, "use_conv_bias": True, "hidden_act": "silu", "rms_norm": True,
            "residual_in_fp32": True, "time_step_limit": [0.0, float("inf")], "time_step_rank": "auto",
            "tie_word_embeddings": True, "pad_vocab_size_multiple": 16,
            "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 0, "torch_dtype": "float32",
        }
    layer_types = ["attention" if i in s["attention_layers"] else "mamba" for i in range(s["num_hidden_layers"])]
    return {
        "architectures": ["GraniteMoeHybridForCausalLM"], "model_type": "granitemoehybrid",
        "hidden_size": s["hidden_size"], "num_hidden_layers": s["num_hidden_layers"], "layer_types": layer_types,
        "num_attention_heads": s["num_attention_heads"], "num_key_value_heads": s["num_key_value_heads"],
        "intermediate_size": s["shared_intermediate_size"], "shared_intermediate_size": s["shared_intermediate_size"],
        "num_local_experts": 0, "num_experts_per_tok": 0, "position_embedding_type": "nope",
        "mamba_n_heads": s["mamba_n_heads"], "mamba_d_head": s["mamba_d_head"], "mamba_d_state": s["mamba_d_state"],
        "mamba_n_groups": s["mamba_n_groups"], "mamba_expand": s["mamba_expand"], "mamba_d_conv": s["mamba_d_conv"],
        "mamba_chunk_size": s["mamba_chunk_size"], "mamba_conv_bias": True, "mamba_proj_bias": False,
        "rms_norm_eps": s["rms_norm_eps"], "embedding_multiplier": s["embedding_multiplier"],
        "attention_multiplier": s["attention_multiplier"], "residual_multiplier": s["residual_multiplier"],
        "logits_scaling": s["logits_scaling"], "attention_bias": False, "hidden_act": "silu",
        "max_position_embeddings": s["max_position_embeddings"], "rope_theta": 10000.0,
        "tie_word_embeddings": True, "vocab_size": s["vocab_size"],
        "bos_token_id": 0, "eos_token_id": 0, "pad_token_id": 1, "torch_dtype": "float32",
    }


def write_tokenizer(tokenizer_dir: Path, out: Path, n_vocab: int) -> None:
    """The GPT-NeoX-20B tokenizer; cut to `n_vocab` ids (with the merges that only use kept tokens) when smaller."""
    shutil.copyfile(tokenizer_dir / "tokenizer_config.json", out / "tokenizer_config.json")
    tok = json.loads((tokenizer_dir / "tokenizer.json").read_text(encoding="utf-8"))
    vocab: dict[str, int] = tok["model"]["vocab"]
    if max(vocab.values()) < n_vocab and all(a["id"] < n_vocab for a in tok["added_tokens"]):
        # Pad to the model's vocabulary with unused special tokens, as the GGUF side is padded: phoenix
        # samples only ids its tokenizer can decode, so a tokenizer smaller than the head would make
        # greedy tokens differ from llama.cpp's wherever a padded id wins.
        used = set(vocab.values()) | {a["id"] for a in tok["added_tokens"]}
        for i in range(n_vocab):
            if i not in used:
                tok["added_tokens"].append(
                    {"id": i, "content": f"<|unused_{i}|>", "single_word": False, "lstrip": False,
                     "rstrip": False, "normalized": False, "special": True})
        (out / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")
        return
    kept = {t: i for t, i in vocab.items() if i < n_vocab}

    def keep(merge) -> bool:
        a, b = merge.split(" ", 1) if isinstance(merge, str) else merge
        return a in kept and b in kept and a + b in kept

    tok["model"]["vocab"] = kept
    tok["model"]["merges"] = [m for m in tok["model"]["merges"] if keep(m)]
    tok["added_tokens"] = [a for a in tok["added_tokens"] if a["id"] < n_vocab]
    (out / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False), encoding="utf-8")


# ---------------------------------------------------------------------------------------------------------------
# GGUF, as llama.cpp's converter writes these architectures.

def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """LlamaModel.permute: HF half-split RoPE rows -> Meta interleaved rows, per head."""
    return np.ascontiguousarray(
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape))


def add_mamba2_tensors(add, b: str, p: str, w: dict, g: int, e: int) -> None:
    """Mamba2Model.modify_tensors: conv squeezed, A = -exp(A_log) as [H, 1], D as [H, 1], norm as [G, E/G]."""
    add(b + "ssm_in.weight", w[p + "in_proj.weight"])
    add(b + "ssm_conv1d.weight", np.ascontiguousarray(w[p + "conv1d.weight"][:, 0, :]))
    add(b + "ssm_conv1d.bias", w[p + "conv1d.bias"])
    add(b + "ssm_dt.bias", w[p + "dt_bias"])
    add(b + "ssm_a", (-np.exp(w[p + "A_log"].astype(np.float64))).astype(np.float32).reshape(-1, 1))
    add(b + "ssm_d", w[p + "D"].reshape(-1, 1))
    add(b + "ssm_norm.weight", w[p + "norm.weight"].reshape(g, e // g))
    add(b + "ssm_out.weight", w[p + "out_proj.weight"])


def write_gguf(family: str, path: Path, w: dict[str, np.ndarray], hf_dir: Path) -> None:
    s = SPECS[family]
    d, n_layer, v = s["hidden_size"], s["num_hidden_layers"], s["vocab_size"]
    gw = gguf.GGUFWriter(str(path), GGUF_ARCH[family])
    gw.add_name(f"phoenix-bench-{family}-random")
    gw.add_embedding_length(d)
    gw.add_block_count(n_layer)
    gw.add_file_type(gguf.LlamaFileType.ALL_F32)

    def add(name: str, data: np.ndarray) -> None:
        gw.add_tensor(name, np.ascontiguousarray(data, dtype=np.float32))

    if family == "llama":
        nh, nkv, hd = s["num_attention_heads"], s["num_key_value_heads"], s["head_dim"]
        gw.add_vocab_size(v)
        gw.add_context_length(s["max_position_embeddings"])
        gw.add_feed_forward_length(s["intermediate_size"])
        gw.add_head_count(nh)
        gw.add_head_count_kv(nkv)
        gw.add_rope_dimension_count(hd)
        gw.add_rope_freq_base(s["rope_theta"])
        gw.add_layer_norm_rms_eps(s["rms_norm_eps"])
        add("token_embd.weight", w["model.embed_tokens.weight"])
        for i in range(n_layer):
            p, b = f"model.layers.{i}.", f"blk.{i}."
            add(b + "attn_norm.weight", w[p + "input_layernorm.weight"])
            add(b + "attn_q.weight", permute_rows(w[p + "self_attn.q_proj.weight"], nh))
            add(b + "attn_k.weight", permute_rows(w[p + "self_attn.k_proj.weight"], nkv))
            add(b + "attn_v.weight", w[p + "self_attn.v_proj.weight"])
            add(b + "attn_output.weight", w[p + "self_attn.o_proj.weight"])
            add(b + "ffn_norm.weight", w[p + "post_attention_layernorm.weight"])
            add(b + "ffn_gate.weight", w[p + "mlp.gate_proj.weight"])
            add(b + "ffn_up.weight", w[p + "mlp.up_proj.weight"])
            add(b + "ffn_down.weight", w[p + "mlp.down_proj.weight"])
        add("output_norm.weight", w["model.norm.weight"])
    elif family == "mamba2":
        e, g = s["expand"] * d, s["n_groups"]
        gw.add_context_length(2**20)
        gw.add_feed_forward_length(0)
        gw.add_head_count(0)
        gw.add_ssm_conv_kernel(s["conv_kernel"])
        gw.add_ssm_inner_size(e)
        gw.add_ssm_state_size(s["state_size"])
        gw.add_ssm_time_step_rank(s["num_heads"])
        gw.add_ssm_group_count(g)
        gw.add_layer_norm_rms_eps(s["layer_norm_epsilon"])
        add("token_embd.weight", w["backbone.embeddings.weight"])
        for i in range(n_layer):
            b = f"blk.{i}."
            add(b + "attn_norm.weight", w[f"backbone.layers.{i}.norm.weight"])
            add_mamba2_tensors(add, b, f"backbone.layers.{i}.mixer.", w, g, e)
        add("output_norm.weight", w["backbone.norm_f.weight"])
    else:  # granitehybrid, dense: GraniteHybridModel.set_gguf_parameters / modify_tensors
        e, g = s["mamba_expand"] * d, s["mamba_n_groups"]
        nh, nkv, ff = s["num_attention_heads"], s["num_key_value_heads"], s["shared_intermediate_size"]
        attn = s["attention_layers"]
        gw.add_vocab_size(v)
        gw.add_context_length(2**20)  # NoPE hybrid: no context limit in the file
        gw.add_feed_forward_length(ff)
        gw.add_head_count(nh)
        gw.add_head_count_kv([nkv if i in attn else 0 for i in range(n_layer)])
        gw.add_rope_dimension_count(d // nh)
        gw.add_layer_norm_rms_eps(s["rms_norm_eps"])
        gw.add_attention_scale(s["attention_multiplier"])
        gw.add_embedding_scale(s["embedding_multiplier"])
        gw.add_residual_scale(s["residual_multiplier"])
        gw.add_logit_scale(s["logits_scaling"])
        gw.add_ssm_conv_kernel(s["mamba_d_conv"])
        gw.add_ssm_state_size(s["mamba_d_state"])
        gw.add_ssm_group_count(g)
        gw.add_ssm_inner_size(e)
        gw.add_ssm_time_step_rank(s["mamba_n_heads"])
        gw.add_rope_scaling_finetuned(False)  # no RoPE in a pure hybrid
        add("token_embd.weight", w["model.embed_tokens.weight"])
        for i in range(n_layer):
            p, b = f"model.layers.{i}.", f"blk.{i}."
            add(b + "attn_norm.weight", w[p + "input_layernorm.weight"])
            if i in attn:
                add(b + "attn_q.weight", permute_rows(w[p + "self_attn.q_proj.weight"], nh))
                add(b + "attn_k.weight", permute_rows(w[p + "self_attn.k_proj.weight"], nkv))
                add(b + "attn_v.weight", w[p + "self_attn.v_proj.weight"])
                add(b + "attn_output.weight", w[p + "self_attn.o_proj.weight"])
            else:
                add_mamba2_tensors(add, b, p + "mamba.", w, g, e)
            add(b + "ffn_norm.weight", w[p + "post_attention_layernorm.weight"])
            gate, up = np.split(w[p + "shared_mlp.input_linear.weight"], 2, axis=0)
            add(b + "ffn_gate.weight", gate)
            add(b + "ffn_up.weight", up)
            add(b + "ffn_down.weight", w[p + "shared_mlp.output_linear.weight"])
        add("output_norm.weight", w["model.norm.weight"])
    # output.weight omitted: every head here is tied (the converter drops it when equal to token_embd).

    tokens, types = gguf_vocab(hf_dir / "tokenizer.json", v)
    gw.add_tokenizer_model("gpt2")
    gw.add_tokenizer_pre("olmo")  # GPT-NeoX-20B's pre-tokenizer in the converter's table
    gw.add_token_list(tokens)
    gw.add_token_types(types)
    gguf.SpecialVocab(hf_dir, load_merges=True, n_vocab=len(tokens)).add_to_gguf(gw, quiet=True)
    gw.write_header_to_file()
    gw.write_kv_data_to_file()
    gw.write_tensors_to_file()
    gw.close()


# ---------------------------------------------------------------------------------------------------------------
# Float64 forward passes of the HF weights (HF modeling code's math), logits of every position.

def silu(t):
    return t / (1.0 + np.exp(-t))


def softplus(t):
    return np.where(t > 20, t, np.log1p(np.exp(np.minimum(t, 20))))


def rms(x, wt, eps):
    return x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps) * wt


def mamba2_mixer(h, f, p: str, heads: int, head_dim: int, n: int, g: int, k: int, eps: float):
    """§3.3 with the exact recurrence (§3.3 step 6) and the gated norm normalised per group."""
    length = h.shape[0]
    zxbcdt = h @ f(p + "in_proj.weight").T
    e = heads * head_dim
    z, xbc, dt = zxbcdt[:, :e], zxbcdt[:, e:2 * e + 2 * g * n], zxbcdt[:, 2 * e + 2 * g * n:]
    cw = f(p + "conv1d.weight")[:, 0, :]
    padded = np.concatenate([np.zeros((k - 1, xbc.shape[1])), xbc])
    xbc = silu(f(p + "conv1d.bias") + sum(padded[j:j + length] * cw[:, j] for j in range(k)))
    x = xbc[:, :e].reshape(length, heads, head_dim)
    bm = xbc[:, e:e + g * n].reshape(length, g, n)
    cm = xbc[:, e + g * n:].reshape(length, g, n)
    delta = softplus(dt + f(p + "dt_bias"))
    a = -np.exp(f(p + "A_log"))
    dvec = f(p + "D")
    group = np.arange(heads) // (heads // g)
    s = np.zeros((heads, head_dim, n))
    y = np.empty((length, heads, head_dim))
    for t in range(length):
        bt, ct = bm[t][group], cm[t][group]  # [H, N]
        s = np.exp(delta[t] * a)[:, None, None] * s + (delta[t][:, None] * x[t])[:, :, None] * bt[:, None, :]
        y[t] = np.einsum("hpn,hn->hp", s, ct) + dvec[:, None] * x[t]
    y = y.reshape(length, e) * silu(z)
    yg = y.reshape(length, g, e // g)
    yg = yg / np.sqrt(np.mean(yg * yg, axis=-1, keepdims=True) + eps)
    y = yg.reshape(length, e) * f(p + "norm.weight")
    return y @ f(p + "out_proj.weight").T


def rope_half_split(x, theta: float):
    """HF rotate_half RoPE over [L, heads, hd] at positions 0..L-1."""
    length, _, hd = x.shape
    inv = theta ** (-np.arange(0, hd, 2, dtype=np.float64) / hd)
    ang = np.arange(length, dtype=np.float64)[:, None] * inv[None, :]
    cos = np.concatenate([np.cos(ang), np.cos(ang)], axis=-1)[:, None, :]
    sin = np.concatenate([np.sin(ang), np.sin(ang)], axis=-1)[:, None, :]
    rot = np.concatenate([-x[..., hd // 2:], x[..., :hd // 2]], axis=-1)
    return x * cos + rot * sin


def attention(h, f, p: str, nh: int, nkv: int, hd: int, scale: float, theta: float | None):
    """Causal GQA softmax attention (contiguous blocks of query heads share a KV head)."""
    length = h.shape[0]
    q = (h @ f(p + "q_proj.weight").T).reshape(length, nh, hd)
    kk = (h @ f(p + "k_proj.weight").T).reshape(length, nkv, hd)
    vv = (h @ f(p + "v_proj.weight").T).reshape(length, nkv, hd)
    if theta is not None:
        q, kk = rope_half_split(q, theta), rope_half_split(kk, theta)
    rep = nh // nkv
    kk, vv = np.repeat(kk, rep, axis=1), np.repeat(vv, rep, axis=1)
    scores = np.einsum("ihd,jhd->hij", q, kk) * scale
    scores = np.where(np.tril(np.ones((length, length), dtype=bool))[None], scores, -np.inf)
    scores = np.exp(scores - scores.max(axis=-1, keepdims=True))
    probs = scores / scores.sum(axis=-1, keepdims=True)
    out = np.einsum("hij,jhd->ihd", probs, vv).reshape(length, nh * hd)
    return out @ f(p + "o_proj.weight").T


def reference_logits(family: str, w: dict[str, np.ndarray], ids: list[int]) -> np.ndarray:
    s = SPECS[family]
    f = lambda name: w[name].astype(np.float64)  # noqa: E731
    if family == "llama":
        eps, nh, nkv, hd = s["rms_norm_eps"], s["num_attention_heads"], s["num_key_value_heads"], s["head_dim"]
        emb = f("model.embed_tokens.weight")
        x = emb[ids]
        for i in range(s["num_hidden_layers"]):
            p = f"model.layers.{i}."
            h = rms(x, f(p + "input_layernorm.weight"), eps)
            x = x + attention(h, f, p + "self_attn.", nh, nkv, hd, 1.0 / math.sqrt(hd), s["rope_theta"])
            h = rms(x, f(p + "post_attention_layernorm.weight"), eps)
            x = x + (silu(h @ f(p + "mlp.gate_proj.weight").T) * (h @ f(p + "mlp.up_proj.weight").T)) @ f(p + "mlp.down_proj.weight").T
        return rms(x, f("model.norm.weight"), eps) @ emb.T
    if family == "mamba2":
        eps = s["layer_norm_epsilon"]
        emb = f("backbone.embeddings.weight")
        x = emb[ids]
        for i in range(s["num_hidden_layers"]):
            h = rms(x, f(f"backbone.layers.{i}.norm.weight"), eps)
            x = x + mamba2_mixer(h, f, f"backbone.layers.{i}.mixer.", s["num_heads"], s["head_dim"], s["state_size"],
                                 s["n_groups"], s["conv_kernel"], eps)
        return rms(x, f("backbone.norm_f.weight"), eps) @ emb.T
    eps, d = s["rms_norm_eps"], s["hidden_size"]
    nh, nkv, ff, res = s["num_attention_heads"], s["num_key_value_heads"], s["shared_intermediate_size"], s["residual_multiplier"]
    emb = f("model.embed_tokens.weight")
    x = s["embedding_multiplier"] * emb[ids]
    for i in range(s["num_hidden_layers"]):
        p = f"model.layers.{i}."
        h = rms(x, f(p + "input_layernorm.weight"), eps)
        if i in s["attention_layers"]:
            h = attention(h, f, p + "self_attn.", nh, nkv, d // nh, s["attention_multiplier"], None)
        else:
            h = mamba2_mixer(h, f, p + "mamba.", s["mamba_n_heads"], s["mamba_d_head"], s["mamba_d_state"],
                             s["mamba_n_groups"], s["mamba_d_conv"], eps)
        x = x + res * h
        h = rms(x, f(p + "post_attention_layernorm.weight"), eps)
        gu = h @ f(p + "shared_mlp.input_linear.weight").T
        x = x + res * ((silu(gu[:, :ff]) * gu[:, ff:]) @ f(p + "shared_mlp.output_linear.weight").T)
    return (rms(x, f("model.norm.weight"), eps) @ emb.T) / s["logits_scaling"]


def generator_sha256() -> str:
    """Hash of this script and the one it imports: benches/lib/bench-model.ts regenerates when it changes."""
    import hashlib
    h = hashlib.sha256()
    for name in ("make_family_weights.py", "make_weights.py"):
        h.update((Path(__file__).parent / name).read_bytes())
    return h.hexdigest()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--family", choices=sorted(SPECS), required=True)
    ap.add_argument("--out", type=Path, required=True, help="output folder (e.g. benches/.work/smollm-135m-random)")
    ap.add_argument("--tokenizer-dir", type=Path, required=True,
                    help="folder with the GPT-NeoX-20B tokenizer.json + tokenizer_config.json")
    ap.add_argument("--seed", type=int, default=20240601)
    args = ap.parse_args()
    for name in ("tokenizer.json", "tokenizer_config.json"):
        if not (args.tokenizer_dir / name).is_file():
            print(f"make_family_weights: missing {args.tokenizer_dir / name}", file=sys.stderr)
            return 2

    t0 = time.time()
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.json"
    manifest_path.unlink(missing_ok=True)  # written last: its presence marks a complete model
    spec = SPECS[args.family]

    weights = make_weights(args.family, args.seed)
    hf_dir = out / "hf"
    hf_dir.mkdir(parents=True, exist_ok=True)
    (hf_dir / "config.json").write_text(json.dumps(hf_config(args.family), indent=2) + "\n")
    save_file(weights, str(hf_dir / "model.safetensors"), metadata={"format": "pt"})
    write_tokenizer(args.tokenizer_dir, hf_dir, spec["vocab_size"])
    gguf_path = out / "model.gguf"
    write_gguf(args.family, gguf_path, weights, hf_dir)
    logits = reference_logits(args.family, weights, CHECK_IDS)
    if not np.isfinite(logits).all():
        print("make_family_weights: reference logits are not finite", file=sys.stderr)
        return 1
    ref_path = out / "reference_logits.f64"
    logits.astype("<f8").tofile(ref_path)
    top2 = np.sort(logits, axis=-1)[:, -2:]
    files = [hf_dir / "config.json", hf_dir / "model.safetensors", hf_dir / "tokenizer.json", gguf_path, ref_path]
    manifest = {
        "generator_sha256": generator_sha256(),
        "family": args.family,
        "seed": args.seed,
        "spec": {k: v for k, v in spec.items() if isinstance(v, (int, float))},
        "dtype": "f32",
        "param_count": int(sum(t.size for t in weights.values())),
        "check_ids": CHECK_IDS,
        "reference_logits": {"file": ref_path.name, "rows": len(CHECK_IDS), "cols": spec["vocab_size"],
                             "dtype": "float64-le", "abs_max": float(np.abs(logits).max()), "std": float(logits.std()),
                             # Smallest top-1 / top-2 gap over the check positions: how far from a tie argmax is.
                             "min_top2_gap": float((top2[:, 1] - top2[:, 0]).min())},
        "files": {str(p.relative_to(out)): {"bytes": p.stat().st_size} for p in files},
        "variants": {"f32": {"hf_dir": hf_dir.name, "gguf": gguf_path.name, "reference_logits": ref_path.name,
                             "reference_abs_max": float(np.abs(logits).max())}},
        "gguf_sha256": sha256(gguf_path),
    }
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"make_family_weights: wrote {out} ({args.family}, {manifest['param_count']:,} params, logits std "
          f"{logits.std():.3f}, min top-2 gap {manifest['reference_logits']['min_top2_gap']:.2e}) in {time.time() - t0:.1f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
