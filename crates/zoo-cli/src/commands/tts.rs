//! `zoo tts ...`: text-to-speech. So far the text front end (`zoo tts text`), corpus rendering
//! with espeak-ng (`zoo tts corpus`) and Griffin-Lim copy synthesis (`zoo tts griffin-lim`); the
//! acoustic model comes next (issue 22).
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tch::Device;
use zoo_core::audio::{self, Audio, GriffinLim, GriffinLimConfig, MelConfig, MelSpectrogram, WavFormat};
use zoo_flow::tts::corpus::{corpus_sentences, render_corpus, RenderConfig, SentenceSource};
use zoo_flow::tts::espeak::Voice;
use zoo_flow::tts::text::describe_chars;
use zoo_flow::tts::{text_to_ids, Symbols};

use crate::global::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Renders a training corpus with espeak-ng in the LJSpeech layout (metadata.csv + wavs/):
    /// the lines of --sentences, or the project's sentence generator (single digits, numbers,
    /// dates, times, money, short phrases) plus optional lines of a text file.
    Corpus(CorpusArgs),
    /// Shows what the front end makes of a text: the normalised words, the symbols and their ids.
    Text(TextArgs),
    /// Copy synthesis through Griffin-Lim: a WAV's log-mel back to a waveform, no trained model.
    GriffinLim(GriffinLimArgs),
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
    match a.command {
        Command::Corpus(a) => corpus(g, a),
        Command::Text(a) => text(a),
        Command::GriffinLim(a) => griffin_lim(g, a),
    }
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
