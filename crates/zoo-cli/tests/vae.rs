//! `zoo vae` end to end on the procedural shapes (no dataset needed): train, resume, the
//! pictures, encode/decode, and one-line errors for bad input.
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use serde_json::Value;

/// A small conv VAE on 16x16 shapes, in a presets folder of its own (ZOO_MODELS).
const TINY: &str = r#"{
  "description": "test preset",
  "model": {"model": "conv", "in_channels": 3, "image_size": 16, "channels": [8, 16], "hidden_dim": 32,
            "latent_dim": 4, "likelihood": {"kind": "bernoulli"}},
  "train": {"batch_size": 16, "lr": 0.002, "steps": 20, "eval_every": 10, "iw_samples": 5}
}"#;

fn zoo(models: &Path) -> Command {
    let mut c = Command::cargo_bin("zoo").unwrap();
    c.env("ZOO_MODELS", models).args(["--device", "cpu", "--threads", "1"]);
    c
}

fn ok(models: &Path, args: &[&str]) -> String {
    let out = zoo(models).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?} failed: {err}");
    String::from_utf8(out.stdout).unwrap()
}

/// Runs zoo and checks it failed with `code` and one line `error: ...` containing `want`.
fn fails(models: &Path, args: &[&str], code: i32, want: &str) {
    let out = zoo(models).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(code), "{args:?}: stderr {err}");
    let lines: Vec<&str> = err.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "{args:?}: want one line, got {err}");
    assert!(lines[0].starts_with("error: "), "{args:?}: {err}");
    assert!(err.contains(want), "{args:?}: want {want:?} in {err}");
    for bad in ["panicked", "backtrace", "Exception raised from", "c10::"] {
        assert!(!err.contains(bad), "{args:?}: {err}");
    }
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let models = dir.path().join("models");
    std::fs::create_dir_all(models.join("vae")).unwrap();
    std::fs::write(models.join("vae/tiny.json"), TINY).unwrap();
    (dir, models)
}

fn rgb_png(path: &Path, w: u32, h: u32) -> String {
    let img = image::RgbImage::from_fn(w, h, |x, y| image::Rgb([(x * 16) as u8, (y * 16) as u8, 128]));
    img.save(path).unwrap();
    path.to_string_lossy().into_owned()
}

fn dims(path: &Path) -> (u32, u32) {
    let img = image::open(path).unwrap();
    (img.width(), img.height())
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[test]
fn train_resume_and_pictures() {
    let (dir, models) = setup();
    let run = dir.path().join("run");
    let common = [
        "--data",
        "shapes",
        "--preset",
        "tiny",
        "--out",
        &s(&run),
        "--eval-images",
        "32",
        "--iw-images",
        "8",
    ];
    ok(&models, &[&["-q", "vae", "train"], &common[..]].concat());
    let eval: Value = serde_json::from_str(&std::fs::read_to_string(run.join("eval.json")).unwrap()).unwrap();
    assert_eq!(eval["steps"], 20);
    let (loss, iw) = (eval["test_loss"].as_f64().unwrap(), eval["iw_nll"].as_f64().unwrap());
    // The IW estimate is a tighter bound than the negative ELBO (5 samples, 8 images: noisy).
    assert!(loss.is_finite() && iw.is_finite() && iw < loss + 20.0, "{eval}");
    assert!(run.join("model/config.json").is_file() && run.join("model/model.safetensors").is_file());

    // Resume to 30 steps: one loss record per logged step, steps 10, 20, 30.
    ok(&models, &[&["-q", "vae", "train"], &common[..], &["--steps", "30", "--resume"]].concat());
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    let steps: Vec<u64> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|r| r.get("loss").is_some())
        .filter_map(|r| r["step"].as_u64())
        .collect();
    assert_eq!(steps, vec![10, 20, 30]);
    // Resuming a finished run without --preset keeps its recipe and length: nothing to do.
    ok(&models, &["-q", "vae", "train", "--data", "shapes", "--out", &s(&run), "--resume"]);
    let text = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert_eq!(text.lines().filter(|l| l.contains("\"loss\"")).count(), 3);

    let model = s(&run.join("model"));
    let a = rgb_png(&dir.path().join("a.png"), 16, 16);
    let b = rgb_png(&dir.path().join("b.png"), 16, 16);
    let out = |name: &str| dir.path().join(name);

    let st = s(&out("s.safetensors"));
    let sample = ["vae", "sample", "--model", &model, "--num-samples", "4", "--out", &s(&out("s.png"))];
    ok(&models, &[&sample[..], &["--save-tensors", &st]].concat());
    assert_eq!(dims(&out("s.png")), (2 * 18 + 2, 2 * 18 + 2));
    // The saved images are the grid's, in [-1, 1], as `zoo eval score` reads them.
    let saved = zoo_core::weights::SafetensorsFile::open(Path::new(&st)).unwrap();
    let images = saved.tensor("images").unwrap();
    assert_eq!(images.size(), [4, 3, 16, 16]);
    assert_eq!(saved.tensor("z").unwrap().size()[0], 4);
    let (lo, hi) = (images.min().double_value(&[]), images.max().double_value(&[]));
    assert!((-1.0..=1.0).contains(&lo) && (-1.0..=1.0).contains(&hi) && hi > lo, "{lo} {hi}");

    // Reconstruction: deterministic (posterior mean), input above output.
    for name in ["r1.png", "r2.png"] {
        ok(&models, &["vae", "reconstruct", "--model", &model, "--input", &a, "--out", &s(&out(name))]);
    }
    assert_eq!(std::fs::read(out("r1.png")).unwrap(), std::fs::read(out("r2.png")).unwrap());
    assert_eq!(dims(&out("r1.png")), (20, 2 * 18 + 2));
    ok(
        &models,
        &[
            "vae",
            "reconstruct",
            "--model",
            &model,
            "--input",
            &a,
            "--out",
            &s(&out("r3.png")),
            "--only-output",
        ],
    );
    assert_eq!(dims(&out("r3.png")), (16, 16));

    ok(
        &models,
        &[
            "vae",
            "interpolate",
            "--model",
            &model,
            "--input",
            &a,
            "--input2",
            &b,
            "--steps",
            "5",
            "--out",
            &s(&out("i.png")),
        ],
    );
    assert_eq!(dims(&out("i.png")), (5 * 16, 16));

    // encode then decode gives the reconstruction.
    let lat = s(&out("z.safetensors"));
    ok(&models, &["vae", "encode", "--model", &model, "--input", &a, "--out", &lat]);
    ok(&models, &["vae", "decode", "--model", &model, "--input", &lat, "--out", &s(&out("d.png"))]);
    assert_eq!(std::fs::read(out("d.png")).unwrap(), std::fs::read(out("r3.png")).unwrap());

    ok(
        &models,
        &["vae", "traverse", "--model", &model, "--input", &a, "--steps", "3", "--out", &s(&out("t.png"))],
    );
    assert_eq!(dims(&out("t.png")), (3 * 16, 4 * 16));
    fails(
        &models,
        &["vae", "manifold", "--model", &model, "--out", &s(&out("m.png"))],
        1,
        "2 latents, this one has 4",
    );

    // Bad input: one clear line each.
    let small = rgb_png(&dir.path().join("small.png"), 8, 8);
    fails(
        &models,
        &["vae", "reconstruct", "--model", &model, "--input", &small, "--out", &s(&out("x.png"))],
        1,
        "3x16x16",
    );
    let grey = dir.path().join("grey.png");
    image::GrayImage::new(16, 16).save(&grey).unwrap();
    fails(
        &models,
        &["vae", "encode", "--model", &model, "--input", &s(&grey), "--out", &lat],
        1,
        "got 1x16x16",
    );
    let junk = dir.path().join("junk.png");
    std::fs::write(&junk, b"not a png at all").unwrap();
    fails(
        &models,
        &["vae", "reconstruct", "--model", &model, "--input", &s(&junk), "--out", &s(&out("x.png"))],
        1,
        "junk.png",
    );
    fails(
        &models,
        &["vae", "decode", "--model", &model, "--input", &s(&out("s.png")), "--out", &s(&out("x.png"))],
        1,
        "s.png",
    );
    let other = dir.path().join("other.safetensors");
    std::fs::copy(run.join("model/model.safetensors"), &other).unwrap();
    fails(
        &models,
        &["vae", "decode", "--model", &model, "--input", &s(&other), "--out", &s(&out("x.png"))],
        1,
        "no tensor named 'latents'",
    );
    fails(
        &models,
        &["vae", "sample", "--model", &s(dir.path()), "--out", &s(&out("x.png"))],
        1,
        "config.json",
    );
    // Weights that do not fit the config.
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::copy(run.join("model/config.json"), broken.join("config.json")).unwrap();
    std::fs::write(broken.join("model.safetensors"), b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ").unwrap();
    fails(&models, &["vae", "sample", "--model", &s(&broken), "--out", &s(&out("x.png"))], 1, "missing");
}

#[test]
fn usage_and_setup_errors() {
    let (dir, models) = setup();
    let out = s(&dir.path().join("r"));
    fails(
        &models,
        &["vae", "train", "--data", "shapes", "--preset", "nope", "--out", &out],
        1,
        // the folder's own preset and the built-in ones
        "unknown vae preset 'nope': known ones are beta-vae-shapes, conv-mnist, kl-tiny, mlp-mnist, mlp-mnist-2d, tiny",
    );
    fails(
        &models,
        &["vae", "train", "--data", "cifar:/x", "--preset", "tiny", "--out", &out],
        1,
        "unknown kind 'cifar'",
    );
    fails(
        &models,
        &["vae", "train", "--data", "wav:/x", "--preset", "tiny", "--out", &out],
        1,
        "a VAE trains on mnist:DIR, images:DIR or shapes",
    );
    fails(&models, &["vae", "train", "--data", "shapes", "--out", &out], 1, "--preset is required");
    fails(
        &models,
        &["vae", "train", "--data", "mnist:/nonexistent", "--preset", "tiny", "--out", &out],
        1,
        "1x28x28",
    );
    fails(
        &models,
        &[
            "vae", "train", "--data", "shapes", "--preset", "tiny", "--out", &out, "--steps", "3",
            "--epochs", "1",
        ],
        2,
        "--epochs",
    );
    fails(&models, &["vae", "sample", "--out", "x.png"], 2, "required arguments");
    std::fs::write(models.join("vae/broken.json"), "{\"model\": {\"model\": \"mlp\"}, \"train\": {}}")
        .unwrap();
    fails(
        &models,
        &["vae", "train", "--data", "shapes", "--preset", "broken", "--out", &out],
        1,
        "broken.json",
    );
}

#[test]
fn trains_on_an_image_folder_with_json_output() {
    let (dir, models) = setup();
    let images = dir.path().join("images");
    std::fs::create_dir_all(images.join("sub")).unwrap();
    for i in 0..12 {
        let sub = if i % 2 == 0 { "" } else { "sub" };
        // 24x20 images: centre-cropped and resized to the model's 16x16.
        rgb_png(&images.join(sub).join(format!("{i:02}.png")), 24, 20);
    }
    let run = dir.path().join("run");
    let data = format!("images:{}", images.display());
    let out = ok(
        &models,
        &[
            "vae",
            "train",
            "--data",
            &data,
            "--preset",
            "tiny",
            "--out",
            &s(&run),
            "--steps",
            "2",
            "--json",
            "--iw-samples",
            "0",
        ],
    );
    let records: Vec<Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let last = records.last().unwrap();
    // 12 images: every 10th (by sorted path) is held out, so 11 train and 1 test image.
    assert_eq!(last["test_images"], 1, "{last}");
    assert!(last["test_loss"].as_f64().unwrap().is_finite() && last["iw_nll"].is_null(), "{last}");
    assert!(records.iter().any(|r| r["step"] == 2 && r.get("loss").is_some()));
    // The same run resumed on other data is refused, naming the setting; the same folder
    // spelled with a trailing '/' is the same data.
    let (out, slash) = (s(&run), format!("{data}/"));
    let resume =
        ["vae", "train", "--resume", "--out", &out, "--steps", "3", "--iw-samples", "0", "-q", "--data"];
    fails(&models, &[&resume[..], &["shapes"]].concat(), 1, "other settings (data)");
    ok(&models, &[&resume[..], &[slash.as_str()]].concat());
}

#[test]
fn manifold_of_a_two_latent_model() {
    let (dir, models) = setup();
    let two = TINY.replace("\"latent_dim\": 4", "\"latent_dim\": 2").replace("\"steps\": 20", "\"steps\": 2");
    std::fs::write(models.join("vae/two.json"), two).unwrap();
    let run = dir.path().join("run");
    ok(
        &models,
        &[
            "-q",
            "vae",
            "train",
            "--data",
            "shapes",
            "--preset",
            "two",
            "--out",
            &s(&run),
            "--iw-samples",
            "0",
        ],
    );
    let out = dir.path().join("m.png");
    let model = s(&run.join("model"));
    ok(&models, &["vae", "manifold", "--model", &model, "--grid", "5", "--out", &s(&out)]);
    assert_eq!(dims(&out), (5 * 16, 5 * 16));
    fails(&models, &["vae", "manifold", "--model", &model, "--grid", "1", "--out", &s(&out)], 1, "--grid");
}
