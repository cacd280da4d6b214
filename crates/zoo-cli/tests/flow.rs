//! `zoo flow` end to end: vocoding with the golden fixture's tiny WaveGlow, mel pictures, a
//! short density fit, and one-line errors for bad input.
use std::path::{Path, PathBuf};

use assert_cmd::Command;
use zoo_core::audio::{chirp, write_wav, Audio, WavFormat};

const TINY: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/fixtures/flow/waveglow-tiny");

fn zoo() -> Command {
    let mut c = Command::cargo_bin("zoo").unwrap();
    c.args(["--device", "cpu", "--threads", "1"]);
    c
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
