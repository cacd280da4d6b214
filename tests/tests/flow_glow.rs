//! zoo-flow's Glow training task in zoo-core's loop, on 8x8 grey pictures of the procedural
//! shapes (no files): the bits per dimension fall by a stated amount in a short deterministic
//! run, and a run stopped and resumed computes the very losses of the uninterrupted run (the
//! ActNorm init, done once at step 0, travels in the checkpoint).
//!
//! One binary of its own and one test function: exact resume depends on libtorch's global
//! generator, shared by a binary's threads.
use std::path::Path;

use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};
use zoo_core::run::RunDir;
use zoo_core::train::trainer::Silent;
use zoo_core::train::{AdamW, AdamWConfig, LoopConfig, Trainer};
use zoo_flow::glow_train::{GlowFile, GlowModel, GlowTask};

/// n grey 8x8 shapes as pixels 0..=255, (n, 1, 8, 8) u8.
fn pixels(n: i64, seed: u64) -> Tensor {
    let (x, _) = zoo_core::data::shapes(n, 8, seed);
    let grey = zoo_core::image::to_channels(&x, 1).unwrap();
    ((grey + 1.0) * 127.5).round().clamp(0.0, 255.0).to_kind(Kind::Uint8)
}

/// Trains `GlowFile::tiny()` (2 levels x 2 steps, width 8, batch 16) for `steps` steps in
/// `root`; returns the logged losses and the (step, test bits/dim) records.
fn train(root: &Path, steps: u64, resume: bool) -> (Vec<f64>, Vec<(u64, f64)>) {
    let (train_px, test_px) = (pixels(512, 5), pixels(64, 6));
    let mut file = GlowFile::tiny();
    file.train_config.steps = steps;
    zoo_core::seed::seed_all(5);
    let glow = GlowModel::new(&file, Device::Cpu).unwrap();
    let mut task = GlowTask::new(&glow, &train_px, &test_px, 5).unwrap();
    task.eval_images = 64;
    let loop_cfg = LoopConfig {
        steps,
        clip_grad: file.train_config.clip_grad,
        log_every: 1,
        eval_every: Some(25),
        checkpoint_every: Some(25),
        seed: 5,
        ..Default::default()
    };
    let run = RunDir::create(root, &json!({}), resume).unwrap();
    let lr = file.train_config.learning_rate;
    let opt = AdamW::new(&glow.vs, AdamWConfig { lr, weight_decay: 0.0, ..Default::default() });
    // the schedule of a 100-step run whatever `steps` is, so a 50-step run is a prefix of it
    let mut schedule_file = file.clone();
    schedule_file.train_config.steps = 100;
    let mut tr = Trainer::new(&run, &glow.vs, opt, schedule_file.schedule(), loop_cfg).unwrap();
    tr.should_stop = || false;
    let start = tr.resume(&mut task).unwrap();
    tr.run(&mut task, start, &mut Silent).unwrap();
    let recs = run.metrics().unwrap();
    let losses = recs.iter().filter_map(|r| r.get("loss").and_then(Value::as_f64)).collect();
    let evals = recs
        .iter()
        .filter_map(|r| Some((r.get("step")?.as_u64()?, r.get("test_bits_per_dim")?.as_f64()?)))
        .collect();
    (losses, evals)
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

#[test]
fn bits_fall_and_resume_is_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (full, evals) = train(&dir.path().join("full"), 100, false);
    assert_eq!(full.len(), 100);
    let (first, last) = (mean(&full[..5]), mean(&full[95..]));
    eprintln!("glow: train bits/dim of steps 1-5 {first:.3}, of steps 96-100 {last:.3}; test {evals:?}");
    // Measured: 7.27 -> 5.85 train bits/dim (-1.42); test 6.35 (step 25) -> 5.86 (step 100).
    assert!(first - last > 1.0, "train bits/dim fell from {first:.3} to {last:.3}, less than 1.0");
    assert_eq!(evals.iter().map(|e| e.0).collect::<Vec<_>>(), vec![25, 50, 75, 100]);
    assert!(evals[0].1 - evals[3].1 > 0.3, "test bits/dim {evals:?}");
    let split = dir.path().join("split");
    train(&split, 50, false);
    let (resumed, _) = train(&split, 100, true);
    assert_eq!(full, resumed, "resumed losses differ from the uninterrupted run's");
}
