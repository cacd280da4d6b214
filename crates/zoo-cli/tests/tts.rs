//! `zoo tts` end to end: the text front end, corpus rendering with espeak-ng (skipped when it
//! is not installed), Griffin-Lim copy synthesis, training on a tiny corpus and speaking with
//! the result, and one-line errors for bad input.
use std::path::{Path, PathBuf};

mod common;

use common::{fails, zoo};
use zoo_core::audio::{chirp, read_wav, write_wav, Audio, WavFormat};

fn espeak() -> bool {
    std::process::Command::new("espeak-ng").arg("--version").output().is_ok_and(|o| o.status.success())
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn text_shows_normalised_symbols_and_ids() {
    let o = zoo().args(["tts", "text", "Dr. Smith paid $5 on the 3rd."]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "doctor smith paid five dollars on the third.");
    assert_eq!(lines[1].split(' ').count(), lines[0].chars().count());
    // Characters outside the set: a warning naming them, and the rest is used.
    let o = zoo().args(["tts", "text", "café"]).output().unwrap();
    assert!(o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("'é'"));
    assert_eq!(String::from_utf8_lossy(&o.stdout).lines().next(), Some("caf"));
}

#[test]
fn text_errors_are_one_line() {
    fails(&["tts", "text", ""], 1, "empty");
    fails(&["tts", "text", "日本"], 1, "nothing to say");
    fails(&["tts", "text", "--symbols", "letters", "hi"], 1, "characters or phonemes");
    if !espeak() {
        fails(&["tts", "text", "--symbols", "phonemes", "hi"], 1, "espeak-ng");
    }
}

#[test]
fn corpus_renders_the_ljspeech_layout() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("corpus");
    if !espeak() {
        println!("skipped: espeak-ng not installed");
        fails(&["tts", "corpus", "--num", "2", "--out", s(&out)], 1, "espeak-ng");
        assert!(!out.exists());
        return;
    }
    let o = zoo()
        .args(["-q", "tts", "corpus", "--num", "3", "--sample-rate", "16000", "--out", s(&out)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stdout).contains("wrote 3 utterances"));
    let meta = std::fs::read_to_string(out.join("metadata.csv")).unwrap();
    assert_eq!(meta, "ZOO-00001|Zero.|zero.\nZOO-00002|One.|one.\nZOO-00003|Two.|two.\n");
    let a = read_wav(&out.join("wavs/ZOO-00002.wav")).unwrap();
    assert_eq!(a.sample_rate, 16000);
    assert!(a.duration_secs() > 0.2);
    // The folder exists now: refused, one line.
    fails(&["tts", "corpus", "--num", "2", "--out", s(&out)], 1, "already exists");
    // Sentences from a file.
    let file = dir.path().join("s.txt");
    std::fs::write(&file, "Hello there.\n\nIt is 5 pm.\n").unwrap();
    let out2 = dir.path().join("c2");
    let o = zoo().args(["-q", "tts", "corpus", "--sentences", s(&file), "--out", s(&out2)]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let meta = std::fs::read_to_string(out2.join("metadata.csv")).unwrap();
    assert!(meta.ends_with("ZOO-00002|It is 5 pm.|it is five p m.\n"), "{meta}");
}

#[test]
fn corpus_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("c");
    let missing = dir.path().join("missing.txt");
    fails(&["tts", "corpus", "--sentences", s(&missing), "--out", s(&out)], 1, "missing.txt");
    let bad = dir.path().join("bad.txt");
    std::fs::write(&bad, "fine\nnot|fine\n").unwrap();
    fails(&["tts", "corpus", "--sentences", s(&bad), "--out", s(&out)], 1, "line 2");
    fails(&["tts", "corpus", "--sentences", s(&bad), "--lines", s(&bad), "--out", s(&out)], 1, "--lines");
    assert!(!out.exists());
}

#[test]
fn griffin_lim_copy_synthesis_keeps_the_length() {
    let dir = tempfile::tempdir().unwrap();
    let wav = dir.path().join("chirp.wav");
    write_wav(&wav, &Audio::new(chirp(8000, 0.5, 200.0, 3000.0), 8000).unwrap(), WavFormat::Pcm16).unwrap();
    let out = dir.path().join("gl.wav");
    let o = zoo()
        .args(["tts", "griffin-lim", "--input", s(&wav), "--out", s(&out), "--iterations", "8"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(String::from_utf8_lossy(&o.stderr).contains("log-mel L1"));
    let a = read_wav(&out).unwrap();
    assert_eq!((a.sample_rate, a.len()), (8000, 4000));
    assert!(a.samples.abs().max().double_value(&[]) > 0.05);
    fails(
        &["tts", "griffin-lim", "--input", s(&dir.path().join("nope.wav")), "--out", s(&out)],
        1,
        "nope.wav",
    );
}

/// A corpus of six utterances: spoken by espeak-ng, or tones without it.
fn tiny_corpus(dir: &Path) -> PathBuf {
    let out = dir.join("corpus");
    if espeak() {
        let o = zoo().args(["-q", "tts", "corpus", "--num", "6", "--out", s(&out)]).output().unwrap();
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        return out;
    }
    println!("espeak-ng not installed: the corpus is tones");
    std::fs::create_dir_all(out.join("wavs")).unwrap();
    let mut meta = String::new();
    for (i, word) in ["zero", "one", "two", "three", "four", "five"].iter().enumerate() {
        let clip = chirp(22050, 0.6, 150.0 + 50.0 * i as f64, 900.0) * 0.3;
        write_wav(&out.join(format!("wavs/U{i}.wav")), &Audio::new(clip, 22050).unwrap(), WavFormat::Pcm16)
            .unwrap();
        meta.push_str(&format!("U{i}|{word}.\n"));
    }
    std::fs::write(out.join("metadata.csv"), meta).unwrap();
    out
}

#[test]
fn train_resume_and_speak() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = tiny_corpus(dir.path());
    let run = dir.path().join("run");
    // The tiny preset with every second utterance held out, for `zoo tts eval` below.
    let preset = dir.path().join("tiny-held-out.json");
    let tiny =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../models/tts/glow-tts-tiny.json"))
            .unwrap()
            .replace("\"valid_every\": 0", "\"valid_every\": 2");
    assert!(tiny.contains("\"valid_every\": 2"));
    std::fs::write(&preset, tiny).unwrap();
    let train = ["-q", "tts", "train", "--corpus", s(&corpus), "--preset", s(&preset), "--out", s(&run)];
    let o = zoo().args(train).args(["--steps", "4"]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let model = run.join("model");
    assert!(model.join("config.json").is_file() && model.join("model.safetensors").is_file());
    let config = std::fs::read_to_string(model.join("config.json")).unwrap();
    assert!(config.contains("\"symbol_table\"") && config.contains("\"hop_length\": 256"), "{config}");
    // A new run over it is refused; --resume continues it to --steps.
    fails(&train, 1, "--resume");
    let o = zoo()
        .args(["-q", "tts", "train", "--out", s(&run), "--resume", "--steps", "6", "--f16"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let metrics = std::fs::read_to_string(run.join("metrics.jsonl")).unwrap();
    assert!(metrics.lines().last().unwrap().contains("\"step\":6"), "{metrics}");
    fails(&["tts", "train", "--out", s(&run), "--resume", "--steps", "6"], 1, "already done 6 steps");
    // Speech from the model, with the spectrogram; a character outside the set is dropped
    // with a warning naming it.
    let (wav, png) = (dir.path().join("x.wav"), dir.path().join("x.png"));
    let o = zoo()
        .args(["tts", "--model", s(&model), "--text", "Café at 7 pm. See you!", "--out", s(&wav)])
        .args(["--spectrogram", s(&png), "--noise-scale", "0.5", "--seed", "3"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("warning: dropped") && err.contains("'é'"), "{err}");
    let a = read_wav(&wav).unwrap();
    assert_eq!(a.sample_rate, 22050);
    assert!(a.duration_secs() > 0.05, "{}", a.duration_secs());
    assert!(std::fs::metadata(&png).unwrap().len() > 0);
    // The same seed, the same samples.
    let wav2 = dir.path().join("y.wav");
    let o = zoo()
        .args(["-q", "tts", "--model", s(&model), "--text", "Café at 7 pm. See you!", "--out", s(&wav2)])
        .args(["--noise-scale", "0.5", "--seed", "3"])
        .output()
        .unwrap();
    assert!(o.status.success());
    assert_eq!(std::fs::read(&wav).unwrap(), std::fs::read(&wav2).unwrap());
    // Bad input: one line each.
    let m = s(&model);
    fails(&["tts", "--model", m, "--text", "  ", "--out", s(&wav2)], 1, "empty");
    fails(&["tts", "--model", m, "--text", "日本", "--out", s(&wav2)], 1, "nothing to say");
    fails(&["tts", "--model", m, "--text", "hi", "--out", s(&dir.path().join("x.mp3"))], 1, ".wav");
    fails(
        &["tts", "--model", m, "--text", "hi", "--out", s(&wav2), "--length-scale", "0"],
        1,
        "length scale",
    );
    fails(&["tts", "--model", m, "--text", "hi", "--out", s(&wav2), "--vocoder", "nope"], 2, "--vocoder");
    fails(
        &["tts", "--model", s(&corpus), "--text", "hi", "--out", s(&wav2)],
        1,
        "not a text-to-speech model",
    );
    fails(&["tts", "--model", "no-such-model", "--text", "hi", "--out", s(&wav2)], 1, "no such model folder");

    // A WaveGlow on the model's front end, trained two steps on the corpus's audio (ten copies,
    // so every 10th file makes a test split) from a preset in a models folder of our own.
    let models = dir.path().join("models");
    std::fs::create_dir_all(models.join("flow")).unwrap();
    let preset = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../models/flow/waveglow-22k-small.json"
    ))
    .unwrap()
    .replace("\"n_flows\": 8", "\"n_flows\": 2")
    .replace("\"n_channels\": 64", "\"n_channels\": 8")
    .replace("\"segment_length\": 4096", "\"segment_length\": 1024");
    assert!(preset.contains("\"n_flows\": 2") && preset.contains("\"n_channels\": 8"));
    std::fs::write(models.join("flow/wg-tiny.json"), preset).unwrap();
    let clips = dir.path().join("clips");
    std::fs::create_dir(&clips).unwrap();
    let first = std::fs::read_dir(corpus.join("wavs")).unwrap().next().unwrap().unwrap().path();
    for i in 0..10 {
        std::fs::copy(&first, clips.join(format!("c{i}.wav"))).unwrap();
    }
    let wg_run = dir.path().join("wg");
    let o = zoo()
        .env("ZOO_MODELS", &models)
        .args(["-q", "flow", "train", "--data", &format!("wav:{}", s(&clips)), "--preset", "wg-tiny"])
        .args(["--out", s(&wg_run), "--steps", "2", "--eval-clips", "1"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let wg = wg_run.join("model");
    let wg_wav = dir.path().join("wg.wav");
    let o = zoo()
        .args(["-q", "tts", "--model", m, "--text", "one two", "--out", s(&wg_wav), "--vocoder", "waveglow"])
        .args(["--vocoder-model", s(&wg), "--vocoder-sigma", "0.5", "--denoiser", "0.05"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let a = read_wav(&wg_wav).unwrap();
    assert_eq!(a.sample_rate, 22050);
    assert!(a.duration_secs() > 0.05, "{}", a.duration_secs());
    let speak = ["tts", "--model", m, "--text", "hi", "--out", s(&wav2), "--vocoder"];
    let with = |extra: &[&'static str]| -> Vec<String> {
        speak.iter().chain(extra).map(|x| x.to_string()).collect()
    };
    let refused =
        |args: Vec<String>, want: &str| fails(&args.iter().map(String::as_str).collect::<Vec<_>>(), 1, want);
    refused(
        [with(&["waveglow", "--vocoder-model"]), vec![s(&corpus).to_string()]].concat(),
        "not a WaveGlow model folder",
    );
    refused(
        [with(&["griffin-lim,waveglow", "--vocoder-model"]), vec![s(&wg).to_string()]].concat(),
        "one vocoder",
    );
    refused(
        [with(&["waveglow", "--denoiser=-1", "--vocoder-model"]), vec![s(&wg).to_string()]].concat(),
        "--denoiser",
    );
    let o = zoo()
        .env("ZOO_MODELS", &models)
        .args(["tts", "--model", m, "--text", "hi", "--out", s(&wav2), "--vocoder", "waveglow"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("no WaveGlow is shipped") && err.contains("waveglow-22k-small"), "{err}");

    // Evaluation: a listener trained on a tiny stand-in for FSDD (tones, two speakers), then
    // the model's digits judged by it, its held-out sentences compared and timed.
    let fsdd = dir.path().join("fsdd");
    std::fs::create_dir(&fsdd).unwrap();
    for (speaker, f) in [("ann", 1.0), ("bob", 1.1)] {
        for d in 0..10 {
            let clip = chirp(8000, 0.4, (200.0 + 60.0 * d as f64) * f, 900.0) * 0.4;
            let p = fsdd.join(format!("{d}_{speaker}_0.wav"));
            write_wav(&p, &Audio::new(clip, 8000).unwrap(), WavFormat::Pcm16).unwrap();
        }
    }
    let listener = dir.path().join("listener");
    let lrun = dir.path().join("listener-run");
    let o = zoo()
        .args(["eval", "train-listener", "--data", s(&fsdd), "--held-out", "bob", "--steps", "3"])
        .args(["--out", s(&listener), "--run", s(&lrun)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("trained on 10 recordings of ann") && out.contains("held-out bob"), "{out}");
    let samples = dir.path().join("samples");
    let o = zoo()
        .args(["-q", "tts", "eval", "--model", m, "--listener", s(&listener), "--corpus", s(&corpus)])
        .args(["--seeds", "2", "--iterations", "2", "--rtf-threads", "1", "--samples", s(&samples), "--json"])
        .args(["--vocoder", "griffin-lim,waveglow", "--vocoder-model", s(&wg)])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let vocoders = v["vocoders"].as_array().unwrap();
    assert_eq!(vocoders.len(), 2, "{v}");
    assert_eq!(vocoders[0]["vocoder"], "griffin-lim", "{v}");
    assert!(vocoders[1]["vocoder"].as_str().unwrap().starts_with("waveglow ("), "{v}");
    for r in vocoders {
        assert_eq!(r["trials"].as_array().unwrap().len(), 20, "{v}");
        let acc = r["intelligibility"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&acc), "{v}");
        assert!(r["real_time_factor"][0]["rtf"].as_f64().unwrap() > 0.0, "{v}");
    }
    assert_eq!(v["reference_intelligibility"].is_null(), !espeak(), "{v}");
    assert_eq!(v["sentences"], 3, "{v}");
    assert!(v["distance"]["mcd_db"].as_f64().unwrap() > 0.0, "{v}");
    // Each vocoder's samples in a folder of its own.
    let samples = samples.join("griffin-lim");
    assert!(samples.parent().unwrap().join("waveglow/digit-seven.wav").is_file());
    for f in [
        "digit-seven.wav",
        "sentence-0.wav",
        "sentence-0-model.png",
        "sentence-0-reference.png",
        "sentence-2.txt",
    ] {
        assert!(samples.join(f).is_file(), "{f}");
    }
    fails(&["tts", "eval", "--model", m, "--listener", s(&corpus)], 1, "not a listener folder");
    fails(&["tts", "eval", "--model", m, "--listener", s(&listener), "--seeds", "0"], 1, "--seeds");
    fails(
        &["eval", "train-listener", "--data", s(&corpus), "--out", s(&listener)],
        1,
        "no Free Spoken Digit",
    );
    fails(
        &[
            "eval",
            "train-listener",
            "--data",
            s(&fsdd),
            "--held-out",
            "zed",
            "--run",
            s(&dir.path().join("r2")),
        ],
        1,
        "\"zed\"",
    );
    assert!(!dir.path().join("r2").exists());
}

#[test]
fn speaking_without_a_shipped_model_says_how_to_train_one() {
    let dir = tempfile::tempdir().unwrap();
    let o = zoo()
        .env("ZOO_MODELS", dir.path())
        .args(["tts", "--text", "hi", "--out", s(&dir.path().join("x.wav"))])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("error: no text-to-speech model is shipped yet") && err.contains("zoo tts train"),
        "{err}"
    );
}

#[test]
fn train_errors_are_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let c = dir.path().join("c");
    std::fs::create_dir_all(c.join("wavs")).unwrap();
    let clip = Audio::new(chirp(22050, 0.5, 200.0, 800.0), 22050).unwrap();
    write_wav(&c.join("wavs/A.wav"), &clip, WavFormat::Pcm16).unwrap();
    let out = dir.path().join("run");
    let train = ["tts", "train", "--corpus", s(&c), "--preset", "glow-tts-tiny", "--out", s(&out)];
    // A malformed metadata line, and a missing WAV, named with their line numbers.
    std::fs::write(c.join("metadata.csv"), "A|one.\nB no separator\n").unwrap();
    fails(&train, 1, "metadata.csv: line 2");
    std::fs::write(c.join("metadata.csv"), "A|one.\nB|two.\n").unwrap();
    fails(&train, 1, "line 2: the audio of \"B\" is missing");
    assert!(!out.exists());
    fails(&["tts", "train", "--corpus", s(&c), "--preset", "nope", "--out", s(&out)], 1, "glow-tts-small");
    fails(&["tts", "train", "--corpus", s(&c), "--out", s(&out)], 1, "--preset");
    fails(&["tts", "train", "--out", s(&out), "--resume"], 1, "not a run directory");
}
