//! Glow-TTS training end to end on a tiny corpus: the loss falls, and a run stopped half-way
//! and resumed computes the very losses of the uninterrupted run.
//!
//! Its own test binary with one test: exact resume relies on libtorch's global generator
//! (dropout), which parallel tests in one binary would share.
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::Value;
use tch::Device;
use zoo_core::audio::{write_wav, Audio, WavFormat};
use zoo_core::train::trainer::Reporter;
use zoo_flow::tts::corpus::{generate_sentences, render_corpus, write_metadata, RenderConfig, Utterance};
use zoo_flow::tts::{espeak, TrainSpec, Training, TtsFile, TtsModel};

/// The per-step losses a run reports.
#[derive(Default)]
struct Losses(Vec<(u64, f64)>);

impl Reporter for Losses {
    fn step(&mut self, r: &Value) {
        self.0.push((r["step"].as_u64().unwrap(), r["loss"].as_f64().unwrap()));
    }
}

/// Eight utterances spoken by espeak-ng; without it, tones whose pitch and length follow the
/// text (a corpus a model can still learn something from).
fn make_corpus(dir: &Path) -> PathBuf {
    let out = dir.join("corpus");
    let sentences = generate_sentences(8, 0);
    if espeak::available() {
        render_corpus(&sentences, &out, &RenderConfig::default(), |_, _| {}).unwrap();
        return out;
    }
    println!("espeak-ng not installed: the corpus is synthetic tones");
    std::fs::create_dir_all(out.join("wavs")).unwrap();
    let mut utts = Vec::new();
    for (i, s) in sentences.iter().enumerate() {
        let id = format!("T-{i:03}");
        let secs = 0.15 * s.len() as f64 + 0.2;
        let n = (22050.0 * secs) as i64;
        let t = tch::Tensor::arange(n, (tch::Kind::Float, Device::Cpu)) / 22050.0;
        let x = (t * (2.0 * std::f64::consts::PI * (150.0 + 40.0 * i as f64))).sin() * 0.3;
        write_wav(&out.join(format!("wavs/{id}.wav")), &Audio::new(x, 22050).unwrap(), WavFormat::Pcm16)
            .unwrap();
        utts.push(Utterance { id, text: s.clone(), normalized: None });
    }
    write_metadata(&out.join("metadata.csv"), &utts).unwrap();
    out
}

static CALLS: AtomicU64 = AtomicU64::new(0);

/// Asks the loop to stop before step 20.
fn stop_at_20() -> bool {
    CALLS.fetch_add(1, Ordering::SeqCst) >= 20
}

#[test]
fn tts_training_lowers_the_loss_and_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = make_corpus(dir.path());
    let preset = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/tts/glow-tts-tiny.json");
    let mut file = TtsFile::from_json_file(&preset).unwrap();
    file.train.steps = 40;
    let spec = TrainSpec { preset: "glow-tts-tiny".into(), file, corpus, seed: 7 };

    // 1. 40 steps in one go.
    let a = dir.path().join("a");
    let mut t = Training::prepare(spec.clone(), &a, false, Device::Cpu).unwrap();
    assert!(!t.cached_features);
    assert_eq!(t.split.train.len() + t.split.skipped.len(), 8, "{:?}", t.split);
    let mut full = Losses::default();
    let out = t.run(&mut full, Some(|| false)).unwrap();
    assert_eq!((out.steps, out.interrupted), (40, false));
    let mean = |v: &[(u64, f64)]| v.iter().map(|x| x.1).sum::<f64>() / v.len() as f64;
    let (first, mid, last) = (mean(&full.0[..10]), mean(&full.0[10..20]), mean(&full.0[30..]));
    println!("mean loss of steps 1-10 {first:.3}, 11-20 {mid:.3}, 31-40 {last:.3}");
    // Seen: 22.5, 8.1, 4.1 with espeak-ng; 28.2, 11.9, 3.7 with the tones.
    assert!(last < first - 10.0 && last < mid - 2.0, "{:?}", full.0);
    let model_dir = t.save_model(tch::Kind::Float).unwrap();
    let m = TtsModel::load(&model_dir, Device::Cpu).unwrap();
    assert!(m.speak("seven", &Default::default()).unwrap().audio.duration_secs() > 0.0);

    // 2. The same run stopped before step 20, then resumed: the same losses from step 21 on.
    let b = dir.path().join("b");
    let mut t = Training::prepare(spec.clone(), &b, false, Device::Cpu).unwrap();
    let mut part1 = Losses::default();
    let out = t.run(&mut part1, Some(stop_at_20)).unwrap();
    assert_eq!((out.steps, out.interrupted), (20, true));
    assert_eq!(part1.0[..], full.0[..20]);
    // The stopped run lets go of the folder's lock, as its process would on exit.
    drop(t);
    let mut t = Training::prepare(spec.clone(), &b, true, Device::Cpu).unwrap();
    assert!(t.cached_features);
    assert_eq!(t.start, 20);
    let mut part2 = Losses::default();
    t.run(&mut part2, Some(|| false)).unwrap();
    assert_eq!(part2.0[..], full.0[20..], "resumed losses differ");

    // 3. Resuming with another recipe is refused, naming what differs.
    let mut other = spec.clone();
    other.file.train.learning_rate *= 2.0;
    let err = Training::prepare(other, &b, true, Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("another tts"), "{err}");
    // ... and so is a new run over an existing one (once nothing trains it).
    drop(t);
    let err = Training::prepare(spec, &b, false, Device::Cpu).err().unwrap().to_string();
    assert!(err.contains("--resume"), "{err}");
}
