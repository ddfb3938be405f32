//! Speed probe for a Llama-shaped model (not run by default): prefill and decode tokens/s, and decode
//! at a long context (KV growth). `PHOENIX_LLAMA_BENCH_DIR=<hf folder> RAYON_NUM_THREADS=2
//! cargo test --release -p phoenix-core --test integration -- llama_speed:: --ignored --nocapture`.

use std::time::Instant;

use phoenix_core::models::load_model_dir;
use phoenix_core::LogitsWanted;

#[test]
#[ignore]
fn llama_prefill_and_decode_speed() {
    let Ok(dir) = std::env::var("PHOENIX_LLAMA_BENCH_DIR") else { return };
    let model = load_model_dir(std::path::Path::new(&dir)).unwrap();
    let v = model.info().vocab_size as u32;
    let ids: Vec<u32> = (0..4096u32).map(|i| (i * 7919 + 13) % v).collect();
    let best = |runs: usize, f: &mut dyn FnMut() -> f64| (0..runs).map(|_| f()).fold(f64::INFINITY, f64::min);

    let prefill = best(3, &mut || {
        let mut st = model.new_state().unwrap();
        let t = Instant::now();
        model.forward(&ids[..512], st.as_mut(), LogitsWanted::Last).unwrap();
        t.elapsed().as_secs_f64()
    });
    println!("prefill 512: {:.1} tok/s", 512.0 / prefill);

    for context in [16usize, 1024, 4000] {
        let mut st = model.new_state().unwrap();
        for piece in ids[..context].chunks(model.prefill_chunk()) {
            model.forward(piece, st.as_mut(), LogitsWanted::Last).unwrap();
        }
        let steps = 32;
        let t = Instant::now();
        for i in 0..steps {
            model.forward(&[ids[context + i]], st.as_mut(), LogitsWanted::Last).unwrap();
        }
        println!("decode at {context}: {:.1} tok/s", steps as f64 / t.elapsed().as_secs_f64());
    }
}
