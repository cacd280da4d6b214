//! Times the 4x4 stride-2 (padding 1) convolutions that `zoo_core::ops` runs through its own
//! kernels (csrc/convt_k4s2.cpp) against libtorch's, one line per shape: the transposed
//! convolution's forward without gradients, the single-channel convolution of a grey image's
//! first layer, and a stride-2 convolution's input gradient (the same operation as the
//! transposed one, in the backward). Shapes: the conv VAE's layers at batch 128, the beta-VAE
//! preset's upsampling layers (batch 64), and DCGAN-64's at batch 64 (which zoo-gan runs
//! channels-last, through oneDNN; here in NCHW). The evidence behind the kernels in
//! docs/benchmarks.md (VAE section).
//!
//! ```sh
//! cargo run --release -p zoo-examples --example bench_upconv -- [REPEATS]
//! ```
use anyhow::Result;
use tch::{Device, Kind, Tensor};
use zoo_core::ops;

#[path = "timing.rs"]
mod timing;
use timing::time;

fn main() -> Result<()> {
    let repeats = std::env::args().nth(1).map(|s| s.parse()).transpose()?.unwrap_or(5usize);
    // (the CLI's malloc settings, for both sides)
    ops::tune_allocator();
    let opts = (Kind::Float, Device::Cpu);
    let (s, p) = ([2, 2], [1, 1]);
    println!("{:>44} {:>10} {:>10} {:>7} {:>8}", "operation", "torch ms", "zoo ms", "ratio", "zoo GF/s");
    // (N, C in, K out, H = W of the transposed convolution's input)
    for (n, c, k, hw) in [
        (128, 64, 32, 7),
        (64, 64, 64, 2),
        (64, 64, 32, 4),
        (64, 32, 32, 8),
        (64, 512, 256, 4),
        (64, 256, 128, 8),
        (64, 128, 64, 16),
    ] {
        let x = Tensor::randn([n, c, hw, hw], opts);
        let w = Tensor::randn([c, k, 4, 4], opts) * (1.0 / (16.0 * c as f64).sqrt());
        let b = Tensor::randn([k], opts);
        let path = if ops::is_k4s2_path(&x, &w, Some(&b), true, s, p) { "" } else { " (libtorch)" };
        let (torch, zoo) = no_grad_times(
            repeats,
            || Ok(x.f_conv_transpose2d(&w, Some(&b), s, p, [0, 0], 1, [1, 1])?),
            || Ok(ops::conv_transpose2d(&x, &w, Some(&b), s, p)?),
        )?;
        report(&format!("convT {n}x{c}x{hw}x{hw} -> {k}{path}"), torch, zoo, n * c * k * hw * hw * 16);
    }
    // a grey image's first layer (one input channel), forward without gradients; the same
    // kernel gives the input gradient of the last layer (32 -> 1 channel)
    let x = Tensor::randn([128, 1, 28, 28], opts);
    let w = Tensor::randn([32, 1, 4, 4], opts) * 0.25;
    let b = Tensor::randn([32], opts);
    let (torch, zoo) = no_grad_times(
        repeats,
        || Ok(x.f_conv2d(&w, Some(&b), s, p, [1, 1], 1)?),
        || Ok(ops::conv2d(&x, &w, Some(&b), s, p)?),
    )?;
    report("conv 128x1x28x28 -> 32", torch, zoo, 128 * 32 * 14 * 14 * 16);
    // and in training: forward, then the filters' and the bias's gradients (not the image's)
    let leaves = [&w, &b].map(|t| t.copy().set_requires_grad(true));
    let g = Tensor::randn([128, 32, 14, 14], opts);
    let step = |y: Tensor| {
        let _g = Tensor::run_backward(&[(&y * &g).sum(Kind::Float)], &leaves, false, false);
    };
    let torch = time(repeats, || {
        step(x.f_conv2d(&leaves[0], Some(&leaves[1]), s, p, [1, 1], 1)?);
        Ok(())
    })?;
    let zoo = time(repeats, || {
        step(ops::conv2d(&x, &leaves[0], Some(&leaves[1]), s, p)?);
        Ok(())
    })?;
    report("conv 128x1x28x28 -> 32, fwd + bwd", torch, zoo, 2 * 128 * 32 * 14 * 14 * 16);
    // the last layer of an image decoder, to few channels (the conv VAE's, DCGAN-64's in NCHW),
    // and the conv VAE's 64 -> 32 upsampling layer: the forward without gradients, then forward
    // and backward for the input, filters and bias
    for (n, c, k, hw) in [(128, 32, 1, 14), (64, 64, 3, 32), (128, 64, 32, 7)] {
        let x = Tensor::randn([n, c, hw, hw], opts);
        let w = Tensor::randn([c, k, 4, 4], opts) * (1.0 / (16.0 * c as f64).sqrt());
        let b = Tensor::randn([k], opts);
        let macs = n * c * k * hw * hw * 16;
        let (torch, zoo) = no_grad_times(
            repeats,
            || Ok(x.f_conv_transpose2d(&w, Some(&b), s, p, [0, 0], 1, [1, 1])?),
            || Ok(ops::conv_transpose2d(&x, &w, Some(&b), s, p)?),
        )?;
        report(&format!("convT {n}x{c}x{hw}x{hw} -> {k}"), torch, zoo, macs);
        let leaves = [&x, &w, &b].map(|t| t.copy().set_requires_grad(true));
        let g = Tensor::randn([n, k, 2 * hw, 2 * hw], opts);
        let step = |y: Tensor| {
            let _g = Tensor::run_backward(&[(&y * &g).sum(Kind::Float)], &leaves, false, false);
        };
        let [xg, wg, bg] = &leaves;
        let torch = time(repeats, || {
            step(xg.f_conv_transpose2d(wg, Some(bg), s, p, [0, 0], 1, [1, 1])?);
            Ok(())
        })?;
        let zoo = time(repeats, || {
            step(ops::conv_transpose2d(xg, wg, Some(bg), s, p)?);
            Ok(())
        })?;
        report(&format!("convT {n}x{c}x{hw}x{hw} -> {k}, fwd + bwd"), torch, zoo, 3 * macs);
    }
    // the input gradient of conv2d(x (N, C, H, W), w (K, C, 4, 4)), alone: the filters need none
    for (n, c, k, hw) in [(128, 32, 64, 14), (64, 128, 256, 16), (64, 64, 128, 32)] {
        let x = Tensor::randn([n, c, hw, hw], opts).set_requires_grad(true);
        let w = Tensor::randn([k, c, 4, 4], opts) * (1.0 / (16.0 * c as f64).sqrt());
        let path = if ops::is_k4s2_path(&x, &w, None, false, s, p) { "" } else { " (libtorch)" };
        let y = x.f_conv2d::<&Tensor>(&w, None, s, p, [1, 1], 1)?;
        let g = Tensor::randn(y.size().as_slice(), opts);
        let gx = |y: &Tensor| Tensor::run_backward(&[y], &[&x], false, false).remove(0);
        let torch = time(repeats, || {
            let y = x.f_conv2d::<&Tensor>(&w, None, s, p, [1, 1], 1)?;
            let _g = gx(&(&y * &g).sum(Kind::Float));
            Ok(())
        })?;
        let zoo = time(repeats, || {
            let y = ops::conv2d(&x, &w, None, s, p)?;
            let _g = gx(&(&y * &g).sum(Kind::Float));
            Ok(())
        })?;
        let macs = n * k * (hw / 2) * (hw / 2) * c * 16;
        report(&format!("conv {n}x{c}x{hw}x{hw} -> {k}, fwd + dx{path}"), torch, zoo, 2 * macs);
        // the forward alone, then forward and backward for the input, filters and bias
        let xd = x.detach();
        let b = Tensor::randn([k], opts);
        let strided = ops::is_conv_k4s2_path(&xd, &w, Some(&b), s, p);
        let path = if strided { "" } else { " (libtorch)" };
        let (torch, zoo) = no_grad_times(
            repeats,
            || Ok(xd.f_conv2d(&w, Some(&b), s, p, [1, 1], 1)?),
            || Ok(ops::conv2d(&xd, &w, Some(&b), s, p)?),
        )?;
        report(&format!("conv {n}x{c}x{hw}x{hw} -> {k}{path}"), torch, zoo, macs);
        let leaves = [&xd, &w, &b].map(|t| t.copy().set_requires_grad(true));
        let [xg, wg, bg] = &leaves;
        let step = |y: Tensor| {
            let _g = Tensor::run_backward(&[(&y * &g).sum(Kind::Float)], &leaves, false, false);
        };
        let torch = time(repeats, || {
            step(xg.f_conv2d(wg, Some(bg), s, p, [1, 1], 1)?);
            Ok(())
        })?;
        let zoo = time(repeats, || {
            step(ops::conv2d(xg, wg, Some(bg), s, p)?);
            Ok(())
        })?;
        report(&format!("conv {n}x{c}x{hw}x{hw} -> {k}, fwd + bwd{path}"), torch, zoo, 3 * macs);
    }
    Ok(())
}

/// Medians of `repeats` runs of each side without gradients: (libtorch's, zoo's) seconds.
fn no_grad_times(
    repeats: usize,
    torch: impl Fn() -> Result<Tensor>,
    zoo: impl Fn() -> Result<Tensor>,
) -> Result<(f64, f64)> {
    let run = |f: &dyn Fn() -> Result<Tensor>| {
        time(repeats, || {
            let _y = tch::no_grad(f)?;
            Ok(())
        })
    };
    Ok((run(&torch)?, run(&zoo)?))
}

/// One line: both times, the ratio and zoo's rate for `macs` multiply-adds.
fn report(what: &str, torch: f64, zoo: f64, macs: i64) {
    let gflops = 2.0 * macs as f64 / zoo / 1e9;
    println!("{what:>44} {:>10.2} {:>10.2} {:>6.2}x {gflops:>8.1}", torch * 1e3, zoo * 1e3, torch / zoo);
}
