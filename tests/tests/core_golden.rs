//! zoo-core against PyTorch and the reference packages: seeding, AdamW, and precision / recall /
//! density / coverage against `prdc`. Fixtures: tools/make_core_fixtures.py.
//!
//! The seeding tests draw from libtorch's global generator, which the threads of a test binary
//! share: each holds the RNG lock while it seeds and draws.
use std::path::PathBuf;

use tch::{nn::VarStore, Device, Kind, Tensor};
use zoo_core::train::{AdamW, AdamWConfig};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fixtures/core").join(name)
}

static RNG: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn floats(v: &serde_json::Value) -> Vec<f32> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect()
}

/// After `seed_all(s)` the first draws equal PyTorch's after `torch.manual_seed(s)`, bit for bit.
#[test]
fn seeding_matches_torch_manual_seed() {
    let _rng = RNG.lock().unwrap();
    let text = std::fs::read_to_string(fixture("seed_draws.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let opts = (Kind::Float, Device::Cpu);
    for case in v["cases"].as_array().unwrap() {
        let seed = case["seed"].as_u64().unwrap();
        zoo_core::seed::seed_all(seed);
        let a = Vec::<f32>::try_from(Tensor::randn([8], opts)).unwrap();
        let b = Vec::<f32>::try_from(Tensor::rand([4], opts)).unwrap();
        let c = Vec::<f32>::try_from(Tensor::randn([2, 3], opts).view([-1])).unwrap();
        assert_eq!(a, floats(&case["randn_8"]), "seed {seed}: randn");
        assert_eq!(b, floats(&case["then_rand_4"]), "seed {seed}: rand after randn");
        assert_eq!(c, floats(&case["then_randn_2x3"]), "seed {seed}: randn (2, 3)");
    }
}

/// The same seed gives the same draws, a new seed new ones, and `rand` draws made from the
/// returned generator leave libtorch's generator where it was.
#[test]
fn seeding_repeats_and_keeps_streams_apart() {
    let _rng = RNG.lock().unwrap();
    use rand::Rng;
    let opts = (Kind::Float, Device::Cpu);
    let mut r1 = zoo_core::seed::seed_all(7);
    let a = Tensor::randn([5], opts);
    let x1: u64 = r1.gen();
    let mut r2 = zoo_core::seed::seed_all(7);
    let _: Vec<u32> = (0..100).map(|_| r2.gen()).collect();
    let b = Tensor::randn([5], opts);
    assert!(a.equal(&b));
    let mut r3 = zoo_core::seed::seed_all(7);
    assert_eq!(x1, r3.gen::<u64>());
    zoo_core::seed::seed_all(8);
    assert!(!a.equal(&Tensor::randn([5], opts)));
}

/// Five AdamW steps, weight decay on the matrix only, equal torch.optim.AdamW's within 1e-6.
#[test]
fn adamw_matches_torch() {
    let t: std::collections::HashMap<String, Tensor> =
        zoo_core::weights::load(&fixture("adamw.safetensors")).unwrap().into_iter().collect();
    let vs = VarStore::new(Device::Cpu);
    let w = vs.root().var_copy("w", &t["w0"]);
    let b = vs.root().var_copy("b", &t["b0"]);
    let cfg = AdamWConfig { lr: 0.05, beta1: 0.9, beta2: 0.95, eps: 1e-8, weight_decay: 0.1 };
    let mut opt = AdamW::new(&vs, cfg);
    for step in 1..=5 {
        opt.zero_grad();
        let loss = (t["x"].matmul(&w) + &b - &t["y"]).square().mean(Kind::Float);
        loss.backward();
        opt.step(0.05).unwrap();
        for (name, var) in [("w", &w), ("b", &b)] {
            let want = &t[&format!("{name}{step}")];
            let diff = (var - want).abs().max().double_value(&[]);
            assert!(diff < 1e-6, "step {step} {name}: max diff {diff}");
        }
    }
}

#[test]
fn prdc_matches_the_authors_package() {
    let t: std::collections::HashMap<String, Tensor> =
        zoo_core::weights::load(&fixture("prdc.safetensors")).unwrap().into_iter().collect();
    let want: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("prdc.json")).unwrap()).unwrap();
    let cases = want.as_object().unwrap();
    assert_eq!(cases.len(), 8);
    for (key, w) in cases {
        let (name, k) = key.rsplit_once(".k").unwrap();
        let k: i64 = k.parse().unwrap();
        let got = zoo_core::eval::prdc(&t[&format!("{name}.real")], &t[&format!("{name}.fake")], k).unwrap();
        for (what, v) in [
            ("precision", got.precision),
            ("recall", got.recall),
            ("density", got.density),
            ("coverage", got.coverage),
        ] {
            let w = w[what].as_f64().unwrap();
            assert!((v - w).abs() < 1e-12, "{key} {what}: {v} vs prdc's {w}");
        }
    }
}
