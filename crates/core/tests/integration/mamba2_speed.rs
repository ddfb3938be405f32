//! Timing probe (not a check), ignored by default: prefill and decode of a Mamba-2 model folder at 1
//! and 2 threads. `PHOENIX_MAMBA2_DIR=<folder> cargo test --release -p phoenix-core --test integration
//! -- mamba2_speed:: --ignored --nocapture` (e.g. a random Mamba-2-130M-shaped folder: D 768, 24 layers, N 128, P 64).

use std::time::Instant;

use phoenix_core::models::load_model_dir;
use phoenix_core::LogitsWanted;

#[test]
#[ignore]
fn mamba2_speed() {
    let Ok(dir) = std::env::var("PHOENIX_MAMBA2_DIR") else {
        eprintln!("set PHOENIX_MAMBA2_DIR to a Mamba-2 model folder");
        return;
    };
    let model = load_model_dir(std::path::Path::new(&dir)).unwrap();
    let v = model.info().vocab_size as u32;
    let prompt: Vec<u32> = (0..512u32).map(|i| (i * 7919 + 13) % v).collect();
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
        pool.install(|| {
            let mut best_prefill = f64::MAX;
            for _ in 0..3 {
                let mut st = model.new_state().unwrap();
                let t = Instant::now();
                model.forward(&prompt, st.as_mut(), LogitsWanted::Last).unwrap();
                best_prefill = best_prefill.min(t.elapsed().as_secs_f64());
            }
            let mut st = model.new_state().unwrap();
            model.forward(&prompt[..16], st.as_mut(), LogitsWanted::Last).unwrap();
            let steps = 32;
            let t = Instant::now();
            for i in 0..steps {
                model.forward(&[prompt[i]], st.as_mut(), LogitsWanted::Last).unwrap();
            }
            let decode = t.elapsed().as_secs_f64() / steps as f64;
            eprintln!(
                "threads {threads}: prefill {} tokens {:.0} ms ({:.0} tok/s), decode {:.1} ms/token ({:.1} tok/s)",
                prompt.len(),
                best_prefill * 1e3,
                prompt.len() as f64 / best_prefill,
                decode * 1e3,
                1.0 / decode
            );
        });
    }
}
