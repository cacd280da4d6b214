//! Golden test of zoo-flow's WaveGlow against the PyTorch re-implementation of NVIDIA's glow.py
//! in `tools/make_flow_fixtures.py` (re-run it with the project's .venv to remake the fixture).
//!
//! The fixture model folder went through `tools/convert_waveglow.py` (weight norm folded), and
//! loads strictly by NVIDIA's names. Checked: inference at sigma 0 (the deterministic inverse
//! pass), the forward pass (z, the log s and log det W totals, the loss) within 1e-4, and
//! inference at sigma 0.6 after the same seed (noise drawn in NVIDIA's order).
//!
//! One test function: the sigma 0.6 check draws from libtorch's global generator.
use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{anyhow, Result};
use tch::{Device, Kind, Tensor};
use zoo_flow::waveglow::Vocoder;

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/flow");
const TOL: f64 = 1e-4;

fn get<'a>(t: &'a BTreeMap<String, Tensor>, name: &str) -> Result<&'a Tensor> {
    t.get(name).ok_or_else(|| anyhow!("fixture has no tensor {name}"))
}

fn max_abs_diff(a: &Tensor, b: &Tensor) -> Result<f64> {
    anyhow::ensure!(a.size() == b.size(), "shape {:?} != {:?}", a.size(), b.size());
    Ok((a - b).abs().max().double_value(&[]))
}

#[test]
fn waveglow_matches_the_pytorch_reference() -> Result<()> {
    let io: BTreeMap<String, Tensor> =
        Tensor::read_safetensors(format!("{DIR}/waveglow-tiny-io.safetensors"))?.into_iter().collect();
    let v = Vocoder::load(Path::new(&format!("{DIR}/waveglow-tiny")), Device::Cpu, Kind::Float)?;
    let m = &v.model;
    let mel = get(&io, "mel")?;

    // 1. inverse pass at sigma 0
    let want = get(&io, "audio_sigma0")?;
    let got = tch::no_grad(|| m.infer(mel, 0.0))?;
    let d = max_abs_diff(&got, want)?;
    let scale = want.abs().max().double_value(&[]);
    println!("infer sigma 0: max |diff| {d:.2e} (output peak {scale:.3})");
    assert!(scale > 0.05, "the reference output is (nearly) silent: the test would be trivial");
    assert!(d < TOL, "infer(sigma 0) differs by {d}");

    // 2. forward pass
    let audio = get(&io, "audio")?;
    let out = tch::no_grad(|| m.forward(mel, audio))?;
    let dz = max_abs_diff(&out.z, get(&io, "z")?)?;
    let log_s = out.log_s.sum(Kind::Double).double_value(&[]);
    let log_det_w = out.log_det_w.sum(Kind::Double).double_value(&[]);
    let want_log_s = get(&io, "log_s_total")?.double_value(&[0]);
    let want_log_det_w = get(&io, "log_det_w_total")?.double_value(&[0]);
    let loss = out.loss(1.0)?.double_value(&[]);
    let want_loss = get(&io, "loss")?.double_value(&[0]);
    println!(
        "forward: z max |diff| {dz:.2e}; log s {log_s:.5} vs {want_log_s:.5}; log det W {log_det_w:.5} vs \
         {want_log_det_w:.5}; loss {loss:.6} vs {want_loss:.6}"
    );
    assert!(dz < TOL, "z differs by {dz}");
    assert!(want_log_s.abs() > 1.0, "log s total {want_log_s} is trivial");
    // sums over 1280 samples: relative tolerance
    assert!((log_s - want_log_s).abs() < TOL * want_log_s.abs().max(1.0), "{log_s} vs {want_log_s}");
    assert!(want_log_det_w.abs() > 1.0, "log det W total {want_log_det_w} is trivial");
    assert!(
        (log_det_w - want_log_det_w).abs() < TOL * want_log_det_w.abs(),
        "{log_det_w} vs {want_log_det_w}"
    );
    assert!((loss - want_loss).abs() < TOL, "{loss} vs {want_loss}");

    // 3. inference with noise: the same draws as PyTorch after the same seed
    zoo_core::seed::seed_all(get(&io, "seed")?.int64_value(&[0]) as u64);
    let got = tch::no_grad(|| m.infer(mel, 0.6))?;
    let d = max_abs_diff(&got, get(&io, "audio_sigma06")?)?;
    println!("infer sigma 0.6 after the same seed: max |diff| {d:.2e}");
    assert!(d < TOL, "infer(sigma 0.6) differs by {d}");
    Ok(())
}
