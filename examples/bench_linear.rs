//! Times a training step's linear layer (forward, then the input's, the weight's and the bias's
//! gradients) through `zoo_core::ops::linear`, which runs training-sized products as oneDNN's
//! matmul, against libtorch's linear (MKL's sgemm), on the conv VAE's and MLP VAE's layers at
//! batch 128, the shakespeare-char LLM preset's at 768 tokens and the mnist-32 diffusion
//! UNet's attention projections; one line per shape, the
//! evidence behind the oneDNN path in docs/benchmarks.md.
//!
//! ```sh
//! OMP_NUM_THREADS=1 cargo run --release -p zoo-examples --example bench_linear -- [REPEATS]
//! ```
use anyhow::Result;
use tch::{Device, Kind, Tensor};
use zoo_core::ops;

#[path = "timing.rs"]
mod timing;
use timing::time;

fn main() -> Result<()> {
    let repeats = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(50usize);
    // the CLI's malloc settings, as in training
    zoo_core::ops::tune_allocator();
    let opts = (Kind::Float, Device::Cpu);
    println!("{:>22} {:>10} {:>10} {:>7}", "rows x in -> out", "torch ms", "zoo ms", "ratio");
    // (rows, in, out)
    let shapes = [
        (128, 3136, 256),
        (128, 256, 3136),
        (128, 784, 400),
        (128, 400, 784),
        (768, 128, 384),
        (768, 128, 128),
        (768, 128, 512),
        (768, 512, 128),
        // the mnist-32 diffusion UNet's attention projections: 64 images x 8 x 8 tokens
        (4096, 64, 64),
    ];
    for (m, k, n) in shapes {
        let x = Tensor::randn([m, k], opts).set_requires_grad(true);
        let w = (Tensor::randn([n, k], opts) * (1.0 / (k as f64).sqrt())).set_requires_grad(true);
        let b = Tensor::zeros([n], opts).set_requires_grad(true);
        let g = Tensor::randn([m, n], opts);
        assert!(ops::is_dnnl_linear(&x, &w, Some(&b), false));
        let step = |zoo: bool| -> Result<()> {
            let y = if zoo { ops::linear(&x, &w, Some(&b))? } else { x.linear(&w, Some(&b)) };
            let grads = Tensor::run_backward(&[(&y * &g).sum(Kind::Float)], &[&x, &w, &b], false, false);
            assert_eq!(grads.len(), 3);
            Ok(())
        };
        // interleaved rounds, the best median of each side
        let (mut torch, mut zoo) = (f64::MAX, f64::MAX);
        for _ in 0..3 {
            torch = torch.min(time(repeats, || step(false))?);
            zoo = zoo.min(time(repeats, || step(true))?);
        }
        println!(
            "{:>22} {:>10.3} {:>10.3} {:>6.2}x",
            format!("{m} x {k} -> {n}"),
            torch * 1e3,
            zoo * 1e3,
            torch / zoo
        );
    }
    Ok(())
}
