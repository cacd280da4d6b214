//! Speech corpora in the LJSpeech layout, and our own corpus rendered with espeak-ng.
//!
//! The layout (Ito & Johnson 2017, LJ Speech): a folder with `metadata.csv` and `wavs/`; each
//! line of `metadata.csv` is `ID|text|normalized text` (the third field may be absent) and its
//! audio is `wavs/ID.wav`. A user's own corpus in this layout trains unchanged.
//!
//! [`generate_sentences`] writes the project's training sentences (single digits "zero" ..
//! "nine", numbers, dates, times, money, short phrases), deterministically from a seed;
//! [`render_corpus`] speaks them with espeak-ng into a new corpus folder, built under a
//! temporary name and renamed when complete, so an error leaves nothing half-written.
use std::collections::HashSet;
use std::path::{Path, PathBuf};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use zoo_core::audio::{read_wav_mono, resample, write_wav, Audio, WavFormat};
use zoo_core::fsutil::atomic_write_bytes;

use super::espeak::{self, Voice};
use super::text::{normalize, DIGIT_WORDS};
use crate::{Error, Result};

/// The metadata file of the layout.
pub const METADATA: &str = "metadata.csv";
/// The folder of the WAVs.
pub const WAVS: &str = "wavs";

/// One line of `metadata.csv`.
#[derive(Debug, Clone, PartialEq)]
pub struct Utterance {
    pub id: String,
    /// The text as written.
    pub text: String,
    /// The text as spoken (numbers and abbreviations in words), when the corpus gives it.
    pub normalized: Option<String>,
}

impl Utterance {
    /// What a model reads: the corpus's normalised text where it has one, else the text.
    pub fn spoken_text(&self) -> &str {
        self.normalized.as_deref().filter(|s| !s.trim().is_empty()).unwrap_or(&self.text)
    }
}

/// A corpus folder: its utterances, in file order, each with an existing `wavs/ID.wav`.
#[derive(Debug, Clone)]
pub struct Corpus {
    pub root: PathBuf,
    pub utterances: Vec<Utterance>,
}

impl Corpus {
    /// Reads `DIR/metadata.csv` and checks that every WAV is there.
    pub fn open(root: &Path) -> Result<Self> {
        if !root.is_dir() {
            return Err(Error::Data(format!(
                "{}: not a corpus folder (expected {METADATA} and {WAVS}/ in the LJSpeech layout)",
                root.display()
            )));
        }
        let meta = root.join(METADATA);
        let utterances = read_metadata(&meta)?;
        for (line, u) in utterances.iter().enumerate() {
            let wav = root.join(WAVS).join(format!("{}.wav", u.id));
            if !wav.is_file() {
                return Err(Error::Data(format!(
                    "{}: line {}: the audio of {:?} is missing: {}",
                    meta.display(),
                    line_of(&meta, &u.id).unwrap_or(line + 1),
                    u.id,
                    wav.display()
                )));
            }
        }
        Ok(Corpus { root: root.to_path_buf(), utterances })
    }

    pub fn wav_path(&self, u: &Utterance) -> PathBuf {
        self.root.join(WAVS).join(format!("{}.wav", u.id))
    }

    /// The audio of utterance `i`, mono, resampled to `sample_rate`. Shapes: -> (1, n).
    pub fn audio(&self, i: usize, sample_rate: u32) -> Result<Audio> {
        let u = self
            .utterances
            .get(i)
            .ok_or_else(|| Error::Data(format!("{}: no utterance {i}", self.root.display())))?;
        let a = read_wav_mono(&self.wav_path(u))?;
        let samples = resample(&a.samples, a.sample_rate, sample_rate)?;
        Ok(Audio::new(samples, sample_rate)?)
    }
}

/// The line of `id` in a metadata file (1-based), for messages.
fn line_of(meta: &Path, id: &str) -> Option<usize> {
    let text = std::fs::read_to_string(meta).ok()?;
    text.lines().position(|l| l.split('|').next() == Some(id)).map(|i| i + 1)
}

/// Parses `metadata.csv`: `ID|text` or `ID|text|normalized` per line; blank lines are skipped.
/// Errors name the file and the line: a missing field, too many fields, an empty ID or text,
/// an ID that is not a plain file name, a repeated ID.
pub fn read_metadata(path: &Path) -> Result<Vec<Utterance>> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let text = String::from_utf8(bytes)
        .map_err(|e| Error::Data(format!("{}: not UTF-8 text ({e})", path.display())))?;
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim().is_empty() {
            continue;
        }
        let bad = |msg: String| Error::Data(format!("{}: line {}: {msg}", path.display(), n + 1));
        let fields: Vec<&str> = line.split('|').collect();
        let (id, text, normalized) = match fields[..] {
            [id, text] => (id, text, None),
            [id, text, norm] => (id, text, Some(norm.to_string())),
            [_] => return Err(bad("expected ID|text|normalized text, found no '|'".into())),
            _ => return Err(bad(format!("expected ID|text|normalized text, found {} fields", fields.len()))),
        };
        let id = id.trim();
        if id.is_empty() {
            return Err(bad("empty ID".into()));
        }
        if id.contains(['/', '\\']) || id.starts_with('.') {
            return Err(bad(format!("the ID {id:?} is not a plain file name")));
        }
        if text.trim().is_empty() && normalized.as_deref().is_none_or(|s| s.trim().is_empty()) {
            return Err(bad(format!("no text for {id:?}")));
        }
        if !seen.insert(id.to_string()) {
            return Err(bad(format!("the ID {id:?} appears twice")));
        }
        out.push(Utterance { id: id.to_string(), text: text.to_string(), normalized });
    }
    if out.is_empty() {
        return Err(Error::Data(format!("{}: no utterances", path.display())));
    }
    Ok(out)
}

/// Writes `metadata.csv` atomically. Text with `|` or a line break cannot be stored.
pub fn write_metadata(path: &Path, utterances: &[Utterance]) -> Result<()> {
    let mut s = String::new();
    for u in utterances {
        let fields = [Some(&u.id), Some(&u.text), u.normalized.as_ref()];
        if let Some(f) = fields.iter().flatten().find(|f| f.contains(['|', '\n', '\r'])) {
            return Err(Error::Data(format!(
                "{}: cannot store {f:?}: it holds '|' or a line break",
                path.display()
            )));
        }
        s.push_str(&u.id);
        s.push('|');
        s.push_str(&u.text);
        if let Some(n) = &u.normalized {
            s.push('|');
            s.push_str(n);
        }
        s.push('\n');
    }
    Ok(atomic_write_bytes(path, s.as_bytes())?)
}

// ---------------------------------------------------------------------------------------------
// Sentences

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"];
const NAMES: [&str; 12] =
    ["Anna", "Ben", "Clara", "David", "Emma", "Frank", "Grace", "Henry", "Iris", "Jack", "Kate", "Leo"];
const THINGS: [&str; 16] = [
    "apples", "books", "chairs", "birds", "boxes", "cars", "letters", "stones", "coins", "cups", "maps",
    "tickets", "lamps", "shoes", "bottles", "pencils",
];
const PLACES: [&str; 10] = [
    "the station",
    "the market",
    "the library",
    "the old bridge",
    "the park",
    "the harbour",
    "the school",
    "the museum",
    "the garden",
    "the hotel",
];
const VERBS: [&str; 10] =
    ["found", "bought", "counted", "painted", "carried", "sold", "lost", "sorted", "moved", "saw"];
const PHRASES: [&str; 20] = [
    "Good morning.",
    "Thank you very much.",
    "Please close the door.",
    "Where is the station?",
    "The weather is fine today.",
    "I would like a cup of tea.",
    "See you tomorrow!",
    "How are you?",
    "The quick brown fox jumps over the lazy dog.",
    "It is raining again.",
    "Open the window, please.",
    "We are almost there.",
    "That sounds like a good idea.",
    "Turn left at the next corner.",
    "The children are playing outside.",
    "She reads a book every week.",
    "Do you speak English?",
    "The shop closes early on Sundays.",
    "Let me think about it.",
    "Nobody knows the answer.",
];

/// How many times each single digit ("zero" .. "nine") is said on its own by
/// [`generate_sentences`], when `n` allows.
pub const DIGIT_REPEATS: usize = 8;

/// `n` sentences from `seed`: first each single digit "zero" .. "nine" said alone
/// [`DIGIT_REPEATS`] times (as "Seven." "Seven?" "seven" and as "7."), then a mix of digit
/// strings, counts, years and dates, times, money, percentages and short phrases. The same
/// (n, seed) gives the same sentences; they are shuffled together except for the digits, which
/// come first so small corpora still hold every digit.
pub fn generate_sentences(n: usize, seed: u64) -> Vec<String> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut out = Vec::with_capacity(n);
    let forms = |d: usize, k: usize| -> String {
        let w = DIGIT_WORDS[d];
        let cap = format!("{}{}", w[..1].to_uppercase(), &w[1..]);
        match k % 4 {
            0 => format!("{cap}."),
            1 => w.to_string(),
            2 => format!("{cap}!"),
            _ => format!("{d}."),
        }
    };
    'digits: for k in 0..DIGIT_REPEATS {
        for d in 0..10 {
            if out.len() == n {
                break 'digits;
            }
            out.push(forms(d, k));
        }
    }
    let mut rest = Vec::with_capacity(n - out.len());
    while out.len() + rest.len() < n {
        rest.push(mixed_sentence(&mut rng));
    }
    rest.shuffle(&mut rng);
    out.extend(rest);
    out
}

fn pick<'a>(rng: &mut StdRng, xs: &[&'a str]) -> &'a str {
    xs[rng.gen_range(0..xs.len())]
}

/// One sentence of a random kind.
fn mixed_sentence(rng: &mut StdRng) -> String {
    match rng.gen_range(0..10) {
        0 => {
            let k = rng.gen_range(3..=6);
            let ds: Vec<String> = (0..k).map(|_| rng.gen_range(0..10).to_string()).collect();
            format!("The code is {}.", ds.join(" "))
        }
        1 => {
            let ds: Vec<&str> =
                (0..rng.gen_range(2..=4)).map(|_| DIGIT_WORDS[rng.gen_range(0..10)]).collect();
            format!("{}, {}.", pick(rng, &NAMES), ds.join(", "))
        }
        2 => format!(
            "{} {} {} {}.",
            pick(rng, &NAMES),
            pick(rng, &VERBS),
            rng.gen_range(2..100),
            pick(rng, &THINGS)
        ),
        3 => format!("There were {} people at {}.", rng.gen_range(100..20_000), pick(rng, &PLACES)),
        4 => format!(
            "On {} {}, {}, we met at {}.",
            pick(rng, &MONTHS),
            ordinal_suffix(rng.gen_range(1..=28)),
            rng.gen_range(1900..2030),
            pick(rng, &PLACES)
        ),
        5 => {
            let (h, m) =
                (rng.gen_range(1..=12), [0, 5, 15, 30, 45, rng.gen_range(0..60)][rng.gen_range(0..6)]);
            let ampm = if rng.gen_bool(0.5) { " am" } else { " pm" };
            format!("The train leaves at {h}:{m:02}{ampm} on {}.", pick(rng, &DAYS))
        }
        6 => {
            let dollars = rng.gen_range(1..500);
            if rng.gen_bool(0.5) {
                format!("It costs ${dollars}.")
            } else {
                format!("The ticket was ${dollars}.{:02}.", rng.gen_range(1..100))
            }
        }
        7 => format!("About {}% of the {} were new.", rng.gen_range(1..100), pick(rng, &THINGS)),
        8 => format!("{} is {} years old.", pick(rng, &NAMES), rng.gen_range(2..99)),
        _ => pick(rng, &PHRASES).to_string(),
    }
}

fn ordinal_suffix(d: u32) -> String {
    let s = match (d % 10, d % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{d}{s}")
}

/// Lines of a text file usable as sentences: trimmed, between `min_words` and `max_words`
/// words, without `|`; in file order.
pub fn sentences_from_file(path: &Path, min_words: usize, max_words: usize) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let out: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.contains('|') && !l.ends_with(':'))
        .filter(|l| (min_words..=max_words).contains(&l.split_whitespace().count()))
        .map(str::to_string)
        .collect();
    if out.is_empty() {
        return Err(Error::Data(format!(
            "{}: no line of {min_words} to {max_words} words to use as a sentence",
            path.display()
        )));
    }
    Ok(out)
}

/// Every non-blank line of a file, trimmed, as one sentence (`zoo tts corpus --sentences`).
/// A line with `|` (the metadata separator) is an error naming its line.
pub fn read_sentences(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.contains('|') {
            return Err(Error::Data(format!(
                "{}: line {}: a sentence cannot hold '|' (the separator of {METADATA})",
                path.display(),
                n + 1
            )));
        }
        if !line.is_empty() {
            out.push(line.to_string());
        }
    }
    if out.is_empty() {
        return Err(Error::Data(format!("{}: no sentences (every line is blank)", path.display())));
    }
    Ok(out)
}

/// Where a corpus's sentences come from.
#[derive(Debug, Clone, PartialEq)]
pub enum SentenceSource {
    /// The lines of a file, in order; the first `limit` when given.
    File { path: PathBuf, limit: Option<usize> },
    /// `num` sentences of [`generate_sentences`] from `seed`, plus `extra` lines (3 to 20 words)
    /// of `lines` drawn with the same seed, e.g. `../shared/data/tinyshakespeare/input.txt`.
    Generated { num: usize, seed: u64, lines: Option<PathBuf>, extra: usize },
}

/// The sentences of a [`SentenceSource`].
pub fn corpus_sentences(src: &SentenceSource) -> Result<Vec<String>> {
    match src {
        SentenceSource::File { path, limit } => {
            let mut s = read_sentences(path)?;
            if let Some(n) = limit {
                s.truncate(*n);
            }
            Ok(s)
        }
        SentenceSource::Generated { num, seed, lines, extra } => {
            let mut s = generate_sentences(*num, *seed);
            if let Some(path) = lines {
                let mut pool = sentences_from_file(path, 3, 20)?;
                // Its own stream, so adding lines does not change the generated sentences.
                let mut rng = StdRng::seed_from_u64(seed.wrapping_add(0x5eed));
                pool.shuffle(&mut rng);
                pool.truncate(*extra);
                s.extend(pool);
            }
            if s.is_empty() {
                return Err(Error::Data("no sentences: ask for at least one".into()));
            }
            Ok(s)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Rendering

/// How [`render_corpus`] speaks.
#[derive(Debug, Clone, PartialEq)]
pub struct RenderConfig {
    /// The corpus's sample rate (espeak-ng's 22,050 Hz is resampled to it).
    pub sample_rate: u32,
    /// espeak-ng voices, used in turn; one voice makes a single-speaker corpus.
    pub voices: Vec<Voice>,
    /// Prefix of the IDs: `PREFIX-00001`.
    pub id_prefix: String,
}

impl Default for RenderConfig {
    fn default() -> Self {
        RenderConfig { sample_rate: 22050, voices: vec![Voice::new("en-us", 175)], id_prefix: "ZOO".into() }
    }
}

/// Speaks every sentence with espeak-ng into a new corpus folder `out` (LJSpeech layout:
/// `metadata.csv` with our normalisation as the third field, 16-bit `wavs/`). The folder is
/// written under a temporary name beside `out` and renamed when complete; `out` must not exist
/// or be empty. `progress(done, total)` is called after each utterance.
pub fn render_corpus(
    sentences: &[String],
    out: &Path,
    cfg: &RenderConfig,
    mut progress: impl FnMut(usize, usize),
) -> Result<Corpus> {
    if sentences.is_empty() {
        return Err(Error::Data("no sentences to render".into()));
    }
    if cfg.voices.is_empty() {
        return Err(Error::Config("corpus rendering needs at least one espeak-ng voice".into()));
    }
    if cfg.sample_rate == 0 {
        return Err(Error::Config("corpus sample rate 0".into()));
    }
    if out.exists() {
        let empty = out.is_dir() && std::fs::read_dir(out).map_err(|e| Error::io(out, e))?.next().is_none();
        if !empty {
            return Err(Error::Data(format!(
                "{}: already exists and is not an empty folder; choose a new folder for the corpus",
                out.display()
            )));
        }
    }
    if let Some(bad) = sentences.iter().find(|s| s.contains(['|', '\n', '\r'])) {
        return Err(Error::Data(format!("sentence {bad:?} holds '|' or a line break")));
    }
    let name = out.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "corpus".into());
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(|e| Error::io(parent, e))?;
    let tmp = parent.join(format!(".{name}.tmp-{}", std::process::id()));
    let result = render_into(sentences, &tmp, cfg, &mut progress).and_then(|utts| {
        if out.exists() {
            std::fs::remove_dir(out).map_err(|e| Error::io(out, e))?;
        }
        std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
        Ok(utts)
    });
    match result {
        Ok(utterances) => Ok(Corpus { root: out.to_path_buf(), utterances }),
        Err(e) => {
            let _ = std::fs::remove_dir_all(&tmp);
            Err(e)
        }
    }
}

fn render_into(
    sentences: &[String],
    dir: &Path,
    cfg: &RenderConfig,
    progress: &mut impl FnMut(usize, usize),
) -> Result<Vec<Utterance>> {
    let wavs = dir.join(WAVS);
    std::fs::create_dir_all(&wavs).map_err(|e| Error::io(&wavs, e))?;
    let width = sentences.len().to_string().len().max(5);
    let mut utterances = Vec::with_capacity(sentences.len());
    for (i, s) in sentences.iter().enumerate() {
        let id = format!("{}-{:0width$}", cfg.id_prefix, i + 1);
        let normal = normalize(s);
        if normal.trim().is_empty() {
            return Err(Error::Data(format!("sentence {} ({s:?}) has nothing to say", i + 1)));
        }
        let voice = &cfg.voices[i % cfg.voices.len()];
        // espeak-ng reads the normalised text, so audio and the text a model reads agree.
        let audio = espeak::render(&normal, voice)?;
        let samples = resample(&audio.samples, audio.sample_rate, cfg.sample_rate)?;
        let audio = Audio::new(samples, cfg.sample_rate)?;
        write_wav(&wavs.join(format!("{id}.wav")), &audio, WavFormat::Pcm16)?;
        utterances.push(Utterance { id, text: s.trim().to_string(), normalized: Some(normal) });
        progress(i + 1, sentences.len());
    }
    write_metadata(&dir.join(METADATA), &utterances)?;
    Ok(utterances)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, meta: &str, wavs: &[&str]) {
        std::fs::create_dir_all(dir.join(WAVS)).unwrap();
        std::fs::write(dir.join(METADATA), meta).unwrap();
        for id in wavs {
            let a =
                Audio::new(tch::Tensor::zeros([800], (tch::Kind::Float, tch::Device::Cpu)), 8000).unwrap();
            write_wav(&dir.join(WAVS).join(format!("{id}.wav")), &a, WavFormat::Pcm16).unwrap();
        }
    }

    #[test]
    fn reads_ljspeech_metadata_with_and_without_normalised_text() {
        let dir = tempfile::tempdir().unwrap();
        write(
            dir.path(),
            "LJ001-0001|Dr. Smith, 1999.|Doctor Smith, nineteen ninety-nine.\r\nLJ001-0002|Hello\n\n",
            &["LJ001-0001", "LJ001-0002"],
        );
        let c = Corpus::open(dir.path()).unwrap();
        assert_eq!(c.utterances.len(), 2);
        assert_eq!(c.utterances[0].spoken_text(), "Doctor Smith, nineteen ninety-nine.");
        assert_eq!(c.utterances[1].normalized, None);
        assert_eq!(c.utterances[1].spoken_text(), "Hello");
        let a = c.audio(0, 16000).unwrap();
        assert_eq!((a.sample_rate, a.len()), (16000, 1600));
        // Writing and reading again gives the same utterances.
        let p = dir.path().join("again.csv");
        write_metadata(&p, &c.utterances).unwrap();
        assert_eq!(read_metadata(&p).unwrap(), c.utterances);
    }

    #[test]
    fn bad_metadata_names_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join(METADATA);
        let cases = [
            ("a|x\nb\n", "line 2", "no '|'"),
            ("a|x|y|z\n", "line 1", "4 fields"),
            ("a|x\n\n|y\n", "line 3", "empty ID"),
            ("a|x\na|y\n", "line 2", "twice"),
            ("../a|x\n", "line 1", "plain file name"),
            ("a| |\n", "line 1", "no text"),
            ("\n\n", METADATA, "no utterances"),
        ];
        for (text, line, word) in cases {
            std::fs::write(&p, text).unwrap();
            let msg = read_metadata(&p).unwrap_err().to_string();
            assert!(msg.contains(METADATA) && msg.contains(line) && msg.contains(word), "{text:?}: {msg}");
        }
        // A missing WAV names the line of its utterance and the file.
        write(dir.path(), "a|one\nb|two\n", &["a"]);
        let msg = Corpus::open(dir.path()).unwrap_err().to_string();
        assert!(msg.contains("line 2") && msg.contains("b.wav"), "{msg}");
        assert!(Corpus::open(&dir.path().join("nope"))
            .unwrap_err()
            .to_string()
            .contains("not a corpus folder"));
        let bad = [Utterance { id: "a".into(), text: "x|y".into(), normalized: None }];
        assert!(write_metadata(&dir.path().join("m.csv"), &bad).is_err());
        assert!(!dir.path().join("m.csv").exists());
    }

    #[test]
    fn sentences_are_deterministic_and_hold_every_digit() {
        let a = generate_sentences(300, 1);
        assert_eq!(a, generate_sentences(300, 1));
        assert_ne!(a, generate_sentences(300, 2));
        assert_eq!(a.len(), 300);
        for &d in DIGIT_WORDS {
            let alone = a.iter().filter(|s| normalize(s).trim_end_matches(['.', '!']) == d).count();
            assert!(alone >= DIGIT_REPEATS, "{d}: {alone}");
        }
        // The mix reaches every kind: digits in text, years, times, money, percent.
        let all = a.join(" ");
        for word in ["The code is", "people at", "On ", "The train leaves", "$", "%", "years old"] {
            assert!(all.contains(word), "no {word:?} in 300 sentences");
        }
        assert!(a.iter().all(|s| !s.contains('|') && !normalize(s).is_empty()));
        assert_eq!(generate_sentences(3, 1), vec!["Zero.", "One.", "Two."]);
    }

    #[test]
    fn lines_of_a_text_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("t.txt");
        std::fs::write(
            &p,
            "First Citizen:\nBefore we proceed any further, hear me speak.\n\nSpeak.\nA|B c d\n",
        )
        .unwrap();
        assert_eq!(
            sentences_from_file(&p, 3, 20).unwrap(),
            vec!["Before we proceed any further, hear me speak."]
        );
        assert!(sentences_from_file(&p, 30, 40).is_err());
        let all = read_sentences(&p);
        assert!(all.unwrap_err().to_string().contains("line 5"));
        std::fs::write(&p, "One.\n\n  Two words. \nThree\n").unwrap();
        assert_eq!(read_sentences(&p).unwrap(), vec!["One.", "Two words.", "Three"]);
        let src = SentenceSource::File { path: p.clone(), limit: Some(2) };
        assert_eq!(corpus_sentences(&src).unwrap().len(), 2);
        std::fs::write(&p, "a b c d\ne f g h\ni j k l\n").unwrap();
        let gen = |extra| SentenceSource::Generated { num: 12, seed: 3, lines: Some(p.clone()), extra };
        let s = corpus_sentences(&gen(2)).unwrap();
        assert_eq!(s.len(), 14);
        assert_eq!(s[..12], generate_sentences(12, 3)[..]);
        assert_eq!(s, corpus_sentences(&gen(2)).unwrap());
        assert_eq!(corpus_sentences(&gen(10)).unwrap().len(), 15);
    }

    #[test]
    fn renders_a_corpus_atomically() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("corpus");
        let sentences = vec!["Seven.".to_string(), "It costs $5.".to_string()];
        if !espeak::available() {
            println!("skipped: espeak-ng not installed");
            let msg =
                render_corpus(&sentences, &out, &RenderConfig::default(), |_, _| {}).unwrap_err().to_string();
            assert!(msg.contains("espeak-ng"), "{msg}");
            assert!(!out.exists());
            return;
        }
        let cfg = RenderConfig {
            sample_rate: 16000,
            voices: vec![Voice::new("en-us", 175), Voice::new("en-us+f2", 160)],
            ..Default::default()
        };
        let mut calls = Vec::new();
        let c = render_corpus(&sentences, &out, &cfg, |d, t| calls.push((d, t))).unwrap();
        assert_eq!(calls, vec![(1, 2), (2, 2)]);
        assert_eq!(c.utterances[1].normalized.as_deref(), Some("it costs five dollars."));
        let again = Corpus::open(&out).unwrap();
        assert_eq!(again.utterances, c.utterances);
        let a = read_wav_mono(&again.wav_path(&again.utterances[0])).unwrap();
        assert_eq!(a.sample_rate, 16000);
        assert!(a.duration_secs() > 0.2 && a.samples.abs().max().double_value(&[]) > 0.05);
        // The folder now exists: refused, and left as it was.
        let msg = render_corpus(&sentences, &out, &cfg, |_, _| {}).unwrap_err().to_string();
        assert!(msg.contains("already exists"), "{msg}");
        // A failure half-way (an unknown voice for the second sentence) leaves nothing.
        let out2 = dir.path().join("corpus2");
        let bad = RenderConfig { voices: vec![Voice::new("en-us", 175), Voice::new("xx-nope", 175)], ..cfg };
        assert!(render_corpus(&sentences, &out2, &bad, |_, _| {}).is_err());
        assert!(!out2.exists());
        let leftovers: Vec<_> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    }
}
