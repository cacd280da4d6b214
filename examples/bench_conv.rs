//! Times `zoo_core::ops::conv2d` against libtorch's conv2d on the 3x3 convolutions of
//! google/ddpm-cifar10-32's UNet at batch 1, 4 and 16 and of the mnist-32 preset at batch 64
//! (forward without gradients, and forward + backward), one line per shape; the evidence behind
//! the Winograd path and its thresholds in docs/benchmarks.md.
//!
//! ```sh
//! cargo run --release -p zoo-examples --example bench_conv -- [REPEATS]
//! ```
use anyhow::Result;
use tch::{Device, Kind, Tensor};
use zoo_core::ops;

#[path = "timing.rs"]
mod timing;
use timing::time;

fn main() -> Result<()> {
    let repeats = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(5usize);
    let opts = (Kind::Float, Device::Cpu);
    println!(
        "{:>24} {:>10} {:>10} {:>7} {:>12} {:>12} {:>7}",
        "shape", "torch ms", "zoo ms", "ratio", "torch fb ms", "zoo fb ms", "ratio"
    );
    let shapes = [
        (1, 128, 128, 32),
        (1, 256, 256, 16),
        (1, 256, 256, 8),
        (4, 128, 128, 32),
        (4, 256, 256, 16),
        (4, 256, 256, 8),
        (16, 128, 128, 32),
        (16, 256, 256, 16),
        (16, 256, 256, 8),
        (16, 256, 256, 4),
        // the mnist-32 preset's training convolutions (batch 64, 32-64 channels)
        (64, 32, 32, 32),
        (64, 64, 64, 16),
        (64, 64, 64, 8),
    ];
    for (n, c, k, hw) in shapes {
        let x = Tensor::randn([n, c, hw, hw], opts);
        let w = Tensor::randn([k, c, 3, 3], opts) * (1.0 / (9.0 * c as f64).sqrt());
        let b = Tensor::randn([k], opts);
        let torch_conv =
            |x: &Tensor, w: &Tensor, b: &Tensor| x.f_conv2d(w, Some(b), [1, 1], [1, 1], [1, 1], 1);
        let zoo_conv = |x: &Tensor, w: &Tensor, b: &Tensor| ops::conv2d(x, w, Some(b), [1, 1], [1, 1]);
        let torch = time(repeats, || {
            let _y = tch::no_grad(|| torch_conv(&x, &w, &b))?;
            Ok(())
        })?;
        let zoo = time(repeats, || {
            let _y = tch::no_grad(|| zoo_conv(&x, &w, &b))?;
            Ok(())
        })?;
        let (xg, wg, bg) = (
            x.copy().set_requires_grad(true),
            w.copy().set_requires_grad(true),
            b.copy().set_requires_grad(true),
        );
        let torch_fb = time(repeats, || {
            torch_conv(&xg, &wg, &bg)?.sum(Kind::Float).backward();
            Ok(())
        })?;
        let zoo_fb = time(repeats, || {
            zoo_conv(&xg, &wg, &bg)?.sum(Kind::Float).backward();
            Ok(())
        })?;
        println!(
            "{:>24} {:>10.2} {:>10.2} {:>6.2}x {:>12.2} {:>12.2} {:>6.2}x",
            format!("{n}x{c}x{hw}x{hw} -> {k}"),
            torch * 1e3,
            zoo * 1e3,
            torch / zoo,
            torch_fb * 1e3,
            zoo_fb * 1e3,
            torch_fb / zoo_fb
        );
    }
    Ok(())
}
