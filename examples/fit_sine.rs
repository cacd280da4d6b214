//! The smallest complete training run on zoo-core: a `TrainTask` (an MLP fitting sin(x)), the
//! shared `Trainer` with AdamW and a warmup + cosine schedule, a run directory with metrics,
//! checkpoints and a loss curve, and exact resume.
//!
//! ```sh
//! cargo run -p zoo-examples --example fit_sine -- runs/sine          # 300 steps
//! cargo run -p zoo-examples --example fit_sine -- runs/sine 600      # resume to 600 steps
//! ```
use std::path::PathBuf;

use anyhow::Result;
use rand::rngs::StdRng;
use rand::Rng;
use tch::{nn, nn::Module, nn::VarStore, Device, Kind, Tensor};
use zoo_core::run::RunDir;
use zoo_core::train::trainer::ProgressBar;
use zoo_core::train::{AdamW, AdamWConfig, LoopConfig, LrSchedule, StepOutput, TrainTask, Trainer};

struct Sine {
    net: nn::Sequential,
}

impl TrainTask for Sine {
    /// A fresh batch of 64 points in [-pi, pi] for every step, drawn from the step's generator.
    fn loss(&mut self, _step: u64, _micro: u32, rng: &mut StdRng) -> zoo_core::Result<StepOutput> {
        let xs: Vec<f32> =
            (0..64).map(|_| rng.gen_range(-std::f32::consts::PI..std::f32::consts::PI)).collect();
        let x = Tensor::from_slice(&xs).view([64, 1]);
        let loss = self.net.forward(&x).mse_loss(&x.sin(), tch::Reduction::Mean);
        Ok(StepOutput { loss, metrics: vec![] })
    }

    fn eval(&mut self, _step: u64) -> zoo_core::Result<Vec<(String, f64)>> {
        let x =
            Tensor::linspace(-std::f64::consts::PI, std::f64::consts::PI, 200, (Kind::Float, Device::Cpu))
                .view([200, 1]);
        let loss = tch::no_grad(|| self.net.forward(&x).mse_loss(&x.sin(), tch::Reduction::Mean));
        Ok(vec![("val_loss".into(), loss.f_double_value(&[])?)])
    }
}

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let root = PathBuf::from(args.next().unwrap_or_else(|| "runs/sine".into()));
    let steps: u64 = args.next().map(|s| s.parse()).transpose()?.unwrap_or(300);

    let cfg = LoopConfig {
        steps,
        eval_every: Some(100),
        checkpoint_every: Some(100),
        seed: 0,
        ..Default::default()
    };
    let resume = root.join("config.json").exists();
    let run = RunDir::create(&root, &cfg, resume)?;

    zoo_core::seed::seed_all(cfg.seed);
    let vs = VarStore::new(Device::Cpu);
    let p = vs.root();
    let net = nn::seq()
        .add(nn::linear(&p / "fc1", 1, 64, Default::default()))
        .add_fn(|x| x.tanh())
        .add(nn::linear(&p / "fc2", 64, 1, Default::default()));
    let mut task = Sine { net };

    let opt = AdamW::new(&vs, AdamWConfig { lr: 1e-2, weight_decay: 0.0, ..Default::default() });
    let schedule = LrSchedule::WarmupCosine { lr: 1e-2, min_lr: 1e-4, warmup_steps: 20, decay_steps: steps };
    let mut trainer = Trainer::new(&run, &vs, opt, schedule, cfg)?;
    let start = trainer.resume(&mut task)?;
    let outcome = trainer.run(&mut task, start, &mut ProgressBar::new())?;
    let val = task.eval(outcome.steps)?;
    println!(
        "{} steps; val_loss {:.5}; metrics, checkpoints and loss.png in {}",
        outcome.steps,
        val[0].1,
        root.display()
    );
    Ok(())
}
