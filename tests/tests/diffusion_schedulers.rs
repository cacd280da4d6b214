//! zoo-diffusion's schedulers against diffusers, step by step: every scheduler x beta schedule
//! x prediction type, plus spacing, clipping, thresholding, eta and solver variants, on a fixed
//! fake model (tests/fixtures/diffusion/schedulers.json, made by tools/make_diffusion_fixtures.py).
//!
//! One test function: the stochastic schedulers draw from libtorch's global generator, seeded
//! as the fixture seeded torch before the loop, and parallel tests would interleave the draws.
use serde_json::Value;
use tch::{Kind, Tensor};
use zoo_diffusion::schedulers::{self, Ddim, Scheduler, SchedulerConfig};

fn floats(v: &Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// The fixture's fake model: 0.8 sin(0.7 x + t / 137) + 0.05 x.
fn fake_model(x: &Tensor, t: f64) -> Tensor {
    (x * 0.7 + t / 137.0).sin() * 0.8 + x * 0.05
}

fn max_abs(v: &[f32]) -> f64 {
    v.iter().fold(0.0f64, |m, x| m.max(x.abs() as f64))
}

/// max |a - b| / max(max |b|, `floor`)
fn rel_err(a: &[f32], b: &[f32], floor: f64) -> f64 {
    let scale = max_abs(b).max(floor).max(1e-12);
    a.iter().zip(b).fold(0.0f64, |m, (x, y)| m.max((*x as f64 - *y as f64).abs())) / scale
}

#[test]
fn schedulers_match_diffusers_step_by_step() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/diffusion/schedulers.json");
    let fx: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let shape: Vec<i64> = fx["shape"].as_array().unwrap().iter().map(|v| v.as_i64().unwrap()).collect();
    let noise_seed = fx["noise_seed"].as_u64().unwrap();
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 190, "{} cases", cases.len());
    let mut worst = (0.0f64, String::new());
    // scheduler -> (cases, worst relative error of a step)
    let mut per_scheduler = std::collections::BTreeMap::<String, (usize, f64)>::new();
    for case in cases {
        let name = case["scheduler"].as_str().unwrap();
        let (cfg, _) = SchedulerConfig::from_value(&case["config"]).unwrap();
        let label = format!("{name} {} eta {}", case["config"], case["eta"]);
        let eta = case["eta"].as_f64().unwrap();
        let mut s: Box<dyn Scheduler> = if name == "ddim" {
            Box::new(Ddim::new(&cfg).unwrap().with_eta(eta).unwrap())
        } else {
            schedulers::build(name, &cfg).unwrap()
        };
        let steps = case["steps"].as_u64().unwrap() as usize;
        s.set_timesteps(steps).unwrap();

        // 1. the schedule
        let want_t: Vec<f64> =
            case["timesteps"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
        assert_eq!(s.timesteps().len(), want_t.len(), "{label}: timesteps {:?} vs {want_t:?}", s.timesteps());
        for (a, b) in s.timesteps().iter().zip(&want_t) {
            assert!(
                (a - b).abs() <= 1e-3 * b.abs().max(1.0),
                "{label}: timesteps {:?} vs {want_t:?}",
                s.timesteps()
            );
        }
        let want_sigma = case["init_noise_sigma"].as_f64().unwrap();
        assert!((s.init_noise_sigma() - want_sigma).abs() <= 1e-5 * want_sigma, "{label}: init_noise_sigma");

        // 2. the loop. Each step starts from the reference's sample of the step before (the
        // scheduler's own history carries over), so every step is checked on its own: the
        // first steps of the sigma schedulers subtract numbers of size sigma_max ~ 1e4 to get
        // results of size ~ 10, where float32 rounding alone gives relative errors ~1e-4 of the
        // result, and a free run would carry that into every later step. The error is measured
        // relative to the larger of the step's input and output.
        let mut case_worst = 0.0f64;
        let mut x = Tensor::from_slice(&floats(&case["init"])).view(shape.as_slice());
        zoo_core::seed::seed_all(noise_seed);
        let traj = case["trajectory"].as_array().unwrap();
        for (i, t) in s.timesteps().to_vec().into_iter().enumerate() {
            let inp = s.scale_model_input(&x, t).unwrap();
            let out = fake_model(&inp, t);
            let input_size = max_abs(&Vec::<f32>::try_from(x.flatten(0, -1)).unwrap());
            let y = s.step(&out, t, &x).unwrap().prev_sample;
            let got: Vec<f32> = Vec::try_from(y.flatten(0, -1)).unwrap();
            let want = floats(&traj[i]);
            x = Tensor::from_slice(&want).view(shape.as_slice());
            let e = rel_err(&got, &want, input_size);
            assert!(e < 1e-5, "{label}: step {i} (t = {t}) relative error {e}");
            case_worst = case_worst.max(e);
            if e > worst.0 {
                worst = (e, format!("{label} step {i}"));
            }
        }

        // 3. add_noise at the first and last timesteps
        let n = shape.iter().product::<i64>();
        let clean = Tensor::linspace(-1.0, 1.0, n, (Kind::Float, tch::Device::Cpu)).view(shape.as_slice());
        let noise = Tensor::arange(n, (Kind::Float, tch::Device::Cpu)).cos().view(shape.as_slice());
        let ts = Tensor::from_slice(&[want_t[0], *want_t.last().unwrap()]);
        let noisy = s.add_noise(&clean, &noise, &ts).unwrap();
        let got: Vec<f32> = Vec::try_from(noisy.flatten(0, -1)).unwrap();
        let e = rel_err(&got, &floats(&case["add_noise"]), 0.0);
        assert!(e < 1e-5, "{label}: add_noise relative error {e}");
        let entry = per_scheduler.entry(name.to_string()).or_insert((0, 0.0));
        entry.0 += 1;
        entry.1 = entry.1.max(case_worst);
    }
    for (name, (n, e)) in &per_scheduler {
        eprintln!("{name:<16} {n:>3} cases, worst step relative error {e:.2e}");
    }
    eprintln!("{} cases; worst relative error {:.2e} ({})", cases.len(), worst.0, worst.1);
}
