//! The training loop of zoo-core end to end: the loss falls, a resumed run repeats the
//! uninterrupted run's losses exactly, and a stop request leaves a checkpoint.
//!
//! One test function on purpose: exact resume depends on libtorch's global generator, which
//! tests running in parallel threads of one binary would share.
use std::path::Path;

use rand::rngs::StdRng;
use rand::Rng;
use serde_json::Value;
use tch::{nn, nn::Module, nn::VarStore, Device, Kind, Tensor};
use zoo_core::run::RunDir;
use zoo_core::train::trainer::{Outcome, Silent};
use zoo_core::train::{AdamW, AdamWConfig, LoopConfig, LrSchedule, StepOutput, TrainTask, Trainer};

/// Regression of y = 3x - 1 with a small MLP, random batches and dropout.
struct Toy {
    net: nn::Sequential,
}

impl Toy {
    fn new(vs: &VarStore) -> Self {
        let p = vs.root();
        let net = nn::seq()
            .add(nn::linear(&p / "l1", 1, 16, Default::default()))
            .add_fn(|x| x.relu().dropout(0.1, true))
            .add(nn::linear(&p / "l2", 16, 1, Default::default()));
        Toy { net }
    }
}

impl TrainTask for Toy {
    fn loss(&mut self, _step: u64, _micro: u32, rng: &mut StdRng) -> zoo_core::Result<StepOutput> {
        let xs: Vec<f32> = (0..32).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let x = Tensor::from_slice(&xs).view([32, 1]);
        let y = &x * 3.0 - 1.0;
        let loss = self.net.forward(&x).mse_loss(&y, tch::Reduction::Mean);
        Ok(StepOutput { loss, metrics: vec![] })
    }
    fn eval(&mut self, _step: u64) -> zoo_core::Result<Vec<(String, f64)>> {
        let x = Tensor::linspace(-1.0, 1.0, 11, (Kind::Float, Device::Cpu)).view([11, 1]);
        let y = &x * 3.0 - 1.0;
        let l = tch::no_grad(|| self.net.forward(&x).mse_loss(&y, tch::Reduction::Mean));
        Ok(vec![("val_loss".into(), l.double_value(&[]))])
    }
}

fn never() -> bool {
    false
}

fn always() -> bool {
    true
}

fn losses(run: &RunDir) -> Vec<f64> {
    run.metrics().unwrap().iter().filter_map(|r| r.get("loss").and_then(Value::as_f64)).collect()
}

fn train(root: &Path, steps: u64, resume: bool, stop: fn() -> bool) -> Outcome {
    let cfg = LoopConfig {
        steps,
        grad_accum: 2,
        log_every: 1,
        eval_every: Some(10),
        seed: 5,
        ..Default::default()
    };
    let run = RunDir::create(root, &cfg, resume).unwrap();
    zoo_core::seed::seed_all(1); // initial weights
    let vs = VarStore::new(Device::Cpu);
    let mut task = Toy::new(&vs);
    let opt = AdamW::new(&vs, AdamWConfig { lr: 1e-2, ..Default::default() });
    let sched = LrSchedule::WarmupCosine { lr: 1e-2, min_lr: 1e-3, warmup_steps: 5, decay_steps: 40 };
    let mut tr = Trainer::new(&run, &vs, opt, sched, cfg).unwrap();
    tr.should_stop = stop;
    let start = tr.resume(&mut task).unwrap();
    tr.run(&mut task, start, &mut Silent).unwrap()
}

#[test]
fn loss_falls_resume_is_exact_and_stop_saves() {
    let dir = tempfile::tempdir().unwrap();

    // 1. 40 uninterrupted steps: the loss falls at least fourfold.
    let full = dir.path().join("full");
    let out = train(&full, 40, false, never);
    assert_eq!((out.steps, out.interrupted), (40, false));
    let a = losses(&RunDir::open(&full).unwrap());
    assert_eq!(a.len(), 40);
    let first: f64 = a[..5].iter().sum::<f64>() / 5.0;
    let last: f64 = a[35..].iter().sum::<f64>() / 5.0;
    assert!(last < 0.25 * first, "loss fell from {first} to only {last}");
    assert!(full.join("loss.png").is_file());
    assert!(full.join("checkpoints/step-000040/optimizer.safetensors").is_file());
    let evals = RunDir::open(&full).unwrap().metrics().unwrap();
    assert_eq!(evals.iter().filter(|r| r.get("val_loss").is_some()).count(), 4);

    // 2. The same run stopped after 20 steps, then resumed to 40: the very same losses.
    let split = dir.path().join("split");
    train(&split, 20, false, never);
    train(&split, 40, true, never);
    let b = losses(&RunDir::open(&split).unwrap());
    assert_eq!(a, b, "resumed losses differ from the uninterrupted run's");

    // 3. A stop request before the first step saves a checkpoint at step 0 and says so.
    let stopped = dir.path().join("stopped");
    let out = train(&stopped, 10, false, always);
    assert!(out.interrupted);
    let run = RunDir::open(&stopped).unwrap();
    assert_eq!(run.latest_checkpoint().unwrap().unwrap().1.step, 0);
}
