//! Adversarial training end to end on a tiny DCGAN: a run stopped by an interrupt and resumed
//! computes the very losses and weights of the uninterrupted run. Its own test binary, since
//! exact resume depends on libtorch's global generator.
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};
use tch::{Device, Tensor};
use zoo_core::data::DataSpec;
use zoo_core::run::RunDir;
use zoo_core::train::trainer::Silent;
use zoo_gan::dcgan::{DcganConfig, Norm};
use zoo_gan::model::{Discriminator, Generator, ModelConfig, TrainConfig};
use zoo_gan::train::{Dataset, GanTrainer};

const SEED: u64 = 7;

fn model() -> ModelConfig {
    // Conditional with spectral norm and R1, so their state (embeddings, u/v vectors) is covered;
    // the training config adds the mode-seeking term (paired labels and latents).
    ModelConfig::Dcgan(DcganConfig { num_classes: 3, d_norm: Norm::Spectral, ..DcganConfig::tiny() })
}

fn train_cfg(steps: u64) -> TrainConfig {
    serde_json::from_value(json!({
        "batch_size": 8, "steps": steps, "loss": "hinge", "lr_g": 0.0005, "lr_d": 0.0005, "beta1": 0.5,
        "beta2": 0.999, "r1_gamma": 1.0, "r1_every": 2, "ema_decay": 0.9, "mode_seeking": 0.5, "log_every": 1,
        "sample_every": 3, "checkpoint_every": 100
    }))
    .unwrap()
}

static CALLS: AtomicU64 = AtomicU64::new(0);
/// Asks to stop at the fourth check, i.e. before step 3.
fn stop_before_step_3() -> bool {
    CALLS.fetch_add(1, Ordering::SeqCst) == 3
}
fn never() -> bool {
    false
}

/// Trains in `dir` from scratch or from its checkpoint; returns the losses logged and G's weights.
fn train(
    dir: &std::path::Path,
    steps: u64,
    stop: fn() -> bool,
    resume: bool,
) -> (Vec<Value>, Vec<(String, Tensor)>, bool) {
    zoo_core::seed::seed_all(SEED);
    let cfg = model();
    let g = Generator::new(&cfg, Device::Cpu).unwrap();
    let d = Discriminator::new(&cfg, Device::Cpu).unwrap();
    let data = Dataset::open(&DataSpec::Shapes, 3, 16, SEED).unwrap();
    let run = RunDir::create(dir, &json!({"test": 1}), resume).unwrap();
    let mut t = GanTrainer::new(&run, &g, &d, &data, train_cfg(steps), SEED).unwrap();
    t.should_stop = stop;
    let start = t.resume().unwrap();
    assert_eq!(start > 0, resume);
    let out = t.run(start, &mut Silent).unwrap();
    let mut w: Vec<(String, Tensor)> = g.vs.variables().into_iter().collect();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    (run.metrics().unwrap(), w, out.interrupted)
}

fn losses(records: &[Value]) -> Vec<(u64, f64, f64)> {
    records
        .iter()
        .map(|r| (r["step"].as_u64().unwrap(), r["loss_d"].as_f64().unwrap(), r["loss_g"].as_f64().unwrap()))
        .collect()
}

#[test]
fn interrupted_and_resumed_run_matches_the_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let (full, w_full, interrupted) = train(&tmp.path().join("full"), 6, never, false);
    assert!(!interrupted);
    assert_eq!(full.len(), 6);
    let r = &full[5];
    for k in ["loss_d", "loss_g", "d_x", "d_g_z1", "d_g_z2", "mode_seeking"] {
        assert!(r[k].as_f64().is_some_and(f64::is_finite), "{k} missing in {r}");
    }
    // Lazy R1 (every 2nd D step): at steps 0, 2, 4 (logged as 1, 3, 5) only.
    let with_r1: Vec<u64> =
        full.iter().filter(|r| r.get("r1").is_some()).map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(with_r1, [1, 3, 5]);

    let dir = tmp.path().join("split");
    let (part, _, interrupted) = train(&dir, 6, stop_before_step_3, false);
    assert!(interrupted);
    assert_eq!(part.len(), 3);
    let run = RunDir::open(&dir).unwrap();
    assert_eq!(run.latest_checkpoint().unwrap().unwrap().1.step, 3);
    let (resumed, w_resumed, interrupted) = train(&dir, 6, never, true);
    assert!(!interrupted);
    assert_eq!(losses(&resumed), losses(&full), "losses after resume differ");
    for ((n, a), (_, b)) in w_full.iter().zip(&w_resumed) {
        assert!(a.equal(b), "generator weight {n} differs after resume");
    }
    // Fixed-noise grids at steps 3 and 6, the real batch, the loss plot, the checkpoint files.
    for f in ["samples/real.png", "samples/step-000003.png", "samples/step-000006.png", "loss.png"] {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let ck = dir.join("checkpoints/step-000006");
    for f in ["generator", "discriminator", "optimizer_g", "optimizer_d", "ema"] {
        assert!(ck.join(format!("{f}.safetensors")).is_file(), "{f}");
    }
}
