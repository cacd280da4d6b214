//! `zoo flow` end to end: vocoding with the golden fixture's tiny WaveGlow, mel pictures, a
//! short density fit, and one-line errors for bad input.
use std::path::{Path, PathBuf};

use assert_cmd::Command;

mod common;
use common::{fails, zoo};
use zoo_core::audio::{chirp, write_wav, Audio, WavFormat};

const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/flow/waveglow-tiny");

fn chirp_wav(dir: &Path, secs: f64) -> PathBuf {
    let p = dir.join("chirp.wav");
    write_wav(&p, &Audio::new(chirp(8000, secs, 200.0, 3000.0), 8000).unwrap(), WavFormat::Pcm16).unwrap();
    p
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn vocode_copy_synthesis_writes_a_wav_of_the_input_length() {
    let dir = tempfile::tempdir().unwrap();
    let wav = chirp_wav(dir.path(), 0.5);
    let out = dir.path().join("out.wav");
    let o = zoo()
        .args(["-q", "flow", "vocode", "--model", TINY, "--input", s(&wav), "--out", s(&out)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // the fixture's config makes a 6-band mel front end at 8 kHz; the output is cut to the input
    let a = zoo_core::audio::read_wav(&out).unwrap();
    assert_eq!((a.sample_rate, a.len()), (8000, 4000));
    assert!(a.samples.abs().max().double_value(&[]) > 0.0);
}

#[test]
fn eval_reports_copy_synthesis_metrics_and_voicing() {
    // an FSDD-named test clip (take 0): a 125 Hz tone with two harmonics, 0.5 s
    let dir = tempfile::tempdir().unwrap();
    let t = tch::Tensor::arange(4000, (tch::Kind::Double, tch::Device::Cpu)) / 8000.0;
    let tau = 2.0 * std::f64::consts::PI;
    let voice = ((&t * (tau * 125.0)).sin() * 0.3
        + (&t * (tau * 250.0)).sin() * 0.15
        + (&t * (tau * 375.0)).sin() * 0.1)
        .to_kind(tch::Kind::Float);
    write_wav(&dir.path().join("3_tone_0.wav"), &Audio::new(voice, 8000).unwrap(), WavFormat::Pcm16).unwrap();
    // (a training clip beside it: the folder must split into both)
    chirp_wav(dir.path(), 0.5);
    let data = format!("wav:{}", s(dir.path()));
    let o = zoo().args(["flow", "eval", "--model", TINY, "--data", &data, "--json"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let line = String::from_utf8_lossy(&o.stdout).lines().last().unwrap_or_default().to_string();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["clips"], 1, "{v}");
    let real = v["voicing_real"].as_f64().unwrap();
    let fake = v["voicing_vocoded"].as_f64().unwrap();
    assert!(real > 0.9, "{v}");
    assert!((-1.0..=1.0).contains(&fake), "{v}");
    for k in ["log_mel_l1", "mcd_db", "nll_bits_per_sample", "real_time_factor"] {
        assert!(v[k].as_f64().is_some_and(f64::is_finite), "{k}: {v}");
    }
}

#[test]
fn vocode_from_a_mel_file_and_the_denoiser() {
    let dir = tempfile::tempdir().unwrap();
    let mel = dir.path().join("mel.safetensors");
    let t = tch::Tensor::randn([6, 10], (tch::Kind::Float, tch::Device::Cpu));
    zoo_core::weights::save(&mel, &[("mel".to_string(), t)], None).unwrap();
    let out = dir.path().join("out.wav");
    let o = zoo()
        .args([
            "-q",
            "flow",
            "vocode",
            "--model",
            TINY,
            "--input",
            s(&mel),
            "--denoiser",
            "0.05",
            "--out",
            s(&out),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a = zoo_core::audio::read_wav(&out).unwrap();
    assert_eq!((a.sample_rate, a.len()), (8000, 10 * 256));
    assert!(a.samples.abs().max().double_value(&[]) > 0.0);
}

#[test]
fn bad_input_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.wav");
    std::fs::write(&bad, b"not a wav at all").unwrap();
    let out = dir.path().join("o.wav");
    fails(&["flow", "vocode", "--model", TINY, "--input", s(&bad), "--out", s(&out)], 1, "not a WAV file");
    // 80 mel channels for a model of 6
    let mel = dir.path().join("mel80.safetensors");
    let t = tch::Tensor::zeros([80, 4], (tch::Kind::Float, tch::Device::Cpu));
    zoo_core::weights::save(&mel, &[("mel".to_string(), t)], None).unwrap();
    fails(
        &["flow", "vocode", "--model", TINY, "--input", s(&mel), "--out", s(&out)],
        1,
        "takes 6 mel channels",
    );
    // no "mel" tensor among several
    let two = dir.path().join("two.safetensors");
    let z = tch::Tensor::zeros([6, 4], (tch::Kind::Float, tch::Device::Cpu));
    zoo_core::weights::save(&two, &[("a".to_string(), z.copy()), ("b".to_string(), z)], None).unwrap();
    fails(
        &["flow", "vocode", "--model", TINY, "--input", s(&two), "--out", s(&out)],
        1,
        "no tensor named \"mel\"",
    );
    // a model folder with missing tensors
    let broken = dir.path().join("broken");
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::copy(Path::new(TINY).join("config.json"), broken.join("config.json")).unwrap();
    zoo_core::weights::save(
        &broken.join("model.safetensors"),
        &[("upsample.bias".to_string(), tch::Tensor::zeros([6], (tch::Kind::Float, tch::Device::Cpu)))],
        None,
    )
    .unwrap();
    fails(&["flow", "vocode", "--model", s(&broken), "--input", s(&mel), "--out", s(&out)], 1, "missing");
    fails(
        &["flow", "vocode", "--model", s(dir.path()), "--input", s(&mel), "--out", s(&out)],
        1,
        "not a WaveGlow model folder",
    );
    fails(
        &[
            "flow",
            "train",
            "--data",
            "wav:/nonexistent",
            "--preset",
            "nope",
            "--out",
            s(&dir.path().join("r")),
        ],
        1,
        "unknown flow preset 'nope'",
    );
    fails(
        &[
            "flow",
            "train",
            "--data",
            "mnist:/x",
            "--preset",
            "waveglow-8k-small",
            "--out",
            s(&dir.path().join("r")),
        ],
        1,
        "use wav:DIR",
    );
    fails(
        &["flow", "density", "--preset", "spiral", "--out", s(&dir.path().join("d.png"))],
        1,
        "unknown density preset 'spiral'",
    );
    let d = dir.path().join("d0.png");
    fails(
        &["flow", "density", "--preset", "two-moons", "--steps", "0", "--out", s(&d)],
        1,
        "--steps must be at least 1",
    );
    assert!(!d.exists());
    fails(&["flow", "mel", "--input", s(&bad), "--out", s(&dir.path().join("m.png"))], 1, "not a WAV file");
    fails(
        &["flow", "vocode", "--model", TINY, "--input", s(&mel), "--out", s(&out), "--sigma=-1"],
        1,
        "--sigma",
    );
}

#[test]
fn mel_picture_and_density_fit() {
    let dir = tempfile::tempdir().unwrap();
    let wav = chirp_wav(dir.path(), 1.0);
    let png = dir.path().join("mel.png");
    let o = zoo().args(["-q", "flow", "mel", "--input", s(&wav), "--out", s(&png)]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    // 1 + 8000 / 256 = 32 frames by 80 mels, drawn 3x
    let img = image::open(&png).unwrap();
    assert_eq!((img.width(), img.height()), (32 * 3, 80 * 3));
    let d = dir.path().join("d.png");
    let o = zoo()
        .args([
            "-q",
            "flow",
            "density",
            "--preset",
            "rings",
            "--flow",
            "realnvp",
            "--depth",
            "2",
            "--steps",
            "3",
            "--out",
            s(&d),
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let img = image::open(&d).unwrap();
    assert_eq!((img.width(), img.height()), (3 * 200 + 8, 200));
}

/// A presets folder (ZOO_MODELS) with a tiny Glow for 28x28 images, and one for 16x16.
fn glow_models(dir: &Path) -> PathBuf {
    let models = dir.join("models");
    std::fs::create_dir_all(models.join("flow")).unwrap();
    let preset = |size: i64| {
        serde_json::json!({
            "glow_config": {"in_channels": 1, "image_size": size, "n_levels": 2, "depth": 1, "width": 4,
                            "n_bits_x": 8, "lu_decomposed": true},
            "train_config": {"batch_size": 8, "init_batch_size": 16, "learning_rate": 1e-3, "min_lr": 1e-4,
                             "warmup_steps": 2, "steps": 4, "clip_grad": 50.0}
        })
    };
    std::fs::write(models.join("flow/glow-tiny.json"), preset(28).to_string()).unwrap();
    std::fs::write(models.join("flow/glow-16.json"), preset(16).to_string()).unwrap();
    let typo = preset(28).to_string().replace("\"width\"", "\"widht\"");
    std::fs::write(models.join("flow/glow-typo.json"), typo).unwrap();
    models
}

/// An MNIST folder of IDX files: `n_train` and `n_test` 28x28 grey shapes (labels all 0).
fn fake_mnist(dir: &Path, n_train: i64, n_test: i64) -> PathBuf {
    let d = dir.join("mnist");
    std::fs::create_dir_all(&d).unwrap();
    for (prefix, n, seed) in [("train", n_train, 1), ("t10k", n_test, 2)] {
        let (x, _) = zoo_core::data::shapes(n, 28, seed);
        let grey = zoo_core::image::to_channels(&x, 1).unwrap();
        let px = ((grey + 1.0) * 127.5).round().clamp(0.0, 255.0).to_kind(tch::Kind::Uint8);
        let mut bytes = vec![0u8; (n * 28 * 28) as usize];
        px.reshape([-1]).copy_data_u8(&mut bytes, (n * 28 * 28) as usize);
        let mut images = 0x0803u32.to_be_bytes().to_vec();
        for dim in [n as u32, 28, 28] {
            images.extend_from_slice(&dim.to_be_bytes());
        }
        images.extend_from_slice(&bytes);
        let mut labels = 0x0801u32.to_be_bytes().to_vec();
        labels.extend_from_slice(&(n as u32).to_be_bytes());
        labels.extend(std::iter::repeat_n(0u8, n as usize));
        std::fs::write(d.join(format!("{prefix}-images-idx3-ubyte")), images).unwrap();
        std::fs::write(d.join(format!("{prefix}-labels-idx1-ubyte")), labels).unwrap();
    }
    d
}

fn zoo_with(models: &Path) -> Command {
    let mut c = zoo();
    c.env("ZOO_MODELS", models);
    c
}

fn ok(c: &mut Command) -> String {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).to_string()
}

#[test]
fn glow_trains_resumes_evaluates_and_samples_on_mnist_files() {
    let dir = tempfile::tempdir().unwrap();
    let models = glow_models(dir.path());
    let data = format!("mnist:{}", s(&fake_mnist(dir.path(), 48, 12)));
    let out = dir.path().join("run");
    let train =
        ["-q", "flow", "train", "--data", &data, "--out", s(&out), "--eval-every", "2", "--eval-images", "8"];
    ok(zoo_with(&models).args(train).args(["--preset", "glow-tiny"]));
    for f in ["model/config.json", "model/model.safetensors", "loss.png", "samples/step-000002.png"] {
        assert!(out.join(f).is_file(), "{f} missing");
    }
    let eval: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("eval.json")).unwrap()).unwrap();
    let bits = eval["test_bits_per_dim"].as_f64().unwrap();
    assert!(bits.is_finite() && bits > 0.0 && bits < 10.0, "{eval}");
    assert_eq!(eval["test_images"], 12);
    // 784 dims: nats per image = bits/dim * 784 ln 2
    let nats = eval["test_nll_nats"].as_f64().unwrap();
    assert!((nats - bits * 784.0 * std::f64::consts::LN_2).abs() < 1e-6);
    // resumed to 6 steps without --preset: the run's own recipe
    ok(zoo_with(&models).args(train).args(["--resume", "--steps", "6"]));
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let evals: Vec<u64> = metrics
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|r| r.get("test_bits_per_dim").is_some())
        .filter_map(|r| r["step"].as_u64())
        .collect();
    assert_eq!(evals, vec![2, 4, 6]);
    // Nothing left to train: refused in one line.
    let o = zoo_with(&models).args(train).args(["--resume", "--steps", "6"]).output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.trim().lines().count() == 1 && err.contains("already done 6 steps"), "{err}");
    // eval: the first 8 test images, and a sample grid
    let model = out.join("model");
    let ev = dir.path().join("ev");
    let eval = |extra: &[&str]| -> serde_json::Value {
        let base = ["flow", "eval", "--model", s(&model), "--data", &data, "--images", "8", "--json"];
        serde_json::from_str(ok(zoo_with(&models).args(base).args(extra)).trim()).unwrap()
    };
    let r = eval(&["--out", s(&ev)]);
    assert_eq!(r["test_images"], 8);
    assert!(r["test_bits_per_dim"].as_f64().unwrap().is_finite());
    let img = image::open(ev.join("samples.png")).unwrap();
    // 64 samples: 8 x 8 cells of 28 + 2 padding, plus 2
    assert_eq!((img.width(), img.height()), (8 * 30 + 2, 8 * 30 + 2));
    // the same images give the same number
    assert_eq!(r["test_bits_per_dim"], eval(&[])["test_bits_per_dim"]);
    let grid = dir.path().join("grid.png");
    ok(zoo_with(&models).args([
        "-q",
        "flow",
        "sample",
        "--model",
        s(&model),
        "--num-samples",
        "4",
        "--out",
        s(&grid),
    ]));
    let img = image::open(&grid).unwrap();
    assert_eq!((img.width(), img.height()), (2 * 30 + 2, 2 * 30 + 2));
}

#[test]
fn glow_bad_input_is_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let models = glow_models(dir.path());
    let mnist = fake_mnist(dir.path(), 4, 2);
    let data = format!("mnist:{}", s(&mnist));
    let r = dir.path().join("r");
    let fails_with = |args: &[&str], want: &str| {
        let out = zoo_with(&models).args(args).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr).to_string();
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(
            err.lines().count() == 1 && err.starts_with("error: ") && err.contains(want),
            "{args:?}: {err}"
        );
    };
    fails_with(
        &["flow", "train", "--data", "wav:/x", "--preset", "glow-tiny", "--out", s(&r)],
        "use mnist:DIR",
    );
    fails_with(
        &["flow", "train", "--data", &data, "--preset", "glow-16", "--out", s(&r)],
        "MNIST is 1x28x28 (or 1x32x32 padded) but the model takes 1x16x16",
    );
    fails_with(
        &["flow", "train", "--data", &data, "--preset", "glow-typo", "--out", s(&r)],
        "unknown field `widht`",
    );
    let empty = dir.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    fails_with(
        &[
            "flow",
            "train",
            "--data",
            &format!("mnist:{}", s(&empty)),
            "--preset",
            "glow-tiny",
            "--out",
            s(&r),
        ],
        "no train-images-idx3-ubyte",
    );
    let png = dir.path().join("g.png");
    fails_with(&["flow", "sample", "--model", TINY, "--out", s(&png)], "is not a Glow model folder");
    fails_with(&["flow", "eval", "--model", TINY, "--data", &data], "use wav:DIR");
    // a trained model: wrong data kind, bad temperature
    ok(zoo_with(&models).args([
        "-q",
        "flow",
        "train",
        "--data",
        &data,
        "--preset",
        "glow-tiny",
        "--out",
        s(&r),
        "--steps",
        "1",
    ]));
    let model = r.join("model");
    fails_with(&["flow", "eval", "--model", s(&model), "--data", "wav:/x"], "use mnist:DIR");
    fails_with(
        &["flow", "sample", "--model", s(&model), "--temperature=-1", "--out", s(&png)],
        "--temperature",
    );
    fails_with(
        &["flow", "sample", "--model", s(&model), "--num-samples", "0", "--out", s(&png)],
        "--num-samples",
    );
}
