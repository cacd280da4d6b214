//! espeak-ng, run as a program (Debian's `espeak-ng`; `tools/setup.sh` installs it where it
//! can): IPA phonemes for the text front end and rendered speech for the training corpus.
//!
//! The text goes in on stdin, never through a shell or as an argument (so text that starts with
//! `-` is not an option). Rendered speech comes back on stdout as a WAV whose header gives no
//! length (espeak-ng streams it), so [`render`] reads the PCM after the `data` chunk itself.
use std::io::Write;
use std::process::{Command, Stdio};

use tch::Tensor;
use zoo_core::audio::Audio;

use crate::{Error, Result};

/// The program looked up on the PATH.
pub const PROGRAM: &str = "espeak-ng";
/// American English, the voice the phoneme symbols are checked against.
pub const DEFAULT_VOICE: &str = "en-us";

/// What to do without espeak-ng, for error messages.
pub const INSTALL_HINT: &str = "install it (Debian/Ubuntu: apt-get install espeak-ng; or run \
                                tools/setup.sh as root)";

/// Is espeak-ng on the PATH and does it run?
pub fn available() -> bool {
    Command::new(PROGRAM)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Runs espeak-ng with `args`, `text` on stdin; returns stdout.
fn run(args: &[&str], text: &str, what: &str) -> Result<Vec<u8>> {
    let mut child = Command::new(PROGRAM)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::Config(format!("{what} needs {PROGRAM}, which is not installed: {INSTALL_HINT}"))
            } else {
                Error::Config(format!("cannot run {PROGRAM} for {what}: {e}"))
            }
        })?;
    // Written from a thread, so a large output cannot block the writer.
    let mut stdin = child.stdin.take().ok_or_else(|| Error::Config(format!("{PROGRAM}: no stdin")))?;
    let input = text.as_bytes().to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&input));
    let out = child.wait_with_output().map_err(|e| Error::Config(format!("{PROGRAM} for {what}: {e}")))?;
    let written = writer.join().map_err(|_| Error::Config(format!("{PROGRAM}: stdin writer panicked")))?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let first = err.lines().next().unwrap_or("").trim();
        return Err(Error::Config(format!("{PROGRAM} failed for {what} ({}): {first}", out.status)));
    }
    written.map_err(|e| Error::Config(format!("{PROGRAM} for {what}: writing the text: {e}")))?;
    Ok(out.stdout)
}

/// Text -> IPA with `voice` (`espeak-ng -q --ipa -v VOICE`), stress and length marks kept,
/// without tie bars. espeak-ng drops punctuation and prints one line per clause; the lines are
/// joined with spaces.
pub fn phonemize(text: &str, voice: &str) -> Result<String> {
    let out = run(&["-q", "--ipa", "-v", voice], text, "phonemes")?;
    let s = String::from_utf8_lossy(&out);
    Ok(s.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// How espeak-ng speaks: a voice (`en-us`, with an optional variant, `en-us+f2`) and a rate in
/// words per minute (espeak-ng's default is 175).
#[derive(Debug, Clone, PartialEq)]
pub struct Voice {
    pub name: String,
    pub words_per_minute: u32,
}

impl Voice {
    pub fn new(name: &str, words_per_minute: u32) -> Self {
        Voice { name: name.to_string(), words_per_minute }
    }
}

/// Speaks `text` with `voice`. Shapes: -> `Audio { samples: (1, n) }` at espeak-ng's rate
/// (22,050 Hz for its own voices).
pub fn render(text: &str, voice: &Voice) -> Result<Audio> {
    let wpm = voice.words_per_minute.to_string();
    let what = format!("speech with voice {}", voice.name);
    let bytes = run(&["--stdout", "-v", &voice.name, "-s", &wpm], text, &what)?;
    let (rate, pcm) =
        parse_stream_wav(&bytes).map_err(|msg| Error::Data(format!("{PROGRAM} {what}: {msg}")))?;
    let samples: Vec<f32> =
        pcm.chunks_exact(2).map(|b| f32::from(i16::from_le_bytes([b[0], b[1]])) / 32768.0).collect();
    Ok(Audio::new(Tensor::f_from_slice(&samples)?, rate)?)
}

/// A 16-bit mono PCM WAV whose chunk sizes may be placeholders: (sample rate, PCM bytes).
fn parse_stream_wav(b: &[u8]) -> std::result::Result<(u32, &[u8]), String> {
    if b.len() < 12 || &b[0..4] != b"RIFF" || &b[8..12] != b"WAVE" {
        return Err("output is not a WAV stream".into());
    }
    let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
    let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut i = 12;
    let mut rate = None;
    while i + 8 <= b.len() {
        let (id, size) = (&b[i..i + 4], u32_at(i + 4) as usize);
        if id == b"fmt " {
            if i + 24 > b.len() {
                return Err("truncated fmt chunk".into());
            }
            let (format, channels, bits) = (u16_at(i + 8), u16_at(i + 10), u16_at(i + 22));
            if format != 1 || channels != 1 || bits != 16 {
                return Err(format!(
                    "expected 16-bit mono PCM, got format {format}, {channels} channels, {bits} bits"
                ));
            }
            rate = Some(u32_at(i + 12));
        } else if id == b"data" {
            let rate = rate.ok_or("data chunk before the fmt chunk")?;
            // The streamed header's size is a placeholder: the data runs to the end.
            let data = &b[i + 8..];
            return Ok((rate, &data[..data.len() / 2 * 2]));
        }
        i = i.saturating_add(8 + size + (size & 1));
    }
    Err("no data chunk".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_wav_headers() {
        let mut b = Vec::new();
        b.extend(b"RIFF\xff\xff\xff\x7fWAVEfmt ");
        b.extend(16u32.to_le_bytes());
        b.extend(1u16.to_le_bytes()); // PCM
        b.extend(1u16.to_le_bytes()); // mono
        b.extend(22050u32.to_le_bytes());
        b.extend(44100u32.to_le_bytes());
        b.extend(2u16.to_le_bytes());
        b.extend(16u16.to_le_bytes());
        b.extend(b"data\xff\xff\xff\x7f");
        b.extend([1, 0, 2, 0, 3]);
        let (rate, pcm) = parse_stream_wav(&b).unwrap();
        assert_eq!((rate, pcm), (22050, &[1u8, 0, 2, 0][..]));
        assert!(parse_stream_wav(b"RIFF").is_err());
        let mut stereo = b.clone();
        stereo[22] = 2;
        assert!(parse_stream_wav(&stereo).unwrap_err().contains("mono"));
    }

    #[test]
    fn renders_speech() {
        if !available() {
            println!("skipped: espeak-ng not installed");
            return;
        }
        let a = render("seven", &Voice::new("en-us", 175)).unwrap();
        assert_eq!(a.sample_rate, 22050);
        // About half a second of sound, not silence.
        assert!(a.duration_secs() > 0.2 && a.duration_secs() < 2.0, "{}", a.duration_secs());
        assert!(a.samples.abs().max().double_value(&[]) > 0.05);
        // A voice espeak-ng does not know is its error, named.
        let Err(Error::Config(msg)) = render("seven", &Voice::new("xx-nope", 175)) else { panic!() };
        assert!(msg.contains("xx-nope"), "{msg}");
    }
}
