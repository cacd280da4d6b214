//! `zoo eval`: scoring with the shipped MNIST classifier, and its bad-input errors.
use std::path::PathBuf;

use assert_cmd::Command;

fn zoo() -> Command {
    Command::cargo_bin("zoo").unwrap()
}

fn mnist_dir() -> Option<PathBuf> {
    let d = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../../shared/data/mnist");
    d.is_dir().then_some(d)
}

fn classifier() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../models/eval/mnist-classifier")
}

#[test]
fn real_images_score_like_real_images() {
    let Some(dir) = mnist_dir() else {
        eprintln!("skipped: ../shared/data/mnist not found");
        return;
    };
    // 1,000 training images stand in for a perfect generator; their labels for the classes asked.
    let train = zoo_core::data::Mnist::load(&dir, zoo_core::data::Split::Train).unwrap();
    let (images, labels) = train.batch(&(0..1000).collect::<Vec<_>>()).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let samples = tmp.path().join("samples.safetensors");
    zoo_core::weights::save(
        &samples,
        &[("images".into(), images.shallow_clone()), ("labels".into(), labels)],
        None,
    )
    .unwrap();
    let out = zoo()
        .args(["--device", "cpu", "eval", "score", "--json", "--data"])
        .arg(format!("mnist:{}", dir.display()))
        .arg("--samples")
        .arg(&samples)
        .arg("--classifier")
        .arg(classifier())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let real: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(real["class_accuracy"].as_f64().unwrap() > 0.97, "{real}");
    assert!(real["frechet"].as_f64().unwrap() < 3.0, "{real}");
    assert!(real["precision"].as_f64().unwrap() > 0.75, "{real}");

    // The same images under heavy noise score clearly worse.
    let noisy = (images + tch::Tensor::randn([1000, 1, 28, 28], (tch::Kind::Float, tch::Device::Cpu)) * 0.8)
        .clamp(-1.0, 1.0);
    zoo_core::weights::save(&samples, &[("images".into(), noisy)], None).unwrap();
    let out = zoo()
        .args(["--device", "cpu", "eval", "score", "--json", "--data"])
        .arg(format!("mnist:{}", dir.display()))
        .arg("--samples")
        .arg(&samples)
        .arg("--classifier")
        .arg(classifier())
        .output()
        .unwrap();
    let noisy: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        noisy["frechet"].as_f64().unwrap() > 5.0 * real["frechet"].as_f64().unwrap(),
        "{noisy} vs {real}"
    );
    assert!(noisy["recall"].as_f64().unwrap() < real["recall"].as_f64().unwrap(), "{noisy} vs {real}");
}

#[test]
fn bad_inputs_are_one_line_errors() {
    let out = zoo().args(["eval", "score", "--data", "cifar:x", "--samples", "s"]).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("unknown kind 'cifar'") && err.lines().count() == 1, "{err}");

    let tmp = tempfile::tempdir().unwrap();
    let out = zoo()
        .args(["eval", "score", "--data", "mnist:nowhere", "--samples", "s", "--classifier"])
        .arg(tmp.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.starts_with("error: loading the classifier") && err.lines().count() == 1, "{err}");

    let out = zoo().args(["eval", "train-classifier", "--data", "shapes"]).output().unwrap();
    let err = String::from_utf8(out.stderr).unwrap();
    assert!(err.contains("needs mnist:DIR") && err.lines().count() == 1, "{err}");
}

#[test]
fn scenes_scorer_trains_saves_and_reports() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("scorer");
    let args = ["--device", "cpu", "--threads", "1", "-q", "eval", "train-scenes-scorer", "--steps", "3"];
    let out =
        zoo().args(args).args(["--batch-size", "8", "--num", "16", "--out"]).arg(&dir).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(dir.join("model.safetensors").is_file());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("seen combinations, 16 real scenes: cells read exactly"), "{text}");
    assert!(text.contains("held-out combinations"), "{text}");
    let out = zoo()
        .args(["--device", "cpu", "eval", "scenes-scorer", "--num", "8", "--model"])
        .arg(&dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8(out.stdout).unwrap().lines().count(), 2);
    let out =
        zoo().args(["eval", "train-scenes-scorer", "--steps", "0", "--out"]).arg(&dir).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let out = zoo().args(["eval", "scenes-scorer", "--model"]).arg(tmp.path()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.starts_with("error: ") && err.contains("model.safetensors"), "{err}");
}
