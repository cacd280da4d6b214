//! `zoo gan` end to end: sampling the recipe's netG gives PyTorch's images for the same seed,
//! a short training run with resume, interpolation, arch, and one-line errors on bad input.
use std::path::{Path, PathBuf};

use assert_cmd::Command;

fn zoo() -> Command {
    Command::cargo_bin("zoo").unwrap()
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/fixtures/gan")
}

/// Runs zoo and checks it failed with `code` and one line `error: ...` containing `want`.
fn fails(args: &[&str], code: i32, want: &str) {
    let out = zoo().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(code), "{args:?}: stderr {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: want one line, got {err}");
    assert!(lines[0].starts_with("error: ") && err.contains(want), "{args:?}: want {want:?} in {err}");
    for bad in ["panicked", "backtrace", "Exception raised from", "c10::"] {
        assert!(!err.contains(bad), "{args:?}: {err}");
    }
}

fn ok(args: &[&str]) -> String {
    let out = zoo().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {err}");
    String::from_utf8(out.stdout).unwrap()
}

/// The fixture's netG as a model folder.
fn fixture_model(dir: &Path) -> String {
    let m = dir.join("fixture-model");
    std::fs::create_dir_all(&m).unwrap();
    std::fs::copy(fixtures().join("dcgan-config.json"), m.join("config.json")).unwrap();
    std::fs::copy(fixtures().join("dcgan-g.safetensors"), m.join("generator.safetensors")).unwrap();
    m.to_string_lossy().into_owned()
}

fn tensor(p: &Path, name: &str) -> tch::Tensor {
    zoo_core::weights::SafetensorsFile::open(p).unwrap().tensor(name).unwrap()
}

#[test]
fn seeded_sample_is_pytorchs() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_model(tmp.path());
    let exp = fixtures().join("dcgan-expected.safetensors");
    let seed = tensor(&exp, "seed").int64_value(&[0]).to_string();
    let (png, st) = (tmp.path().join("grid.png"), tmp.path().join("out.safetensors"));
    let args = ["--device", "cpu", "--seed", &seed, "gan", "sample", "--model", &model, "--num-samples", "4"];
    let out =
        ok(&[&args[..], &["--out", png.to_str().unwrap(), "--save-tensors", st.to_str().unwrap()]].concat());
    assert!(out.contains("grid.png"));
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (2 * 66 + 2, 2 * 66 + 2));
    let d = (tensor(&st, "images") - tensor(&exp, "seed_g_out")).abs().max().double_value(&[]);
    assert!(d < 1e-5, "zoo gan sample differs from PyTorch by {d}");
}

#[test]
fn train_resume_sample_interpolate_arch() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tmp.path().join("run");
    let r = run.to_str().unwrap();
    let common = ["--device", "cpu", "-q", "gan", "train", "--data", "shapes", "--out", r];
    ok(&[&common[..], &["--preset", "dcgan-32", "--steps", "2", "--batch-size", "4", "--sample-every", "2"]]
        .concat());
    fails(&[&common[..], &["--preset", "dcgan-32"]].concat(), 1, "--resume");
    let out = ok(&[&common[..], &["--resume", "--steps", "3", "--json"]].concat());
    let lines: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.last().unwrap()["steps"], 3);
    // Nothing left to train: refused, not a report of NaN losses.
    fails(&[&common[..], &["--resume", "--steps", "3"]].concat(), 1, "already done 3 steps");
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(metrics.lines().count() >= 2 && metrics.contains("\"d_x\""), "{metrics}");
    assert!(run.join("samples/step-000002.png").is_file() && run.join("loss.png").is_file());

    // A run folder samples from its model/.
    let grid = tmp.path().join("s.png");
    ok(&[
        "--device",
        "cpu",
        "gan",
        "sample",
        "--model",
        r,
        "--num-samples",
        "9",
        "--truncation",
        "1.0",
        "--out",
        grid.to_str().unwrap(),
    ]);
    assert_eq!(image::open(&grid).unwrap().width(), 3 * 34 + 2);
    let strip = tmp.path().join("i.png");
    ok(&[
        "--device",
        "cpu",
        "gan",
        "interpolate",
        "--model",
        r,
        "--seed2",
        "5",
        "--steps",
        "4",
        "--out",
        strip.to_str().unwrap(),
    ]);
    let img = image::open(&strip).unwrap();
    assert_eq!((img.width(), img.height()), (4 * 32, 32));

    let arch = ok(&["gan", "arch", "--model", r, "--json"]);
    let v: serde_json::Value = serde_json::from_str(&arch).unwrap();
    assert_eq!(v["generator"]["params"], 1_068_928);
    assert_eq!(v["config"]["image_size"], 32);
    // A block table: the modules add up to the total, between the input's and output's shapes.
    for net in ["generator", "discriminator"] {
        let parts = v[net]["parts"].as_array().unwrap();
        let sum: i64 = parts.iter().filter_map(|p| p["params"].as_i64()).sum();
        assert_eq!(sum, v[net]["params"].as_i64().unwrap(), "{net}");
    }
    assert_eq!(v["generator"]["parts"].as_array().unwrap().last().unwrap()["shape"], "[1, 3, 32, 32]");
    let text = ok(&["gan", "arch", "--model", r]);
    assert!(text.contains("total parameters") && text.contains("1,068,928"), "{text}");
}

#[test]
fn bad_input_is_one_line() {
    let tmp = tempfile::tempdir().unwrap();
    let model = fixture_model(tmp.path());
    let png = tmp.path().join("x.png");
    let out = png.to_str().unwrap();
    fails(&["gan", "sample", "--model", &model, "--class", "3", "--out", out], 1, "unconditional");
    fails(&["gan", "sample", "--model", &model, "--num-samples", "0", "--out", out], 1, "at least 1");
    fails(&["gan", "sample", "--model", &model, "--truncation=0", "--out", out], 1, "truncation");
    fails(&["gan", "sample", "--model", &model, "--out", "x.gif"], 1, ".png");
    fails(&["gan", "sample", "--model", "/no/such/dir", "--out", out], 1, "config.json");
    fails(&["gan", "sample", "--out", out], 2, "--model");
    let w = fixtures().join("dcgan-g.safetensors");
    fails(
        &["gan", "sample", "--preset", "dcgan-64", "--weights", w.to_str().unwrap(), "--out", out],
        1,
        "wrong shape",
    );
    fails(
        &["gan", "sample", "--preset", "nope", "--weights", w.to_str().unwrap(), "--out", out],
        1,
        "known ones are",
    );
    let r = tmp.path().join("r");
    let r = r.to_str().unwrap();
    fails(&["gan", "train", "--data", "cifar:x", "--preset", "dcgan-32", "--out", r], 1, "unknown kind");
    fails(&["gan", "train", "--data", "wav:x", "--preset", "dcgan-32", "--out", r], 1, "a GAN trains on");
    fails(&["gan", "train", "--data", "mnist:/no/such", "--preset", "dcgan-32", "--out", r], 1, "nc 1");
    fails(
        &["gan", "train", "--data", "shapes", "--preset", "cdcgan-mnist", "--out", r, "--steps", "1"],
        1,
        "10 classes",
    );
    fails(&["gan", "train", "--data", "shapes", "--out", r, "--resume"], 1, "not a run directory");
    fails(&["gan", "train", "--data", "shapes", "--out", r], 1, "--preset is required");
    fails(
        &["gan", "interpolate", "--model", &model, "--seed2", "1", "--steps", "1", "--out", out],
        1,
        "at least 2",
    );
}

/// A conditional model's `--save-tensors` carries the intended labels, which `zoo eval score`
/// reads for class accuracy: the classes in turn, or `--class` for all.
#[test]
fn conditional_sample_saves_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let m = tmp.path().join("cond");
    let cfg: zoo_gan::model::ModelConfig = serde_json::from_value(serde_json::json!({
        "arch": "dcgan", "nz": 8, "ngf": 4, "ndf": 4, "nc": 1, "image_size": 16, "num_classes": 3
    }))
    .unwrap();
    let gen = zoo_gan::model::Generator::new(&cfg, tch::Device::Cpu).unwrap();
    zoo_gan::model::save_model(&m, &gen, None).unwrap();
    let (png, st) = (tmp.path().join("g.png"), tmp.path().join("g.safetensors"));
    let (png, st) = (png.to_str().unwrap(), st.to_str().unwrap());
    let model = m.to_str().unwrap();
    let args = ["gan", "sample", "--model", model, "--num-samples", "5", "--out", png, "--save-tensors", st];
    ok(&args);
    assert_eq!(Vec::<i64>::try_from(tensor(Path::new(st), "labels")).unwrap(), [0, 1, 2, 0, 1]);
    assert_eq!(tensor(Path::new(st), "images").size(), [5, 1, 16, 16]);
    ok(&[&args[..], &["--class", "2"]].concat());
    assert_eq!(Vec::<i64>::try_from(tensor(Path::new(st), "labels")).unwrap(), [2; 5]);
}
