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
    // Scores images (and labels) as a generator's samples.
    let score = |t: tch::Tensor, labels: Option<tch::Tensor>| {
        let mut parts = vec![("images".to_string(), t)];
        parts.extend(labels.map(|l| ("labels".to_string(), l)));
        zoo_core::weights::save(&samples, &parts, None).unwrap();
        zoo()
            .args(["--device", "cpu", "eval", "score", "--json", "--data"])
            .arg(format!("mnist:{}", dir.display()))
            .arg("--samples")
            .arg(&samples)
            .arg("--classifier")
            .arg(classifier())
            .output()
            .unwrap()
    };
    let json = |out: std::process::Output| -> serde_json::Value {
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let real = json(score(images.shallow_clone(), Some(labels)));
    assert!(real["class_accuracy"].as_f64().unwrap() > 0.97, "{real}");
    assert!(real["frechet"].as_f64().unwrap() < 3.0, "{real}");
    assert!(real["precision"].as_f64().unwrap() > 0.75, "{real}");
    // (1,000 samples against 10,000 real images: about 1 - e^-0.5 of the real balls catch one)
    assert!(real["density"].as_f64().unwrap() > 0.8 && real["coverage"].as_f64().unwrap() > 0.3, "{real}");

    // The same images under heavy noise score clearly worse.
    let noisy = (images + tch::Tensor::randn([1000, 1, 28, 28], (tch::Kind::Float, tch::Device::Cpu)) * 0.8)
        .clamp(-1.0, 1.0);
    let noisy = json(score(noisy, None));
    assert!(
        noisy["frechet"].as_f64().unwrap() > 5.0 * real["frechet"].as_f64().unwrap(),
        "{noisy} vs {real}"
    );
    assert!(noisy["recall"].as_f64().unwrap() < real["recall"].as_f64().unwrap(), "{noisy} vs {real}");
    assert!(noisy["coverage"].as_f64().unwrap() < real["coverage"].as_f64().unwrap(), "{noisy} vs {real}");

    // 200 blank images: whatever precision makes of them (1.000), coverage and recall see
    // nothing like the real digits.
    let opts = (tch::Kind::Float, tch::Device::Cpu);
    let blank = json(score(tch::Tensor::full([200, 1, 28, 28], -1.0, opts), None));
    assert!(blank["coverage"].as_f64().unwrap() < 0.01, "{blank}");
    assert!(blank["recall"].as_f64().unwrap() < 0.01, "{blank}");
    // Refused, not scored: 0..255 pixels, NaN, labels outside the classes.
    let one_line = |out: std::process::Output, want: &str| {
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.starts_with("error: ") && err.contains(want) && err.lines().count() == 1, "{err}");
    };
    one_line(score(tch::Tensor::full([20, 1, 28, 28], 255.0, opts), None), "0..255 pixels");
    one_line(score(tch::Tensor::full([20, 1, 28, 28], f64::NAN, opts), None), "NaN");
    let labels = tch::Tensor::from_slice(&[12i64]).repeat([20]);
    one_line(score(tch::Tensor::zeros([20, 1, 28, 28], opts), Some(labels)), "0..=9");
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
