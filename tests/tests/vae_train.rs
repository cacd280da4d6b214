//! zoo-vae's training task in zoo-core's loop, on the procedural shapes (no files): the loss
//! falls, and a run stopped and resumed computes the very losses of the uninterrupted run.
//!
//! One binary of its own, one test function per model kind run one after another inside a
//! single test: exact resume depends on libtorch's global generator, shared by a binary's threads.
use std::path::Path;

use serde_json::{json, Value};
use tch::Device;
use zoo_core::run::RunDir;
use zoo_core::train::trainer::Silent;
use zoo_core::train::{AdamW, AdamWConfig, LoopConfig, LrSchedule, Trainer};
use zoo_vae::model::Vae;
use zoo_vae::train::{DataSpec, Dataset, TrainConfig, VaeTask};
use zoo_vae::ModelConfig;

fn train(model: &Value, train: &Value, root: &Path, steps: u64, resume: bool) -> Vec<f64> {
    let cfg = ModelConfig::from_json(model).unwrap();
    let tc: TrainConfig = serde_json::from_value(train.clone()).unwrap();
    zoo_core::seed::seed_all(3);
    let vae = Vae::new(&cfg, Device::Cpu).unwrap();
    let data = Dataset::open(&DataSpec::Shapes, cfg.image_shape(), 3).unwrap();
    let mut task = VaeTask::new(&vae, &data, tc.clone(), 3).unwrap();
    task.eval_images = Some(64);
    let loop_cfg = LoopConfig {
        steps,
        clip_grad: None,
        log_every: 1,
        eval_every: Some(40),
        checkpoint_every: Some(30),
        seed: 3,
        ..Default::default()
    };
    let run = RunDir::create(root, &json!({}), resume).unwrap();
    let opt = AdamW::new(&vae.vs, AdamWConfig { lr: tc.lr, weight_decay: 0.0, ..Default::default() });
    let mut tr = Trainer::new(&run, &vae.vs, opt, LrSchedule::Constant { lr: tc.lr }, loop_cfg).unwrap();
    tr.should_stop = || false;
    let start = tr.resume(&mut task).unwrap();
    tr.run(&mut task, start, &mut Silent).unwrap();
    run.metrics().unwrap().iter().filter_map(|r| r.get("loss").and_then(Value::as_f64)).collect()
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len() as f64
}

fn check(name: &str, model: Value, train_cfg: Value, min_drop: f64) {
    let dir = tempfile::tempdir().unwrap();
    let full = train(&model, &train_cfg, &dir.path().join("full"), 60, false);
    assert_eq!(full.len(), 60);
    let (first, last) = (mean(&full[..10]), mean(&full[50..]));
    eprintln!("{name}: mean loss of steps 1-10 {first:.1}, of steps 51-60 {last:.1}");
    assert!(
        first - last > min_drop * first,
        "{name}: loss fell from {first:.1} to {last:.1}, less than {:.0}%",
        min_drop * 100.0
    );
    let split = dir.path().join("split");
    train(&model, &train_cfg, &split, 30, false);
    let resumed = train(&model, &train_cfg, &split, 60, true);
    assert_eq!(full, resumed, "{name}: resumed losses differ from the uninterrupted run's");
}

#[test]
fn losses_fall_and_resume_is_exact() {
    // Bernoulli conv VAE, 3x16x16: starts near 768 pixels * ln 2 = 532 nats per image.
    check(
        "conv",
        json!({"model": "conv", "in_channels": 3, "image_size": 16, "channels": [16, 32], "hidden_dim": 64,
               "latent_dim": 8, "likelihood": {"kind": "bernoulli"}}),
        json!({"batch_size": 32, "lr": 0.002, "steps": 60}),
        // Measured: 513 -> 323 (-37%).
        0.25,
    );
    // AutoencoderKL with L1 reconstruction and a 1e-6 KL weight.
    check(
        "kl",
        json!({"_class_name": "AutoencoderKL", "in_channels": 3, "out_channels": 3,
               "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
               "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"], "block_out_channels": [8, 16],
               "layers_per_block": 1, "act_fn": "silu", "latent_channels": 4, "norm_num_groups": 4,
               "sample_size": 16, "scaling_factor": 1.0}),
        json!({"batch_size": 16, "lr": 0.002, "beta": 1e-6, "steps": 60, "recon": "l1"}),
        // Measured: 305 -> 122 (-60%).
        0.4,
    );
}
