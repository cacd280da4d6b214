//! `zoo diffusion` end to end: schedulers, sample (against diffusers' pipeline fixture), arch,
//! and one-line errors for bad input.
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use tch::Tensor;

fn zoo() -> Command {
    let mut c = Command::cargo_bin("zoo").unwrap();
    c.args(["--device", "cpu", "--threads", "1"]);
    c
}

fn fixture(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/diffusion")
        .join(p)
        .to_string_lossy()
        .into_owned()
}

/// Runs zoo, checks success, returns stdout.
fn ok(args: &[&str]) -> String {
    let out = zoo().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?}: {err}");
    String::from_utf8(out.stdout).unwrap()
}

/// Runs zoo and checks it failed with `code` and one line `error: ...` containing `want`.
fn fails(args: &[&str], code: i32, want: &str) {
    let out = zoo().args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert_eq!(out.status.code(), Some(code), "{args:?}: stderr {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: want one line, got {err}");
    assert!(lines[0].starts_with("error: "), "{args:?}: {err}");
    assert!(err.contains(want), "{args:?}: want {want:?} in {err}");
    for bad in ["panicked", "backtrace", "Exception raised from", "c10::"] {
        assert!(!err.contains(bad), "{args:?}: {err}");
    }
}

fn tensor(path: &Path, name: &str) -> Tensor {
    let all = zoo_core::weights::load(path).unwrap();
    all.into_iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name} in {path:?}")).1
}

fn s(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

#[test]
fn schedulers_lists_every_one() {
    let out = ok(&["diffusion", "schedulers"]);
    let names: Vec<&str> = out.lines().map(|l| l.split_whitespace().next().unwrap()).collect();
    let want: Vec<&str> = zoo_diffusion::schedulers::SCHEDULERS.iter().map(|(n, _)| *n).collect();
    assert_eq!(names, want);
}

#[test]
fn sample_reproduces_diffusers_ddim_pipeline() {
    // diffusers' DDIMPipeline, 4 steps, batch 2, after torch.manual_seed(42): (B, H, W, C) in [0, 1].
    let dir = tempfile::tempdir().unwrap();
    let grid = dir.path().join("grid.png");
    let t = dir.path().join("s.safetensors");
    let out = ok(&[
        "--seed",
        "42",
        "-q",
        "diffusion",
        "sample",
        "--model",
        &fixture("pipeline-ddim"),
        "--scheduler",
        "ddim",
        "--steps",
        "4",
        "--num-samples",
        "2",
        "--out",
        &s(&grid),
        "--save-intermediates",
        "--save-tensors",
        &s(&t),
    ]);
    let strip = dir.path().join("grid-steps.png");
    assert_eq!(out.lines().collect::<Vec<_>>(), [s(&grid), s(&strip), s(&t)]);
    let want = tensor(&PathBuf::from(fixture("pipeline-ddim/expected.safetensors")), "images");
    let got = tensor(&t, "images");
    let got01 = ((got + 1.0) / 2.0).clamp(0.0, 1.0).permute([0, 2, 3, 1]);
    let d = (&got01 - &want).abs().max().double_value(&[]);
    assert!(d < 1e-4, "max |diff| {d}");
    // The strip: the noise and x_t after each of the 4 steps side by side, one row per sample.
    let img = image::open(&strip).unwrap();
    let (h, w) = (want.size()[1] as u32, want.size()[2] as u32);
    assert_eq!((img.width(), img.height()), (5 * w, 2 * h));

    // Another seed, other images (in batches of one, seeded 43 and 44).
    let t2 = dir.path().join("s2.safetensors");
    ok(&[
        "--seed",
        "43",
        "-q",
        "diffusion",
        "sample",
        "--model",
        &fixture("pipeline-ddim"),
        "--steps",
        "4",
        "--num-samples",
        "2",
        "--batch-size",
        "1",
        "--out",
        &s(&grid),
        "--save-tensors",
        &s(&t2),
    ]);
    let (a, b) = (tensor(&t, "images"), tensor(&t2, "images"));
    assert_eq!(b.size(), a.size());
    assert!((a - b).abs().max().double_value(&[]) > 1e-2);
}

#[test]
fn class_labels_follow_the_classes_in_turn_across_batches() {
    let dir = tempfile::tempdir().unwrap();
    let t = dir.path().join("s.safetensors");
    ok(&[
        "-q",
        "diffusion",
        "sample",
        "--model",
        &fixture("unet-class"),
        "--steps",
        "2",
        "--num-samples",
        "13",
        "--batch-size",
        "5",
        "--out",
        &s(&dir.path().join("g.png")),
        "--save-tensors",
        &s(&t),
    ]);
    let labels = Vec::<i64>::try_from(tensor(&t, "labels")).unwrap();
    assert_eq!(labels, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 1]);
    assert_eq!(tensor(&t, "images").size(), [13, 1, 8, 8]);
    ok(&[
        "-q",
        "diffusion",
        "sample",
        "--model",
        &fixture("unet-class"),
        "--steps",
        "2",
        "--num-samples",
        "3",
        "--class",
        "7",
        "--out",
        &s(&dir.path().join("g.png")),
        "--save-tensors",
        &s(&t),
    ]);
    assert_eq!(Vec::<i64>::try_from(tensor(&t, "labels")).unwrap(), [7, 7, 7]);
}

#[test]
fn arch_counts_the_reference_parameters() {
    let arch: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("cifar10-arch.json")).unwrap()).unwrap();
    let want = arch["parameters"].as_i64().unwrap();
    let v: serde_json::Value =
        serde_json::from_str(&ok(&["diffusion", "arch", "--model", "ddpm-cifar10-32", "--json"])).unwrap();
    assert_eq!(v["params"].as_i64(), Some(want));
    let stages = v["stages"].as_array().unwrap();
    let by_stage: i64 = stages.iter().map(|s| s["params"].as_i64().unwrap()).sum();
    assert_eq!(by_stage, want, "every parameter belongs to one stage");
    let last = stages.last().unwrap();
    assert_eq!(last["stage"], "conv_out");
    assert_eq!(last["shape"], serde_json::json!([1, 3, 32, 32]));
    // The down path halves 32 three times.
    let d3 = stages.iter().find(|s| s["stage"].as_str().unwrap().starts_with("down_blocks.3")).unwrap();
    assert_eq!(d3["shape"], serde_json::json!([1, 256, 4, 4]));
    let text = ok(&["diffusion", "arch", "--model", &fixture("unet-class")]);
    assert!(text.contains("11 classes") && text.contains("class_embedding"), "{text}");
}

#[test]
fn bad_input_is_one_line() {
    let out = std::env::temp_dir().join("zoo-diffusion-never-written.png");
    let o = s(&out);
    let sample = |extra: &[&str], code: i32, want: &str| {
        let mut a = vec!["diffusion", "sample", "--out", &o];
        a.extend_from_slice(extra);
        fails(&a, code, want);
    };
    let class = fixture("unet-class");
    let attn = fixture("unet-attn");
    sample(&["--model", &attn, "--scheduler", "plms"], 1, "known ones are ddpm, ddim, euler");
    sample(&["--model", &class, "--class", "11"], 1, "classes 0..=10");
    sample(&["--model", &class, "--guidance-scale", "3"], 1, "no null class");
    sample(&["--model", &attn, "--guidance-scale", "3"], 1, "guidance needs a class-conditional model");
    sample(&["--model", &attn, "--class", "1"], 1, "unconditional model");
    sample(&["--model", "ddpm-cifar10-32"], 1, "this preset has no trained weights");
    sample(&["--model", "no-such-preset"], 1, "known ones are");
    sample(&["--model", "no/such/folder"], 1, "no such folder");
    sample(&["--model", &attn, "--steps", "0"], 1, "--steps 0");
    sample(&["--model", &attn, "--eta", "1", "--scheduler", "euler"], 1, "only the ddim scheduler");
    sample(&["--model", &attn, "--eta=-1"], 1, "--eta -1");
    sample(&["--model", &attn, "--num-samples", "0"], 1, "--num-samples");
    sample(&["--model", &attn, "--steps", "many"], 2, "many");
    fails(&["diffusion", "sample", "--model", &attn, "--out", "x.gif"], 1, "use a .png");
    assert!(!out.exists());

    // A model folder with a bad config value, and one without weights.
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad");
    std::fs::create_dir_all(&bad).unwrap();
    let cfg = std::fs::read_to_string(Path::new(&attn).join("config.json")).unwrap();
    std::fs::write(bad.join("config.json"), cfg.replace("\"silu\"", "\"relu6\"")).unwrap();
    sample(&["--model", &s(&bad)], 1, "act_fn");
    std::fs::write(bad.join("config.json"), &cfg).unwrap();
    std::fs::write(bad.join("scheduler_config.json"), r#"{"beta_schedule": "quadratic"}"#).unwrap();
    sample(&["--model", &s(&bad)], 1, "'beta_schedule'");
    std::fs::remove_file(bad.join("scheduler_config.json")).unwrap();
    sample(&["--model", &s(&bad)], 1, "no .safetensors weights");
}

#[test]
fn train_writes_a_model_that_samples_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run");
    let r = s(&run);
    let base = ["-q", "diffusion", "train", "--data", "shapes", "--out", &r, "--batch-size", "4", "--json"];
    let out = ok(&[&base[..], &["--preset", "tiny", "--steps", "3", "--sample-every", "3"]].concat());
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last["steps"], 3);
    assert!(last["loss"].as_f64().unwrap().is_finite());
    for f in [
        "model/config.json",
        "model/diffusion_pytorch_model.safetensors",
        "model/scheduler_config.json",
        "samples/step-000003.png",
        "loss.png",
    ] {
        assert!(run.join(f).is_file(), "{f}");
    }
    // The run folder is a --model; its null class allows guidance, its 3 classes are checked.
    let t = dir.path().join("s.safetensors");
    let grid = s(&dir.path().join("g.png"));
    ok(&[
        "-q",
        "diffusion",
        "sample",
        "--model",
        &r,
        "--steps",
        "3",
        "--num-samples",
        "4",
        "--guidance-scale",
        "2",
        "--out",
        &grid,
        "--save-tensors",
        &s(&t),
    ]);
    assert_eq!(Vec::<i64>::try_from(tensor(&t, "labels")).unwrap(), [0, 1, 2, 0]);
    fails(&["diffusion", "sample", "--model", &r, "--class", "3", "--out", &grid], 1, "classes 0..=2");

    // Resume: further, with the run's own settings; another batch size is refused.
    let out = ok(&[&base[..], &["--resume", "--steps", "4"]].concat());
    let last: serde_json::Value = serde_json::from_str(out.lines().last().unwrap()).unwrap();
    assert_eq!(last["steps"], 4);
    let steps: Vec<u64> = std::fs::read_to_string(run.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()?["step"].as_u64())
        .collect();
    assert_eq!(steps.last(), Some(&4));
    // Nothing left to train: refused, the run as it was.
    fails(&[&base[..], &["--resume", "--steps", "4"]].concat(), 1, "already done 4 steps");
    fails(
        &["diffusion", "train", "--data", "shapes", "--out", &r, "--resume", "--batch-size", "8"],
        1,
        "other settings (train.batch_size)",
    );
    fails(
        &["diffusion", "train", "--data", "shapes", "--out", &r, "--preset", "tiny"],
        1,
        "already holds a run",
    );
}

#[test]
fn train_input_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let r = s(&dir.path().join("run"));
    let train = |extra: &[&str], code: i32, want: &str| {
        let mut a = vec!["diffusion", "train", "--out", &r];
        a.extend_from_slice(extra);
        fails(&a, code, want);
    };
    train(&["--data", "shapes"], 1, "--preset is required");
    train(&["--data", "shapes", "--preset", "nope"], 1, "known ones are");
    train(&["--data", "cifar:x", "--preset", "tiny"], 2, "unknown kind 'cifar'");
    train(&["--data", "mnist:/no/such/dir", "--preset", "tiny"], 1, "MNIST is 1x28x28");
    train(&["--data", "shapes", "--preset", "tiny", "--batch-size", "0"], 1, "'batch_size'");
    train(&["--data", "shapes", "--resume"], 1, "not a run directory");
    // A class-conditional preset needs labelled images.
    let imgs = dir.path().join("imgs");
    std::fs::create_dir_all(&imgs).unwrap();
    image::RgbImage::new(16, 16).save(imgs.join("a.png")).unwrap();
    train(&["--data", &format!("images:{}", s(&imgs)), "--preset", "tiny"], 1, "have no labels");
    // A preset with a bad value names it.
    let models = dir.path().join("models/diffusion");
    std::fs::create_dir_all(&models).unwrap();
    let tiny = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/diffusion/tiny.json"),
    )
    .unwrap();
    std::fs::write(models.join("bad.json"), tiny.replace("\"null_class\": 3", "\"null_class\": 2")).unwrap();
    std::fs::write(models.join("typo.json"), tiny.replace("\"hflip\"", "\"hflips\"")).unwrap();
    for (name, want) in [("bad", "'null_class'"), ("typo", "hflips")] {
        let out = zoo()
            .env("ZOO_MODELS", dir.path().join("models"))
            .args(["diffusion", "train", "--data", "shapes", "--out", &r, "--preset", name])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.starts_with("error: ") && err.contains(want) && err.lines().count() == 1, "{err}");
    }
}
