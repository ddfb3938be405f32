//! Timing probe: a Mamba-130M-shaped f32 model (d_model 768, 24 layers, vocab 50280) with random
//! weights generated in-process, loaded through the real in-memory loader, then prefill-512 and decode
//! tokens/s, and the streaming read bandwidth that bounds decode. The kernels themselves are
//! crate-private; their timing probe against the `gemm` crate is the ignored unit test
//! `ops::matmul::tests::speed_probe` (`cargo test --release -p phoenix-core --lib speed_probe -- --ignored --nocapture`).
//!
//! cargo run --release -p phoenix-core --example mamba_speed [-- d_model layers vocab prompt decode]
//! Weights dtype: MAMBA_SPEED_DTYPE=f32 (default) | f16 | bf16.
//! Thread count: rayon's global pool (RAYON_NUM_THREADS).

use std::time::Instant;

use phoenix_core::models::load_model_from_memory;
use phoenix_core::LogitsWanted;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

fn main() {
    let args: Vec<usize> = std::env::args().skip(1).map(|a| a.parse().expect("numeric argument")).collect();
    let arg = |i: usize, default: usize| args.get(i).copied().unwrap_or(default);
    let (d, layers, vocab, prompt, decode) = (arg(0, 768), arg(1, 24), arg(2, 50280), arg(3, 512), arg(4, 128));
    let (e, n, k, r) = (2 * d, 16, 4, d.div_ceil(16));
    println!(
        "model: d_model {d}, layers {layers}, vocab {vocab}, E {e}, N {n}, R {r}; threads {}",
        rayon::current_num_threads()
    );

    let mut rng = Rng(0x9E3779B97F4A7C15);
    let mut tensors: Vec<(String, Vec<usize>, Vec<f32>)> = Vec::new();
    let mut rand = |name: String, shape: Vec<usize>, scale: f32, offset: f32| {
        let len = shape.iter().product();
        let data = (0..len).map(|_| offset + scale * rng.next()).collect();
        tensors.push((name, shape, data));
    };
    rand("backbone.embeddings.weight".into(), vec![vocab, d], 0.05, 0.0);
    for i in 0..layers {
        let p = format!("backbone.layers.{i}.");
        rand(format!("{p}norm.weight"), vec![d], 0.1, 1.0);
        rand(format!("{p}mixer.in_proj.weight"), vec![2 * e, d], 1.0 / (d as f32).sqrt(), 0.0);
        rand(format!("{p}mixer.conv1d.weight"), vec![e, 1, k], 0.5, 0.0);
        rand(format!("{p}mixer.conv1d.bias"), vec![e], 0.1, 0.0);
        rand(format!("{p}mixer.x_proj.weight"), vec![r + 2 * n, e], 1.0 / (e as f32).sqrt(), 0.0);
        rand(format!("{p}mixer.dt_proj.weight"), vec![e, r], 1.0 / (r as f32).sqrt(), 0.0);
        rand(format!("{p}mixer.dt_proj.bias"), vec![e], 1.0, -4.0);
        rand(format!("{p}mixer.A_log"), vec![e, n], 0.5, 1.5);
        rand(format!("{p}mixer.D"), vec![e], 0.5, 1.0);
        rand(format!("{p}mixer.out_proj.weight"), vec![d, e], 1.0 / (e as f32).sqrt(), 0.0);
    }
    rand("backbone.norm_f.weight".into(), vec![d], 0.1, 1.0);

    // Serialise as safetensors in memory (header JSON + little-endian data) in the dtype asked for:
    // MAMBA_SPEED_DTYPE=f32 (default) | f16 | bf16.
    let dtype = std::env::var("MAMBA_SPEED_DTYPE").unwrap_or_else(|_| "f32".into());
    let (tag, width) = match dtype.as_str() {
        "f32" => ("F32", 4),
        "f16" => ("F16", 2),
        "bf16" => ("BF16", 2),
        other => panic!("MAMBA_SPEED_DTYPE={other:?}: f32, f16 or bf16"),
    };
    let encode = |v: f32, out: &mut Vec<u8>| match tag {
        "F32" => out.extend_from_slice(&v.to_le_bytes()),
        "F16" => out.extend_from_slice(&half::f16::from_f32(v).to_le_bytes()),
        _ => out.extend_from_slice(&half::bf16::from_f32(v).to_le_bytes()),
    };
    let mut header = serde_json::Map::new();
    let mut offset = 0usize;
    for (name, shape, data) in &tensors {
        let len = data.len() * width;
        header.insert(
            name.clone(),
            serde_json::json!({"dtype": tag, "shape": shape, "data_offsets": [offset, offset + len]}),
        );
        offset += len;
    }
    let header = serde_json::to_vec(&serde_json::Value::Object(header)).unwrap();
    let mut st = Vec::with_capacity(8 + header.len() + offset);
    st.extend_from_slice(&(header.len() as u64).to_le_bytes());
    st.extend_from_slice(&header);
    for (_, _, data) in &tensors {
        for &v in data {
            encode(v, &mut st);
        }
    }
    drop(tensors);
    let config = serde_json::json!({
        "model_type": "mamba", "hidden_size": d, "num_hidden_layers": layers, "vocab_size": vocab,
        "state_size": n, "conv_kernel": k, "expand": 2, "time_step_rank": "auto", "layer_norm_epsilon": 1e-5,
        "tie_word_embeddings": true, "bos_token_id": 0, "eos_token_id": 0
    });
    let t0 = Instant::now();
    let model = load_model_from_memory(vec![
        ("config.json".into(), serde_json::to_vec(&config).unwrap()),
        ("model.safetensors".into(), st),
    ])
    .unwrap();
    let info = model.info();
    println!("weights stored as {dtype}");
    println!(
        "loaded in {:.2}s: {:.1}M params, {:.0} MB weights, state {} KB",
        t0.elapsed().as_secs_f64(),
        info.param_count as f64 / 1e6,
        info.weight_bytes as f64 / 1e6,
        info.state_bytes / 1024
    );

    let ids: Vec<u32> = (0..prompt).map(|i| ((i * 7919) % (vocab - 3)) as u32).collect();
    // Warm-up (page in weights, spin up the pool).
    let mut state = model.new_state().unwrap();
    model.forward(&ids[..64.min(prompt)], state.as_mut(), LogitsWanted::Last).unwrap();

    let decode_only = std::env::var("MAMBA_SPEED_DECODE_ONLY").is_ok();
    let mut best = f64::MAX;
    let reps: usize = std::env::var("MAMBA_SPEED_PREFILL_REPS").ok().and_then(|v| v.parse().ok()).unwrap_or(3);
    for _ in 0..if decode_only { 0 } else { reps } {
        let mut state = model.new_state().unwrap();
        let t = Instant::now();
        let logits = model.forward(&ids, state.as_mut(), LogitsWanted::Last).unwrap();
        best = best.min(t.elapsed().as_secs_f64());
        assert!(logits.iter().all(|v| v.is_finite()));
    }
    println!("prefill {prompt}: {:.3}s best of {reps} = {:.1} tokens/s", best, prompt as f64 / best);
    if decode == 0 {
        return;
    }

    let mut state = model.new_state().unwrap();
    let mut logits = model.forward(&ids, state.as_mut(), LogitsWanted::Last).unwrap();
    let t = Instant::now();
    for _ in 0..decode {
        let next = logits.iter().enumerate().fold(0, |b, (i, v)| if *v > logits[b] { i } else { b }) as u32;
        logits = model.forward(&[next], state.as_mut(), LogitsWanted::Last).unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "decode {decode} tokens: {:.3}s = {:.1} tokens/s ({:.2} ms/token)",
        secs,
        decode as f64 / secs,
        secs * 1e3 / decode as f64
    );

    if decode_only {
        return;
    }
    // Streaming read bandwidth (the ceiling for decode, which reads every weight once per token).
    {
        use rayon::prelude::*;
        let big = vec![1.0f32; 256 << 20];
        let mut best = f64::MAX;
        for _ in 0..3 {
            let t = Instant::now();
            let s: f32 = big
                .par_chunks(1 << 16)
                .map(|c| {
                    let acc = c.chunks_exact(16).fold([0f32; 16], |mut a, x| {
                        for i in 0..16 {
                            a[i] += x[i];
                        }
                        a
                    });
                    acc.iter().sum::<f32>()
                })
                .sum();
            best = best.min(t.elapsed().as_secs_f64());
            assert!(s > 0.0);
        }
        println!(
            "streaming read of 1 GiB: {:.1} GB/s (decode floor ≈ {:.1} ms/token for these weights)",
            (1u64 << 30) as f64 / best / 1e9,
            info.weight_bytes as f64 / ((1u64 << 30) as f64 / best) * 1e3
        );
    }
}
