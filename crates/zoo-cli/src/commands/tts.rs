//! `zoo tts ...`: text-to-speech. `zoo tts --text ... --out x.wav` speaks with a Glow-TTS model
//! folder and Griffin-Lim; `zoo tts train` trains one on a corpus; `zoo tts corpus` renders a
//! corpus with espeak-ng; `zoo tts text` shows the front end; `zoo tts griffin-lim` is copy
//! synthesis (issue 22).
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tch::{Device, Kind};
use zoo_core::audio::{self, Audio, GriffinLim, GriffinLimConfig, MelConfig, MelSpectrogram, WavFormat};
use zoo_flow::tts::corpus::{corpus_sentences, render_corpus, RenderConfig, SentenceSource};
use zoo_flow::tts::espeak::Voice;
use zoo_flow::tts::evaluate::{self, EvalOptions};
use zoo_flow::tts::listener::{Intelligibility, Listener};
use zoo_flow::tts::text::describe_chars;
use zoo_flow::tts::{
    text_to_ids, Corpus, SpeakOptions, Symbols, TrainSpec, Training, TtsFile, TtsModel, Vocoding,
    WaveGlowVoice,
};

use crate::global::Global;

/// The model `zoo tts --text` uses without --model: models/tts/<this>/.
pub const DEFAULT_MODEL: &str = "glow-tts-small";
/// The WaveGlow `--vocoder waveglow` uses without --vocoder-model: models/tts/<this>/.
const DEFAULT_WAVEGLOW: &str = "waveglow-small";

/// `zoo tts --text ... --out x.wav` speaks; `zoo tts <command>` does the rest.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    speak: SpeakArgs,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Trains a Glow-TTS model on a corpus in the LJSpeech layout from a preset of models/tts/;
    /// writes the run (checkpoints, metrics, loss.png) and at the end the model folder
    /// <out>/model/, which `zoo tts --model` reads.
    Train(TrainArgs),
    /// Renders a training corpus with espeak-ng in the LJSpeech layout (metadata.csv + wavs/):
    /// the lines of --sentences, or the project's sentence generator (single digits, numbers,
    /// dates, times, money, short phrases) plus optional lines of a text file.
    Corpus(CorpusArgs),
    /// Measures a model: intelligibility of "zero" .. "nine" judged by the spoken-digit listener
    /// (and espeak-ng's own renderings as the reference), mel L1 and mel-cepstral distortion
    /// against the held-out sentences of its corpus, and the real-time factor.
    Eval(EvalArgs),
    /// Shows what the front end makes of a text: the normalised words, the symbols and their ids.
    Text(TextArgs),
    /// Copy synthesis through Griffin-Lim: a WAV's log-mel back to a waveform, no trained model.
    GriffinLim(GriffinLimArgs),
}

/// Speech from text: the model's log-mel, then the vocoder.
#[derive(clap::Args, Debug)]
struct SpeakArgs {
    /// The text to say (English; numbers, dates, money and abbreviations are read out; long
    /// text is spoken sentence by sentence and joined).
    #[arg(long)]
    text: Option<String>,
    /// The WAV file to write (16-bit PCM at the model's sample rate).
    #[arg(long)]
    out: Option<PathBuf>,
    /// A model folder (from `zoo tts train`: <run>/model) or the name of one under models/tts/
    /// (default: the shipped models/tts/glow-tts-small/).
    #[arg(long)]
    model: Option<String>,
    #[command(flatten)]
    voice: VoiceArgs,
    /// Also draw the log-mel spectrogram as a picture (PNG or JPEG by the extension).
    #[arg(long)]
    spectrogram: Option<PathBuf>,
}

/// How a model speaks: Glow-TTS's sampling and the vocoder's iterations.
#[derive(clap::Args, Debug)]
struct VoiceArgs {
    /// Times the prior's standard deviation (Glow-TTS's sigma): 0 is the model's mean voice;
    /// higher is livelier and less clear (the reference's notebook uses 0.667).
    #[arg(long, default_value_t = 0.333)]
    noise_scale: f64,
    /// Times the predicted durations: above 1 speaks slower.
    #[arg(long, default_value_t = 1.0)]
    length_scale: f64,
    /// The vocoder that turns the log-mel into sound: griffin-lim (no training) or waveglow
    /// (a WaveGlow trained on the same front end; see --vocoder-model). `zoo tts eval` takes
    /// several, comma-separated, and reports them side by side.
    #[arg(long, default_value = "griffin-lim", value_delimiter = ',', value_parser = ["griffin-lim", "waveglow"])]
    vocoder: Vec<String>,
    /// The WaveGlow model folder of --vocoder waveglow (from `zoo flow train --preset
    /// waveglow-22k-small`: <run>/model), or the name of one under models/tts/ (default: the
    /// shipped models/tts/waveglow-small/).
    #[arg(long)]
    vocoder_model: Option<String>,
    /// Griffin-Lim iterations.
    #[arg(long, default_value_t = 32)]
    iterations: usize,
    /// WaveGlow's sigma (the standard deviation of its noise; 0 is deterministic).
    #[arg(long, default_value_t = 0.6)]
    vocoder_sigma: f64,
    /// WaveGlow's denoiser strength: subtracts this much of the model's bias spectrum (0: off).
    #[arg(long, default_value_t = 0.0)]
    denoiser: f64,
}

impl VoiceArgs {
    fn options(&self, seed: u64) -> SpeakOptions {
        SpeakOptions {
            noise_scale: self.noise_scale,
            length_scale: self.length_scale,
            seed,
            griffin_lim: GriffinLimConfig { n_iter: self.iterations, ..Default::default() },
            waveglow_sigma: self.vocoder_sigma,
            denoiser: self.denoiser,
            ..Default::default()
        }
    }

    /// The vocoder of --vocoder's name `vocoder`, for `model`.
    fn vocoding(&self, model: &TtsModel, vocoder: &str) -> Result<Vocoding> {
        if !(self.vocoder_sigma.is_finite() && self.vocoder_sigma >= 0.0) {
            bail!("--vocoder-sigma {}: give a number >= 0", self.vocoder_sigma);
        }
        if !(self.denoiser.is_finite() && self.denoiser >= 0.0) {
            bail!("--denoiser {}: give a number >= 0", self.denoiser);
        }
        Ok(match vocoder {
            "waveglow" => {
                let dir = waveglow_dir(self.vocoder_model.as_deref())?;
                let voice = WaveGlowVoice::load(&dir, &model.file.data.mel, model.vs.device())
                    .with_context(|| format!("--vocoder-model {}", dir.display()))?;
                Vocoding::WaveGlow(Box::new(voice))
            }
            _ => Vocoding::GriffinLim,
        })
    }
}

#[derive(clap::Args, Debug)]
struct TrainArgs {
    /// The corpus folder: metadata.csv (ID|text|normalized text) and wavs/ID.wav (e.g. from
    /// `zoo tts corpus`). Needed for a new run; on --resume the run's own. (Also spelled
    /// --data, as in the other families.)
    #[arg(long, alias = "data")]
    corpus: Option<PathBuf>,
    /// Evaluate on the held-out utterances and checkpoint every this many steps (default: the
    /// preset's).
    #[arg(long)]
    eval_every: Option<u64>,
    /// A preset of models/tts/ (glow-tts-small, glow-tts-tiny) or the path of a preset file.
    /// Needed for a new run; on --resume the run's own.
    #[arg(long)]
    preset: Option<String>,
    /// The run folder (config.json, metrics.jsonl, loss.png, checkpoints/, model/).
    #[arg(long)]
    out: PathBuf,
    /// Continue the run in --out from its latest checkpoint, with its own recipe, corpus and
    /// seed (--steps may lengthen it).
    #[arg(long)]
    resume: bool,
    /// Optimiser steps of the whole run (default: the preset's).
    #[arg(long)]
    steps: Option<u64>,
    /// Write the final model's weights in f16 (half the size; training is f32 either way).
    #[arg(long)]
    f16: bool,
    /// Report progress as JSON lines on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct EvalArgs {
    /// A model folder or the name of one under models/tts/ (default: the shipped one).
    #[arg(long)]
    model: Option<String>,
    /// The listener folder (from `zoo eval train-listener`).
    #[arg(long, default_value_os_t = zoo_core::presets::shipped("eval/digit-listener"))]
    listener: PathBuf,
    /// The corpus the model was trained on: its held-out sentences are compared and timed.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Seeds each digit is spoken with (0, 1, ..).
    #[arg(long, default_value_t = 3)]
    seeds: u64,
    /// Held-out sentences to compare, at most.
    #[arg(long, default_value_t = 24)]
    sentences: usize,
    #[command(flatten)]
    voice: VoiceArgs,
    /// libtorch thread counts to time the held-out sentences at, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    rtf_threads: Vec<usize>,
    /// A folder for things to listen to and look at: each digit (seed 0), and the first three
    /// held-out sentences with the spectrograms of the model's and the reference's log-mel.
    #[arg(long)]
    samples: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
struct CorpusArgs {
    /// A text file with one sentence per line (blank lines skipped); without it the sentences
    /// are generated from --seed.
    #[arg(long)]
    sentences: Option<PathBuf>,
    /// Sentences to generate (with --sentences: use only the first N lines).
    #[arg(long)]
    num: Option<usize>,
    /// Also speak this many lines (3 to 20 words) of --lines, drawn with --seed.
    #[arg(long, default_value_t = 200)]
    num_lines: usize,
    /// A text file whose lines are added to the generated sentences (e.g.
    /// ../shared/data/tinyshakespeare/input.txt).
    #[arg(long)]
    lines: Option<PathBuf>,
    /// espeak-ng voices, used in turn, comma-separated (e.g. en-us,en-us+m3,en-us+f2); one voice
    /// gives a single-speaker corpus.
    #[arg(long, default_value = "en-us", value_delimiter = ',')]
    voices: Vec<String>,
    /// Speaking rate in words per minute (espeak-ng's default is 175).
    #[arg(long, default_value_t = 175)]
    words_per_minute: u32,
    /// Sample rate of the corpus's WAVs (espeak-ng speaks at 22,050 Hz; others are resampled).
    #[arg(long, default_value_t = 22050)]
    sample_rate: u32,
    /// The new corpus folder (must not exist, or be empty).
    #[arg(long)]
    out: PathBuf,
}

#[derive(clap::Args, Debug)]
struct TextArgs {
    /// The text.
    text: String,
    /// The symbol set: characters, or phonemes (needs espeak-ng).
    #[arg(long, default_value = "characters")]
    symbols: String,
}

#[derive(clap::Args, Debug)]
struct GriffinLimArgs {
    /// The WAV file whose log-mel is turned back into sound.
    #[arg(long)]
    input: PathBuf,
    /// The WAV file to write (16-bit PCM at the input's rate).
    #[arg(long)]
    out: PathBuf,
    /// Griffin-Lim iterations.
    #[arg(long, default_value_t = 32)]
    iterations: usize,
    /// Fast Griffin-Lim's momentum (0 is the classic algorithm).
    #[arg(long, default_value_t = 0.99)]
    momentum: f64,
}

pub fn run(g: &Global, a: Args) -> Result<()> {
    match (a.command, a.speak) {
        (Some(Command::Train(a)), _) => train(g, a),
        (Some(Command::Corpus(a)), _) => corpus(g, a),
        (Some(Command::Eval(a)), _) => eval(g, a),
        (Some(Command::Text(a)), _) => text(a),
        (Some(Command::GriffinLim(a)), _) => griffin_lim(g, a),
        (None, a) => speak(g, a),
    }
}

/// A model folder given to `flag`: a folder, or the name of one under models/tts/.
fn named_folder(flag: &str, m: &str) -> Result<PathBuf> {
    match crate::global::model_folder("tts", m) {
        Ok(p) if p.is_dir() => Ok(p),
        _ => bail!(
            "{flag} {m}: no such model folder (nor {})",
            zoo_core::presets::models_dir().join("tts").join(m).display()
        ),
    }
}

/// The folder `flag` names, or else the shipped models/tts/<default>/; `missing` is the error
/// (given that path) when nothing is shipped.
fn named_or_shipped(
    flag: &str,
    named: Option<&str>,
    default: &str,
    missing: impl FnOnce(&Path) -> String,
) -> Result<PathBuf> {
    if let Some(m) = named {
        return named_folder(flag, m);
    }
    let p = zoo_core::presets::models_dir().join("tts").join(default);
    if !p.is_dir() {
        bail!("{}", missing(&p));
    }
    Ok(p)
}

/// The model folder of --model; without --model the shipped one.
fn model_dir(model: Option<&str>) -> Result<PathBuf> {
    named_or_shipped("--model", model, DEFAULT_MODEL, |p| {
        format!(
            "no text-to-speech model is shipped yet ({} does not exist): train one with `zoo tts corpus --out data/tts-corpus` and `zoo tts train --corpus data/tts-corpus --preset {DEFAULT_MODEL} --out runs/tts`, then pass --model runs/tts/model",
            p.display()
        )
    })
}

/// The WaveGlow folder of --vocoder-model; without it the shipped one.
fn waveglow_dir(model: Option<&str>) -> Result<PathBuf> {
    named_or_shipped("--vocoder-model", model, DEFAULT_WAVEGLOW, |p| {
        format!(
            "--vocoder waveglow: no WaveGlow is shipped ({} does not exist): train one with `zoo flow train --data wav:data/tts-corpus/wavs --preset waveglow-22k-small --out runs/waveglow`, then pass --vocoder-model runs/waveglow/model",
            p.display()
        )
    })
}

fn speak(g: &Global, a: SpeakArgs) -> Result<()> {
    let (Some(text), Some(out)) = (&a.text, &a.out) else {
        bail!("give --text and --out to speak, or a command: train, corpus, eval, text, griffin-lim (see --help)");
    };
    // Refuse bad file names before any work.
    if !out.extension().is_some_and(|e| e.eq_ignore_ascii_case("wav")) {
        bail!("--out {}: the speech is written as WAV; name a .wav file", out.display());
    }
    if let Some(p) = &a.spectrogram {
        zoo_core::image::image_format(p).with_context(|| format!("--spectrogram {}", p.display()))?;
    }
    if text.trim().is_empty() {
        bail!("--text is empty: give the words to say");
    }
    let vocoder = match &a.voice.vocoder[..] {
        [v] => v.clone(),
        _ => bail!("--vocoder: give one vocoder to speak with (several are for `zoo tts eval`)"),
    };
    let dir = model_dir(a.model.as_deref())?;
    let t0 = Instant::now();
    let mut model = TtsModel::load(&dir, g.device()?)?;
    model.vocoding = a.voice.vocoding(&model, &vocoder)?;
    let speech = model.speak(text, &a.voice.options(g.seed))?;
    if !speech.dropped.is_empty() {
        eprintln!(
            "warning: dropped symbols outside the {} set: {}",
            model.file.data.symbols.name(),
            describe_chars(&speech.dropped)
        );
    }
    audio::write_wav(out, &speech.audio, WavFormat::Pcm16)?;
    if let Some(p) = &a.spectrogram {
        audio::save_spectrogram(&speech.mel, p)?;
    }
    let secs = speech.audio.duration_secs();
    g.note(format!(
        "tts: {:.2} s of speech ({} mel frames{}) with {} and {}, in {:.2} s; wrote {}{}",
        secs,
        speech.mel.size()[1],
        if speech.pieces.len() > 1 { format!(", {} pieces", speech.pieces.len()) } else { String::new() },
        dir.display(),
        vocoder,
        t0.elapsed().as_secs_f64(),
        out.display(),
        a.spectrogram.as_ref().map(|p| format!(" and {}", p.display())).unwrap_or_default()
    ));
    Ok(())
}

/// What `zoo demo` has the shipped model say: (file stem, text).
const DEMO_TEXTS: [(&str, &str); 2] = [
    ("digits", "Zero, one, two, three, four, five, six, seven, eight, nine."),
    ("sentence", "The train leaves at 7:45 pm from platform 3, and a ticket costs $12.50."),
];

/// `zoo demo`'s part: the shipped model says the digits and a sentence (WAVs and their
/// spectrograms).
pub fn demo(g: &Global, dir: &Path, device: Device) -> Result<Vec<PathBuf>> {
    let model_path = model_dir(None)?;
    let model = TtsModel::load(&model_path, device)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut written = Vec::new();
    for (name, text) in DEMO_TEXTS {
        let speech = model.speak(text, &SpeakOptions { seed: g.seed, ..Default::default() })?;
        let (wav, png) = (dir.join(format!("{name}.wav")), dir.join(format!("{name}.png")));
        audio::write_wav(&wav, &speech.audio, WavFormat::Pcm16)?;
        audio::save_spectrogram(&speech.mel, &png)?;
        written.extend([wav, png]);
    }
    let txt = dir.join("texts.txt");
    let lines: Vec<String> = DEMO_TEXTS.iter().map(|(n, t)| format!("{n}.wav: {t}")).collect();
    std::fs::write(&txt, lines.join("\n") + "\n").with_context(|| format!("writing {}", txt.display()))?;
    written.push(txt);
    g.note(format!("tts: {} spoke the digits and a sentence (Griffin-Lim vocoder)", model_path.display()));
    Ok(written)
}

/// A preset by name (models/tts/NAME.json) or path.
fn load_preset(name: &str) -> Result<TtsFile> {
    let path = if name.ends_with(".json") || Path::new(name).is_file() {
        PathBuf::from(name)
    } else {
        zoo_core::presets::find_preset("tts", name)?.path
    };
    Ok(TtsFile::from_json_file(&path)?)
}

fn train(g: &Global, a: TrainArgs) -> Result<()> {
    g.f32_training("zoo tts train")?;
    // 1. the recipe: the preset's for a new run, the run's own on --resume
    let mut spec = match (&a.preset, &a.corpus, a.resume) {
        (_, _, true) => {
            let mut s = TrainSpec::from_run(&a.out)?;
            if let Some(p) = &a.preset {
                s.file = load_preset(p)?;
                s.preset = p.clone();
            }
            if let Some(c) = &a.corpus {
                s.corpus = c.clone();
            }
            s
        }
        (Some(p), Some(c), false) => {
            TrainSpec { preset: p.clone(), file: load_preset(p)?, corpus: c.clone(), seed: g.seed }
        }
        (None, _, false) => bail!("--preset is needed for a new run (see models/tts/)"),
        (_, None, false) => bail!("--corpus is needed for a new run (a folder in the LJSpeech layout)"),
    };
    if let Some(s) = a.steps {
        spec.file.train.steps = s;
    }
    if let Some(n) = a.eval_every {
        if n == 0 {
            bail!("--eval-every must be at least 1");
        }
        spec.file.train.checkpoint_every = n;
    }
    // 2. corpus, features, run folder, model
    let t0 = Instant::now();
    let mut t = Training::prepare(spec, &a.out, a.resume, g.device()?)?;
    let steps = t.spec.file.train.steps;
    g.note(format!(
        "tts train: {} ({:.2}M parameters) on {}: {}; features {} in {:.1} s; {} steps{} of batch {}",
        if t.spec.preset.is_empty() { "resumed run" } else { &t.spec.preset },
        t.model.n_params() as f64 / 1e6,
        t.spec.corpus.display(),
        t.data_summary(),
        if t.cached_features { "from the run's cache" } else { "computed" },
        t0.elapsed().as_secs_f64(),
        steps,
        if t.start > 0 { format!(" from step {}", t.start) } else { String::new() },
        t.spec.file.train.batch_size,
    ));
    // 3. train
    let mut reporter = g.reporter(a.json);
    let t1 = Instant::now();
    let outcome = t.run(reporter.as_mut(), None)?;
    if outcome.interrupted {
        g.note(format!("stopped at step {}; continue with --resume", outcome.steps));
        return Ok(());
    }
    let dir = t.save_model(if a.f16 { Kind::Half } else { Kind::Float })?;
    let num = |k: &str| outcome.last.get(k).and_then(|v| v.as_f64());
    g.note(format!(
        "trained to step {} in {:.0} s{}; wrote {} (speak with `zoo tts --model {} --text ...`)",
        outcome.steps,
        t1.elapsed().as_secs_f64(),
        match (num("mle"), num("duration_loss")) {
            (Some(m), Some(d)) => format!(" (last logged MLE {m:.3} nats, duration loss {d:.3})"),
            _ => String::new(),
        },
        dir.display(),
        dir.display()
    ));
    Ok(())
}

fn eval(g: &Global, a: EvalArgs) -> Result<()> {
    if a.seeds == 0 {
        bail!("--seeds must be at least 1");
    }
    if let Some(t) = a.rtf_threads.iter().find(|&&t| t == 0) {
        bail!("--rtf-threads {t}: thread counts start at 1");
    }
    let device = g.device()?;
    let dir = model_dir(a.model.as_deref())?;
    let mut model = TtsModel::load(&dir, device)?;
    let listener = Listener::load(&a.listener, device)
        .with_context(|| format!("--listener {}", a.listener.display()))?;
    let corpus = a.corpus.as_deref().map(Corpus::open).transpose()?;
    let o = EvalOptions {
        seeds: (0..a.seeds).collect(),
        speak: a.voice.options(0),
        sentences: a.sentences,
        ..Default::default()
    };
    let mut vocoders = a.voice.vocoder.clone();
    vocoders.dedup();
    // Every vocoder loads before any measuring: a bad folder fails at once.
    let voices = vocoders.iter().map(|v| a.voice.vocoding(&model, v)).collect::<Result<Vec<_>>>()?;
    let t0 = Instant::now();
    let mut results = Vec::new();
    for (v, voice) in vocoders.iter().zip(voices) {
        model.vocoding = voice;
        let report = evaluate::evaluate(&model, &listener, corpus.as_ref(), &o)?;
        let mut rtf = Vec::new();
        if !report.sentences.is_empty() {
            for &t in &a.rtf_threads {
                let (speech, compute) = evaluate::real_time_factor(&model, &report.sentences, &o.speak, t)?;
                rtf.push((t, compute / speech.max(1e-9)));
            }
        }
        if let Some(out) = &a.samples {
            let out = if vocoders.len() > 1 { out.join(v) } else { out.clone() };
            evaluate::write_samples(&model, corpus.as_ref(), &o.speak, &out)
                .with_context(|| format!("--samples {}", out.display()))?;
        }
        let source = match &model.vocoding {
            Vocoding::WaveGlow(w) => format!("waveglow ({})", w.dir.display()),
            Vocoding::GriffinLim => "griffin-lim".to_string(),
        };
        results.push((source, report, rtf));
    }
    let Some((_, first, _)) = results.first() else { bail!("--vocoder: name at least one vocoder") };
    if a.json {
        let per_vocoder: Vec<serde_json::Value> = results
            .iter()
            .map(|(source, report, rtf)| {
                serde_json::json!({
                    "vocoder": source,
                    "intelligibility": report.intelligibility.accuracy(),
                    "mistakes": report.intelligibility.mistakes(),
                    "trials": report.intelligibility.trials,
                    "real_time_factor": rtf.iter().map(|(t, r)| serde_json::json!({"threads": t, "rtf": r})).collect::<Vec<_>>(),
                })
            })
            .collect();
        let v = serde_json::json!({
            "model": dir.display().to_string(),
            "listener": a.listener.display().to_string(),
            "vocoders": per_vocoder,
            "reference_intelligibility": first.reference_intelligibility.as_ref().map(|r| r.accuracy()),
            "reference_mistakes": first.reference_intelligibility.as_ref().map(|r| r.mistakes()),
            "distance": first.distance,
            "sentences": first.sentences.len(),
        });
        println!("{v}");
        return Ok(());
    }
    let said = |i: &Intelligibility| {
        let m = i.mistakes();
        format!(
            "{:.1}% of {}{}",
            i.accuracy() * 100.0,
            i.trials.len(),
            if m.is_empty() { String::new() } else { format!(" (heard wrong: {})", m.join(", ")) }
        )
    };
    println!("model {}, judged by the listener {}", dir.display(), a.listener.display());
    match &first.reference_intelligibility {
        Some(r) => println!("  espeak-ng's own renderings (the reference): digits understood: {}", said(r)),
        None => println!("  espeak-ng's own renderings: not scored (espeak-ng is not installed)"),
    }
    if let (Some(d), Some(c)) = (&first.distance, &a.corpus) {
        println!(
            "  {} held-out sentences of {}: mel L1 {:.3}, mel-cepstral distortion {:.2} dB ({} aligned frames; the model's log-mel, before any vocoder)",
            first.sentences.len(),
            c.display(),
            d.mel_l1,
            d.mcd_db,
            d.frames
        );
    }
    for (source, report, rtf) in &results {
        println!("  with {source}:");
        println!("    digits understood: {}", said(&report.intelligibility));
        for (t, r) in rtf {
            println!(
                "    real-time factor, text to waveform, {t} thread{}: {r:.3}",
                if *t == 1 { "" } else { "s" }
            );
        }
    }
    g.note(format!("evaluated in {:.0} s", t0.elapsed().as_secs_f64()));
    Ok(())
}

fn corpus(g: &Global, a: CorpusArgs) -> Result<()> {
    let src = match (&a.sentences, &a.lines) {
        (Some(_), Some(_)) => {
            bail!("--lines adds to generated sentences; with --sentences put them in that file")
        }
        (Some(path), None) => SentenceSource::File { path: path.clone(), limit: a.num },
        (None, lines) => SentenceSource::Generated {
            num: a.num.unwrap_or(1000),
            seed: g.seed,
            lines: lines.clone(),
            extra: a.num_lines,
        },
    };
    let sentences = corpus_sentences(&src)?;
    let cfg = RenderConfig {
        sample_rate: a.sample_rate,
        voices: a.voices.iter().map(|v| Voice::new(v.trim(), a.words_per_minute)).collect(),
        ..Default::default()
    };
    let t0 = Instant::now();
    let bar = (!g.quiet).then(|| {
        let b = indicatif::ProgressBar::new(sentences.len() as u64);
        let style =
            indicatif::ProgressStyle::with_template("{bar:30.cyan/blue} {pos}/{len} sentences ETA {eta}")
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
        b.set_style(style);
        b
    });
    let result = render_corpus(&sentences, &a.out, &cfg, |done, _| {
        if let Some(b) = &bar {
            b.set_position(done as u64);
        }
    });
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    let c = result?;
    let mut secs = 0.0;
    for u in &c.utterances {
        let p = c.wav_path(u);
        let h = audio::read_wav(&p)?;
        secs += h.duration_secs();
    }
    println!(
        "wrote {} utterances ({:.1} minutes of speech at {} Hz, voices {}) to {} in {:.0} s",
        c.utterances.len(),
        secs / 60.0,
        a.sample_rate,
        a.voices.join(", "),
        a.out.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(())
}

fn text(a: TextArgs) -> Result<()> {
    let symbols: Symbols = a.symbols.parse()?;
    let e = text_to_ids(&a.text, symbols)?;
    if !e.dropped.is_empty() {
        eprintln!(
            "warning: dropped symbols outside the {} set: {}",
            symbols.name(),
            describe_chars(&e.dropped)
        );
    }
    println!("{}", e.symbols);
    println!("{}", e.ids.iter().map(|i| i.to_string()).collect::<Vec<_>>().join(" "));
    Ok(())
}

fn griffin_lim(g: &Global, a: GriffinLimArgs) -> Result<()> {
    let clip = audio::read_wav_mono(&a.input)?;
    let sr = clip.sample_rate;
    // WaveGlow's front end at 22.05 kHz; otherwise its geometry with 80 mels up to Nyquist.
    let cfg = if sr == 22050 {
        MelConfig::waveglow_22k()
    } else {
        MelConfig { sample_rate: sr, fmax: None, ..MelConfig::speech_8k() }
    };
    let x = clip.samples.f_reshape([-1])?;
    let mel =
        MelSpectrogram::new(&cfg, Device::Cpu)?.forward(&x).with_context(|| a.input.display().to_string())?;
    let gl_cfg = GriffinLimConfig {
        n_iter: a.iterations,
        momentum: a.momentum,
        seed: Some(g.seed),
        ..Default::default()
    };
    let t0 = Instant::now();
    let y = GriffinLim::new(&cfg, Device::Cpu)?.vocode(&mel, &gl_cfg, Some(x.size()[0]))?;
    let secs = t0.elapsed().as_secs_f64();
    audio::write_wav(&a.out, &Audio::new(y.f_clamp(-1.0, 1.0)?, sr)?, WavFormat::Pcm16)?;
    let back = MelSpectrogram::new(&cfg, Device::Cpu)?
        .forward(&audio::read_wav_mono(&a.out)?.samples.f_reshape([-1])?)?;
    let l1 = (back - &mel).f_abs()?.f_mean(tch::Kind::Double)?.f_double_value(&[])?;
    g.note(format!(
        "griffin-lim: {} iterations, {:.2} s of audio in {secs:.2} s; log-mel L1 against the input {l1:.3}; wrote {}",
        a.iterations,
        clip.duration_secs(),
        a.out.display()
    ));
    Ok(())
}
