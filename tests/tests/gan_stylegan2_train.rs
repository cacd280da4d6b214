//! StyleGAN2 training end to end on a tiny model: style mixing, random noise, lazy R1, w_avg
//! tracking and a warmed-up EMA, stopped by an interrupt and resumed, compute the very losses and
//! weights of the uninterrupted run. Its own test binary, since exact resume depends on
//! libtorch's global generator.
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};
use zoo_core::data::DataSpec;
use zoo_core::run::RunDir;
use zoo_core::train::trainer::Silent;
use zoo_gan::model::{Discriminator, Generator, ModelConfig, TrainConfig};
use zoo_gan::stylegan2;
use zoo_gan::train::{Dataset, GanTrainer};

const SEED: u64 = 11;

fn train_cfg(steps: u64) -> TrainConfig {
    serde_json::from_value(json!({
        "batch_size": 8, "steps": steps, "loss": "bce", "lr_g": 0.002, "lr_d": 0.002, "beta1": 0.0,
        "beta2": 0.99, "r1_gamma": 1.0, "r1_every": 2, "style_mixing_prob": 0.9, "ema_decay": 0.99,
        "ema_warmup": true, "log_every": 1, "sample_every": 3, "checkpoint_every": 100
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

struct Outcome {
    metrics: Vec<Value>,
    weights: Vec<(String, Tensor)>,
    interrupted: bool,
    /// The saved (EMA) generator's w_avg and the live one's.
    ema_w_avg: Tensor,
    live_w_avg: Tensor,
}

fn train(dir: &std::path::Path, steps: u64, stop: fn() -> bool, resume: bool) -> Outcome {
    zoo_core::seed::seed_all(SEED);
    let cfg = ModelConfig::StyleGan2(stylegan2::Config::tiny());
    let g = Generator::new(&cfg, Device::Cpu).unwrap();
    let d = Discriminator::new(&cfg, Device::Cpu).unwrap();
    let data = Dataset::open(&DataSpec::Shapes, 3, 16, SEED).unwrap();
    let run = RunDir::create(dir, &json!({"test": 1}), resume).unwrap();
    let mut t = GanTrainer::new(&run, &g, &d, &data, train_cfg(steps), SEED).unwrap();
    t.should_stop = stop;
    let start = t.resume().unwrap();
    assert_eq!(start > 0, resume);
    let out = t.run(start, &mut Silent).unwrap();
    let model = t.save_model(&dir.join("model")).unwrap();
    let saved = Generator::load(&model, Device::Cpu, Kind::Float).unwrap();
    let mut w: Vec<(String, Tensor)> = g.vs.variables().into_iter().collect();
    w.sort_by(|a, b| a.0.cmp(&b.0));
    Outcome {
        metrics: run.metrics().unwrap(),
        weights: w,
        interrupted: out.interrupted,
        ema_w_avg: saved.vs.variables()["mapping.w_avg"].copy(),
        live_w_avg: g.vs.variables()["mapping.w_avg"].copy(),
    }
}

fn losses(records: &[Value]) -> Vec<(u64, f64, f64)> {
    records
        .iter()
        .map(|r| (r["step"].as_u64().unwrap(), r["loss_d"].as_f64().unwrap(), r["loss_g"].as_f64().unwrap()))
        .collect()
}

#[test]
fn stylegan2_interrupted_and_resumed_run_matches_the_uninterrupted_one() {
    let tmp = tempfile::tempdir().unwrap();
    let full = train(&tmp.path().join("full"), 6, never, false);
    assert!(!full.interrupted);
    assert_eq!(full.metrics.len(), 6);
    for r in &full.metrics {
        for k in ["loss_d", "loss_g", "d_x", "d_g_z1", "d_g_z2"] {
            assert!(r[k].as_f64().is_some_and(f64::is_finite), "{k} missing in {r}");
        }
    }
    // Lazy R1 (every 2nd D step): at steps 0, 2, 4 (logged as 1, 3, 5) only.
    let with_r1: Vec<u64> =
        full.metrics.iter().filter(|r| r.get("r1").is_some()).map(|r| r["step"].as_u64().unwrap()).collect();
    assert_eq!(with_r1, [1, 3, 5]);
    // Training moved w_avg off zero and turned the noise on; the saved EMA generator has the
    // live w_avg (copied, as NVIDIA copies buffers into G_ema), not an average of it.
    assert!(full.live_w_avg.abs().sum(Kind::Float).double_value(&[]) > 0.0);
    assert!(full.ema_w_avg.equal(&full.live_w_avg));
    let strength = &full.weights.iter().find(|(n, _)| n == "synthesis.b16.conv1.noise_strength").unwrap().1;
    assert!(strength.double_value(&[]) != 0.0);

    let dir = tmp.path().join("split");
    let part = train(&dir, 6, stop_before_step_3, false);
    assert!(part.interrupted);
    assert_eq!(part.metrics.len(), 3);
    let resumed = train(&dir, 6, never, true);
    assert!(!resumed.interrupted);
    assert_eq!(losses(&resumed.metrics), losses(&full.metrics), "losses after resume differ");
    for ((n, a), (_, b)) in full.weights.iter().zip(&resumed.weights) {
        assert!(a.equal(b), "generator variable {n} differs after resume");
    }
    assert!(resumed.ema_w_avg.equal(&full.ema_w_avg));
    for f in ["samples/step-000003.png", "samples/step-000006.png", "checkpoints/step-000006/ema.safetensors"]
    {
        assert!(dir.join(f).is_file(), "{f}");
    }
}
