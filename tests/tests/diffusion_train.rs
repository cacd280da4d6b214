//! zoo-diffusion's training on zoo-core's loop, end to end on the procedural shapes:
//! the loss falls, a resumed run repeats the uninterrupted run's losses and EMA weights
//! exactly, and the model folder it writes samples with `pipeline::sample`.
//!
//! One test function on purpose: training and sampling draw from libtorch's global generator,
//! which tests running in parallel threads of one binary would share.
use std::path::Path;

use serde_json::Value;
use tch::{nn::VarStore, Device, Kind};
use zoo_core::data::DataSpec;
use zoo_core::run::RunDir;
use zoo_core::train::trainer::Silent;
use zoo_diffusion::pipeline::{self, DiffusionModel, ModelSpec, SampleOptions};
use zoo_diffusion::schedulers;
use zoo_diffusion::train::{train, DiffusionTask, Preset, TrainData};

const SEED: u64 = 3;

fn preset(steps: u64, every: u64) -> Preset {
    let mut p = Preset::find("tiny").unwrap();
    p.train.batch_size = 8;
    p.train.steps = steps;
    p.train.warmup_steps = 5;
    p.train.log_every = 1;
    p.train.sample_every = Some(every);
    p.train.checkpoint_every = Some(every);
    p.train.sample_steps = 4;
    p.train.num_samples = 3;
    p
}

/// Trains the tiny preset on shapes in `root` to `steps`, with samples and checkpoints every
/// `every` steps (resuming from the last when asked); returns the task.
fn run(root: &Path, steps: u64, every: u64, resume: Option<u64>) -> DiffusionTask {
    let p = preset(steps, every);
    let cfg = p.unet_config();
    let data = TrainData::open(&DataSpec::Shapes, cfg.in_channels, cfg.sample_hw(), SEED).unwrap();
    zoo_core::seed::seed_all(SEED);
    let vs = VarStore::new(Device::Cpu);
    let mut task = DiffusionTask::new(&vs, p, data, "shapes", SEED).unwrap();
    let run = RunDir::create(root, &task.run_config("tiny"), resume.is_some()).unwrap();
    let (start, out) = train(&run, &vs, &mut task, &mut Silent, None).unwrap();
    assert_eq!(start, resume.unwrap_or(0));
    assert_eq!(out.steps, steps);
    task
}

fn losses(root: &Path) -> Vec<f64> {
    RunDir::open(root)
        .unwrap()
        .metrics()
        .unwrap()
        .iter()
        .filter_map(|r| r.get("loss").and_then(Value::as_f64))
        .collect()
}

#[test]
fn loss_falls_resume_is_exact_and_the_model_samples() {
    let dir = tempfile::tempdir().unwrap();

    // 1. 40 steps: the mean loss of the last 10 is at least a third below that of the first 10
    // (it falls from 1.31 to 0.68 with this seed).
    let long = dir.path().join("long");
    let task = run(&long, 40, 20, None);
    let l = losses(&long);
    assert_eq!(l.len(), 40);
    let first = l[..10].iter().sum::<f64>() / 10.0;
    let last = l[30..].iter().sum::<f64>() / 10.0;
    println!("loss: first 10 steps {first:.4}, last 10 {last:.4}");
    assert!(last < 2.0 / 3.0 * first, "loss fell from {first:.4} only to {last:.4}");
    assert!(long.join("loss.png").is_file());
    assert!(long.join("samples/step-000040.png").is_file());
    assert!(long.join("checkpoints/step-000040/ema.safetensors").is_file());

    // 2. 6 steps straight, and 3 + 3 resumed (with a sample grid, which reseeds libtorch's
    // generator, in between): the same losses and EMA weights, to the bit.
    let full = dir.path().join("full");
    let a = run(&full, 6, 3, None);
    let split = dir.path().join("split");
    run(&split, 3, 3, None);
    let b = run(&split, 6, 3, Some(3));
    assert_eq!(losses(&full), losses(&split), "resumed losses differ from the uninterrupted run's");
    a.sync_ema().unwrap();
    b.sync_ema().unwrap();
    let (va, vb) = (a.ema_model.vs.variables(), b.ema_model.vs.variables());
    assert_eq!(va.len(), vb.len());
    for (name, t) in &va {
        assert!(t.equal(&vb[name]), "EMA weight {name} differs after resume");
    }

    // 3. The model folder: a diffusers UNet folder with the null class, which samples with guidance.
    let model = long.join("model");
    task.save_model(&model).unwrap();
    for f in ["config.json", "diffusion_pytorch_model.safetensors", "scheduler_config.json", "zoo.json"] {
        assert!(model.join(f).is_file(), "{f}");
    }
    let spec = ModelSpec::resolve(long.to_str().unwrap()).unwrap(); // the run folder finds model/
    assert_eq!(spec.meta.null_class, Some(3));
    let m = DiffusionModel::load(spec, Device::Cpu, Kind::Float, true).unwrap();
    assert_eq!(m.num_classes(), Some(3));
    let mut s = schedulers::build("ddim", &m.spec.scheduler).unwrap();
    let o = SampleOptions {
        num_samples: 3,
        steps: 4,
        class: None,
        class_offset: 0,
        guidance_scale: 2.0,
        seed: 1,
        keep_frames: 0,
    };
    let out = pipeline::sample(&m, s.as_mut(), &o, &mut |_, _| {}).unwrap();
    assert_eq!(out.images.size(), [3, 3, 16, 16]);
    assert_eq!(out.classes, Some(vec![0, 1, 2]));
    // The saved weights are the EMA's: the loaded model equals the task's EMA copy.
    task.sync_ema().unwrap();
    let saved = m.vs.variables();
    for (name, t) in task.ema_model.vs.variables() {
        assert!(t.equal(&saved[&name]), "{name}: saved weights are not the EMA weights");
    }
}
