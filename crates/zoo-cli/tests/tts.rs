//! `zoo tts` end to end: the text front end, corpus rendering with espeak-ng (skipped when it
//! is not installed), Griffin-Lim copy synthesis, and one-line errors for bad input.
use std::path::Path;

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
