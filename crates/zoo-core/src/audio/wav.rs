//! WAV files in and out, through `hound`.
//!
//! Reading accepts what soundfile/`scipy.io.wavfile` write in practice: integer PCM of 8, 16, 24
//! or 32 bits and 32-bit float, any channel count and rate. Integers are scaled by 2^-(bits-1)
//! to [-1, 1), the convention of soundfile and torchaudio, so a file written here reads back
//! bit-exact. Every defect of a file is one `Error::BadFile` line that names the path.
//!
//! Writing goes through [`crate::fsutil::atomic_write`]: a crash never leaves half a WAV.
use std::path::Path;

use hound::{SampleFormat, WavReader, WavSpec, WavWriter};
use tch::{Device, Kind, Tensor};

use super::Audio;
use crate::fsutil::atomic_write;
use crate::{Error, Result};

/// Sample encodings [`write_wav`] can produce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WavFormat {
    Pcm16,
    Pcm24,
    Pcm32,
    Float32,
}

impl WavFormat {
    fn bits(self) -> u16 {
        match self {
            WavFormat::Pcm16 => 16,
            WavFormat::Pcm24 => 24,
            WavFormat::Pcm32 | WavFormat::Float32 => 32,
        }
    }
}

/// Reads a WAV file. Shapes: file -> `Audio { samples: (channels, n) f32 on the CPU }`.
pub fn read_wav(path: &Path) -> Result<Audio> {
    // The whole file is read first, so every read error after this one is a truncation.
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    if bytes.is_empty() {
        return Err(Error::bad_file(path, "empty file, not a WAV file"));
    }
    if bytes.starts_with(b"RF64") {
        return Err(Error::bad_file(path, "RF64 (64-bit) WAV files are not supported"));
    }
    if !bytes.starts_with(b"RIFF") {
        return Err(Error::bad_file(path, "not a WAV file (no RIFF header)"));
    }
    let mut reader = WavReader::new(std::io::Cursor::new(&bytes[..])).map_err(|e| {
        // hound refuses float samples other than 32-bit as a malformed header; say what they are.
        match fmt_chunk(&bytes) {
            Some((3, bits)) if bits != 32 => Error::bad_file(
                path,
                format!(
                    "unsupported sample format: {bits}-bit float (integer PCM of 8/16/24/32 bits and \
                     32-bit float are read)"
                ),
            ),
            _ => Error::bad_file(path, header_problem(e, bytes.len())),
        }
    })?;
    let spec = reader.spec();
    let channels = i64::from(spec.channels);
    let expected = reader.len() as usize;
    // A header can promise more samples than the file holds: never trust it for an allocation.
    let mut samples = Vec::with_capacity(expected.min(bytes.len()));
    let truncated = |got: usize| {
        Error::bad_file(
            path,
            format!("truncated data chunk: the header promises {expected} samples, the file holds {got}"),
        )
    };
    match (spec.sample_format, spec.bits_per_sample) {
        (SampleFormat::Float, 32) => {
            for s in reader.samples::<f32>() {
                samples.push(s.map_err(|_| truncated(samples.len()))?);
            }
        }
        (SampleFormat::Int, bits @ (8 | 16 | 24 | 32)) => {
            let scale = 1.0 / f64::from(1u32 << (bits - 1));
            for s in reader.samples::<i32>() {
                let s = s.map_err(|_| truncated(samples.len()))?;
                samples.push((f64::from(s) * scale) as f32);
            }
        }
        (format, bits) => {
            let kind = if format == SampleFormat::Float { "float" } else { "integer" };
            return Err(Error::bad_file(
                path,
                format!(
                    "unsupported sample format: {bits}-bit {kind} (integer PCM of 8/16/24/32 \
                     bits and 32-bit float are read)"
                ),
            ));
        }
    }
    let n = samples.len() as i64 / channels;
    // Interleaved frames (n, channels) -> (channels, n).
    let samples = Tensor::f_from_slice(&samples)?.f_reshape([n, channels])?.f_t_()?.f_contiguous()?;
    Ok(Audio { samples, sample_rate: spec.sample_rate })
}

/// The format tag and bits per sample of a RIFF WAV's `fmt ` chunk, if one can be found.
fn fmt_chunk(b: &[u8]) -> Option<(u16, u16)> {
    let mut i = 12;
    while i + 8 <= b.len() {
        let size = u32::from_le_bytes(b[i + 4..i + 8].try_into().ok()?) as usize;
        if &b[i..i + 4] == b"fmt " && i + 8 + 16 <= b.len() {
            let tag = u16::from_le_bytes([b[i + 8], b[i + 9]]);
            let bits = u16::from_le_bytes([b[i + 22], b[i + 23]]);
            return Some((tag, bits));
        }
        i = i.checked_add(8 + size + size % 2)?;
    }
    None
}

/// Turns hound's header errors into what the user needs to hear.
fn header_problem(e: hound::Error, file_len: usize) -> String {
    match e {
        hound::Error::IoError(_) => {
            format!("truncated WAV header: the file ends after {file_len} bytes, before the data")
        }
        hound::Error::FormatError(msg) => format!("malformed WAV header: {msg}"),
        hound::Error::Unsupported => "unsupported WAV encoding (compressed or vendor-specific); \
                                      integer PCM and 32-bit float are read"
            .to_string(),
        other => format!("unreadable WAV header: {other}"),
    }
}

/// Reads a WAV file and averages its channels. Shapes: file -> (1, n).
pub fn read_wav_mono(path: &Path) -> Result<Audio> {
    Ok(read_wav(path)?.to_mono())
}

/// Writes `audio` (samples (channels, n) or (n), any float kind, any device) as a WAV file,
/// atomically. PCM formats clamp to [-1, 1] and map NaN to 0; `Float32` writes values as they are.
pub fn write_wav(path: &Path, audio: &Audio, format: WavFormat) -> Result<()> {
    let x = &audio.samples;
    let (channels, n) = match x.size()[..] {
        [n] => (1, n),
        [c, n] => (c, n),
        ref s => {
            return Err(Error::Shape(format!(
                "write_wav wants samples of shape (channels, n) or (n), got {s:?}"
            )))
        }
    };
    let channels = u16::try_from(channels)
        .ok()
        .filter(|&c| c > 0)
        .ok_or_else(|| Error::Shape(format!("a WAV file holds 1 to 65535 channels, not {channels}")))?;
    if audio.sample_rate == 0 {
        return Err(Error::Config("write_wav: sample rate 0".into()));
    }
    // Interleave: (channels, n) -> (n, channels), flattened.
    let interleaved = x
        .f_reshape([i64::from(channels), n])?
        .f_to_device(Device::Cpu)?
        .f_to_kind(Kind::Float)?
        .f_t_()?
        .f_contiguous()?
        .f_reshape([-1])?;
    let data = Vec::<f32>::try_from(&interleaved)?;

    let spec = WavSpec {
        channels,
        sample_rate: audio.sample_rate,
        bits_per_sample: format.bits(),
        sample_format: if format == WavFormat::Float32 { SampleFormat::Float } else { SampleFormat::Int },
    };
    let wav_err = |e: hound::Error| match e {
        hound::Error::IoError(e) => Error::io(path, e),
        other => Error::bad_file(path, format!("cannot write WAV: {other}")),
    };
    atomic_write(path, |w| {
        let mut writer = WavWriter::new(w, spec).map_err(wav_err)?;
        if format == WavFormat::Float32 {
            for &s in &data {
                writer.write_sample(s).map_err(wav_err)?;
            }
        } else {
            let bits = format.bits();
            let full_scale = f64::from(1u32 << (bits - 1));
            let (lo, hi) = (-full_scale, full_scale - 1.0);
            for &s in &data {
                let s = if s.is_nan() { 0.0 } else { f64::from(s).clamp(-1.0, 1.0) };
                // +1.0 maps to full scale, one step above the largest code: clip it there.
                let q = (s * full_scale).round().clamp(lo, hi) as i32;
                writer.write_sample(q).map_err(wav_err)?;
            }
        }
        writer.finalize().map_err(wav_err)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tone(channels: i64, n: i64) -> Tensor {
        let t = Tensor::arange(n, (Kind::Float, Device::Cpu)) / 100.0;
        let rows: Vec<Tensor> = (0..channels).map(|c| (&t * (c as f64 + 1.0)).sin() * 0.9).collect();
        Tensor::stack(&rows, 0)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn round_trips_every_format_mono_and_stereo() {
        let dir = tempfile::tempdir().unwrap();
        for channels in [1, 2] {
            for (format, tol) in [
                (WavFormat::Pcm16, 0.5 / 32768.0),
                (WavFormat::Pcm24, 0.5 / 8388608.0),
                (WavFormat::Pcm32, 1e-7),
                (WavFormat::Float32, 0.0),
            ] {
                let audio = Audio { samples: tone(channels, 1000), sample_rate: 16000 };
                let p = dir.path().join(format!("{format:?}-{channels}.wav"));
                write_wav(&p, &audio, format).unwrap();
                let back = read_wav(&p).unwrap();
                assert_eq!(back.sample_rate, 16000);
                assert_eq!(back.samples.size(), vec![channels, 1000], "{format:?}");
                let d = max_diff(&back.samples, &audio.samples);
                assert!(d <= tol * 1.0001, "{format:?} {channels}ch: max diff {d} > {tol}");
                // What was read once comes back bit-exact.
                write_wav(&p, &back, format).unwrap();
                assert_eq!(max_diff(&read_wav(&p).unwrap().samples, &back.samples), 0.0);
            }
        }
    }

    #[test]
    fn a_64_bit_float_wav_is_named_as_such() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f64.wav");
        let data: Vec<u8> = [0.1f64, -0.2].iter().flat_map(|x| x.to_le_bytes()).collect();
        let mut b = b"RIFF".to_vec();
        b.extend((4 + 8 + 16 + 8 + data.len() as u32).to_le_bytes());
        b.extend(b"WAVEfmt ");
        b.extend(16u32.to_le_bytes());
        for v in [3u16, 1] {
            b.extend(v.to_le_bytes()); // IEEE float, mono
        }
        b.extend(8000u32.to_le_bytes());
        b.extend(64000u32.to_le_bytes());
        for v in [8u16, 64] {
            b.extend(v.to_le_bytes()); // block align, bits
        }
        b.extend(b"data");
        b.extend((data.len() as u32).to_le_bytes());
        b.extend(&data);
        std::fs::write(&p, &b).unwrap();
        let e = read_wav(&p).unwrap_err().to_string();
        assert!(e.contains("unsupported sample format: 64-bit float"), "{e}");
        assert_eq!(fmt_chunk(&b), Some((3, 64)));
        assert_eq!(fmt_chunk(b"RIFF\0\0\0\0WAVE"), None);
    }

    #[test]
    fn pcm_clamps_and_float_does_not() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("c.wav");
        let x = Tensor::from_slice(&[-3.0f32, -1.0, 0.5, 1.0, 2.0, f32::NAN]);
        let audio = Audio { samples: x.view([1, 6]), sample_rate: 8000 };
        write_wav(&p, &audio, WavFormat::Pcm16).unwrap();
        let back = Vec::<f32>::try_from(&read_wav(&p).unwrap().samples.view([-1])).unwrap();
        let top = 32767.0 / 32768.0;
        assert_eq!(back, vec![-1.0, -1.0, 0.5, top, top, 0.0]);
        write_wav(&p, &audio, WavFormat::Float32).unwrap();
        let back = Vec::<f32>::try_from(&read_wav(&p).unwrap().samples.view([-1])).unwrap();
        assert_eq!(&back[..5], &[-3.0, -1.0, 0.5, 1.0, 2.0]);
    }

    #[test]
    fn reads_8_bit_and_writes_1d_input() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("u8.wav");
        let spec =
            WavSpec { channels: 1, sample_rate: 8000, bits_per_sample: 8, sample_format: SampleFormat::Int };
        let mut w = WavWriter::create(&p, spec).unwrap();
        for s in [-128i8, 0, 64, 127] {
            w.write_sample(s).unwrap();
        }
        w.finalize().unwrap();
        let back = Vec::<f32>::try_from(&read_wav(&p).unwrap().samples.view([-1])).unwrap();
        assert_eq!(back, vec![-1.0, 0.0, 0.5, 127.0 / 128.0]);

        let audio = Audio { samples: Tensor::from_slice(&[0.25f32, -0.25]), sample_rate: 8000 };
        write_wav(&p, &audio, WavFormat::Pcm16).unwrap();
        assert_eq!(read_wav(&p).unwrap().samples.size(), vec![1, 2]);
    }

    #[test]
    fn mono_read_averages_channels() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("s.wav");
        let x = Tensor::from_slice(&[0.5f32, 0.25, -0.5, 0.25]).view([2, 2]);
        write_wav(&p, &Audio { samples: x, sample_rate: 8000 }, WavFormat::Float32).unwrap();
        let m = read_wav_mono(&p).unwrap();
        assert_eq!(m.samples.size(), vec![1, 2]);
        assert_eq!(Vec::<f32>::try_from(&m.samples.view([-1])).unwrap(), vec![0.0, 0.25]);
    }

    fn bad(bytes: &[u8]) -> String {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("bad.wav");
        std::fs::write(&p, bytes).unwrap();
        match read_wav(&p) {
            Err(e @ Error::BadFile { .. }) => {
                let msg = e.to_string();
                assert!(msg.contains("bad.wav"), "{msg}");
                assert_eq!(msg.lines().count(), 1, "{msg}");
                msg
            }
            other => panic!("expected BadFile, got {other:?}"),
        }
    }

    fn good_wav_bytes() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("ok.wav");
        let audio = Audio { samples: tone(2, 100), sample_rate: 8000 };
        write_wav(&p, &audio, WavFormat::Pcm16).unwrap();
        std::fs::read(p).unwrap()
    }

    #[test]
    fn bad_files_are_one_line_errors() {
        assert!(bad(b"").contains("empty file"));
        assert!(bad(b"hello, this is certainly not audio").contains("no RIFF header"));
        assert!(bad(b"RF64\0\0\0\0WAVE").contains("RF64"));
        let good = good_wav_bytes();
        assert_eq!(good.len(), 44 + 400);
        assert!(bad(&good[..6]).contains("truncated WAV header"));
        assert!(bad(&good[..30]).contains("truncated WAV header"));
        assert!(bad(&good[..44 + 100]).contains("truncated data chunk"));
        let mut wrong_tag = good.clone();
        wrong_tag[8..12].copy_from_slice(b"AVI ");
        assert!(bad(&wrong_tag).contains("malformed WAV header"));
        // Format tag 0x0055 is MPEG layer 3.
        let mut mp3 = good.clone();
        mp3[20..22].copy_from_slice(&0x55u16.to_le_bytes());
        assert!(bad(&mp3).contains("unsupported WAV encoding"));
    }

    #[test]
    fn corrupt_headers_never_panic() {
        // Flip every byte of the header in turn: whatever hound makes of it, we return.
        let good = good_wav_bytes();
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("fuzz.wav");
        for i in 0..44 {
            for v in [0u8, 1, 0x7f, 0xff] {
                let mut b = good.clone();
                b[i] = v;
                std::fs::write(&p, &b).unwrap();
                let _ = read_wav(&p);
            }
        }
    }

    #[test]
    fn missing_file_is_an_io_error_and_bad_shapes_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(read_wav(&dir.path().join("nope.wav")), Err(Error::Io { .. })));
        let p = dir.path().join("x.wav");
        let audio =
            Audio { samples: Tensor::zeros([1, 2, 3], (Kind::Float, Device::Cpu)), sample_rate: 8000 };
        assert!(matches!(write_wav(&p, &audio, WavFormat::Pcm16), Err(Error::Shape(_))));
        let audio = Audio { samples: Tensor::zeros([1, 3], (Kind::Float, Device::Cpu)), sample_rate: 0 };
        assert!(matches!(write_wav(&p, &audio, WavFormat::Pcm16), Err(Error::Config(_))));
        assert!(!p.exists());
    }
}
