//! A text-to-speech model folder, and speech from text with it.
//!
//! A preset (`models/tts/<name>.json`) and the `config.json` of a model folder are one
//! [`TtsFile`], in the spirit of jaywalnut310/glow-tts's `configs/base.json` with its `model`,
//! `data` and `train` sections: the [`GlowTtsConfig`], what the model reads and hears
//! ([`DataConfig`]: the symbol set, `add_blank`, the mel front end) and the recipe
//! ([`TrainConfig`]). A model folder is that `config.json` plus `model.safetensors` (f32 or f16;
//! loaded into f32 either way), so it holds everything synthesis needs.
//!
//! [`TtsModel::speak`]: text -> normalised words -> pieces of at most `max_chars` characters
//! cut at sentence ends ([`split_sentences`]) -> symbol ids -> log-mel (Glow-TTS inference,
//! piece by piece, joined) -> waveform through the model's [`Vocoding`]: Griffin-Lim through
//! the model's own mel settings, or a WaveGlow trained on the same front end.
use std::path::{Path, PathBuf};

use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tch::{nn::VarStore, Device, Kind, Tensor};
use zoo_core::audio::{Audio, GriffinLim, GriffinLimConfig, MelConfig};
use zoo_core::train::LrSchedule;

use super::glow_tts::{GlowTts, GlowTtsConfig};
use super::text::{intersperse, normalize, split_sentences, text_to_ids, Symbols};
use crate::denoiser::Denoiser;
use crate::waveglow::Vocoder;
use crate::{Error, Result};

/// The config file of a model folder.
pub const CONFIG_FILE: &str = "config.json";
/// The weights of a model folder.
pub const WEIGHTS_FILE: &str = "model.safetensors";
/// ln 1e-5: the mel front end's floor (silence).
pub const LOG_MEL_FLOOR: f64 = -11.512925464970229;
/// The largest log-mel [`TtsModel::speak`] vocodes.
pub const LOG_MEL_CEILING: f64 = 5.0;

/// What the model reads and the sound it models.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// The symbol set the text becomes (`characters`, or `phonemes` through espeak-ng).
    pub symbols: Symbols,
    /// The symbol table the model was trained on, index = id; written into model folders so a
    /// later change of the table cannot silently scramble a trained model's input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol_table: Option<String>,
    /// Glow-TTS's `add_blank`: the blank symbol (id 0) between all symbols and at both ends.
    pub add_blank: bool,
    /// The log-mel front end (and so Griffin-Lim's); corpus audio is resampled to its rate.
    pub mel: MelConfig,
}

/// The training recipe.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Utterances per step.
    pub batch_size: usize,
    /// Peak learning rate of Adam.
    pub learning_rate: f64,
    /// The cosine decay ends here, at the last step.
    pub min_lr: f64,
    /// Linear warmup from 0 over this many steps.
    pub warmup_steps: u64,
    pub steps: u64,
    /// Clip the global gradient norm to this value (none: no clipping).
    #[serde(default)]
    pub clip_grad: Option<f64>,
    /// Every `valid_every`-th utterance of the corpus (in file order) is held out for the
    /// validation losses (0: none held out).
    pub valid_every: usize,
    /// Held-out losses, a checkpoint and the loss plot every this many steps.
    pub checkpoint_every: u64,
    /// Utterances with more mel frames than this are left out of training (0: no limit).
    #[serde(default)]
    pub max_frames: i64,
}

/// A preset, or the config.json of a model folder. Unknown keys are errors (a typo would
/// otherwise silently fall back to a default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TtsFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub model: GlowTtsConfig,
    pub data: DataConfig,
    pub train: TrainConfig,
}

impl TtsFile {
    /// The test preset: [`GlowTtsConfig::tiny`] on characters with blanks, 80 mels at
    /// 22.05 kHz (WaveGlow's front end), a short recipe.
    pub fn tiny() -> Self {
        let symbols = Symbols::Characters;
        let mel = MelConfig::waveglow_22k();
        TtsFile {
            description: None,
            model: GlowTtsConfig::tiny(symbols.len() as i64, mel.n_mels),
            data: DataConfig { symbols, symbol_table: None, add_blank: true, mel },
            train: TrainConfig {
                batch_size: 4,
                learning_rate: 1e-2,
                min_lr: 1e-3,
                warmup_steps: 2,
                steps: 30,
                clip_grad: Some(5.0),
                valid_every: 0,
                checkpoint_every: 10,
                max_frames: 0,
            },
        }
    }

    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = zoo_core::presets::read(path)?;
        let f: TtsFile = serde_json::from_str(&text)
            .map_err(|e| Error::ConfigFile { path: path.to_path_buf(), msg: e.to_string() })?;
        f.validate().map_err(|e| Error::ConfigFile { path: path.to_path_buf(), msg: e.to_string() })?;
        Ok(f)
    }

    /// The model, mel and recipe settings, and that they fit together.
    pub fn validate(&self) -> Result<()> {
        self.model.validate()?;
        self.data.mel.validate()?;
        let d = &self.data;
        let n_symbols = d.symbols.len() as i64;
        if self.model.n_vocab != n_symbols {
            return Err(Error::Config(format!(
                "model.n_vocab is {} but the {} symbol set has {n_symbols} symbols",
                self.model.n_vocab,
                d.symbols.name()
            )));
        }
        if let Some(table) = &d.symbol_table {
            let ours: String = d.symbols.table().into_iter().collect();
            if *table != ours {
                return Err(Error::Config(format!(
                    "data.symbol_table differs from this version's {} table; the model was trained on other symbols",
                    d.symbols.name()
                )));
            }
        }
        if self.model.out_channels != d.mel.n_mels {
            return Err(Error::Config(format!(
                "model.out_channels is {} but data.mel.n_mels is {}",
                self.model.out_channels, d.mel.n_mels
            )));
        }
        let t = &self.train;
        if t.batch_size < 1 || t.checkpoint_every < 1 {
            return Err(Error::Config("train: batch_size and checkpoint_every must be >= 1".into()));
        }
        let lr_ok =
            t.learning_rate.is_finite() && t.learning_rate > 0.0 && t.min_lr.is_finite() && t.min_lr >= 0.0;
        if !lr_ok {
            return Err(Error::Config("train: learning_rate must be > 0 and min_lr >= 0".into()));
        }
        if t.clip_grad.is_some_and(|c| !(c.is_finite() && c > 0.0)) {
            return Err(Error::Config("train: clip_grad must be > 0".into()));
        }
        if t.max_frames < 0 {
            return Err(Error::Config(format!("train: max_frames must be >= 0, got {}", t.max_frames)));
        }
        Ok(())
    }

    /// Warmup to `learning_rate`, cosine to `min_lr` at the last step.
    pub fn schedule(&self) -> LrSchedule {
        let t = &self.train;
        LrSchedule::WarmupCosine {
            lr: t.learning_rate,
            min_lr: t.min_lr,
            warmup_steps: t.warmup_steps.min(t.steps),
            decay_steps: t.steps,
        }
    }

    /// Text -> the model's symbol ids (blanks put in when the model uses them), with the
    /// characters dropped as outside the symbol set.
    pub fn encode(&self, text: &str) -> Result<(Vec<i64>, Vec<char>)> {
        let e = text_to_ids(text, self.data.symbols)?;
        let ids = if self.data.add_blank { intersperse(&e.ids, 0) } else { e.ids };
        Ok((ids, e.dropped))
    }
}

/// Settings of [`TtsModel::speak`].
#[derive(Debug, Clone, PartialEq)]
pub struct SpeakOptions {
    /// Times the prior's std (Glow-TTS's sigma, its "temperature"). 0.333, as the Glow-TTS paper
    /// samples; the reference repository's notebook uses 0.667, which the shipped model speaks
    /// less intelligibly with (docs/tts.md).
    pub noise_scale: f64,
    /// Times the predicted durations (> 1 speaks slower).
    pub length_scale: f64,
    /// Seeds the prior's noise and Griffin-Lim's initial phase (their own generators, not
    /// libtorch's global one).
    pub seed: u64,
    /// Normalised text longer than this is spoken in pieces cut at sentence ends, then joined.
    pub max_chars: usize,
    pub griffin_lim: GriffinLimConfig,
    /// WaveGlow's sigma: the standard deviation of its noise z (0 is deterministic).
    pub waveglow_sigma: f64,
    /// WaveGlow's denoiser strength: this much of the model's bias spectrum is subtracted (0:
    /// off).
    pub denoiser: f64,
}

impl Default for SpeakOptions {
    fn default() -> Self {
        SpeakOptions {
            noise_scale: 0.333,
            length_scale: 1.0,
            seed: 0,
            max_chars: 200,
            griffin_lim: GriffinLimConfig { n_iter: 32, ..Default::default() },
            waveglow_sigma: 0.6,
            denoiser: 0.0,
        }
    }
}

/// What turns a [`TtsModel`]'s log-mel into a waveform.
pub enum Vocoding {
    /// Griffin-Lim through the model's own mel settings ([`SpeakOptions::griffin_lim`]): no
    /// training, always available.
    GriffinLim,
    /// A WaveGlow trained on audio of the same front end (`zoo flow train`).
    WaveGlow(Box<WaveGlowVoice>),
}

impl Vocoding {
    /// `griffin-lim` or `waveglow`.
    pub fn name(&self) -> &'static str {
        match self {
            Vocoding::GriffinLim => "griffin-lim",
            Vocoding::WaveGlow(_) => "waveglow",
        }
    }
}

/// A WaveGlow model folder loaded as a text-to-speech vocoder, with its denoiser.
pub struct WaveGlowVoice {
    pub vocoder: Vocoder,
    pub denoiser: Denoiser,
    /// The folder it was loaded from.
    pub dir: PathBuf,
}

impl WaveGlowVoice {
    /// Loads a WaveGlow model folder (f32 whatever the file's dtype) for a model that makes
    /// log-mels in `mel`'s settings; a WaveGlow that hears another front end is refused.
    pub fn load(dir: &Path, mel: &MelConfig, device: Device) -> Result<Self> {
        let vocoder = Vocoder::load(dir, device, Kind::Float)?;
        let hears = vocoder.file.mel_config();
        if hears != *mel {
            return Err(Error::Config(format!(
                "{}: this WaveGlow hears {} mels at {} Hz (FFT {}, hop {}, {}-{:?} Hz) but the text-to-speech model makes {} mels at {} Hz (FFT {}, hop {}, {}-{:?} Hz); train a WaveGlow on its front end (models/flow/waveglow-22k-small.json)",
                dir.display(),
                hears.n_mels,
                hears.sample_rate,
                hears.n_fft,
                hears.hop_length,
                hears.fmin,
                hears.fmax,
                mel.n_mels,
                mel.sample_rate,
                mel.n_fft,
                mel.hop_length,
                mel.fmin,
                mel.fmax
            )));
        }
        let denoiser = Denoiser::new(&vocoder.model)?;
        Ok(WaveGlowVoice { vocoder, denoiser, dir: dir.to_path_buf() })
    }

    /// Log-mel (n_mels, frames) -> waveform (frames * hop), with z drawn from a generator
    /// seeded with `seed` (not libtorch's global one), and denoised when `denoiser` > 0.
    pub fn vocode(&self, mel: &Tensor, sigma: f64, denoiser: f64, seed: u64) -> Result<Tensor> {
        if !(sigma.is_finite() && sigma >= 0.0 && denoiser.is_finite() && denoiser >= 0.0) {
            return Err(Error::Input(format!(
                "WaveGlow sigma {sigma} and denoiser strength {denoiser} must be numbers >= 0"
            )));
        }
        let m = &self.vocoder.model;
        let device = m.device();
        let frames = mel.size()[1];
        let g = m.cfg.n_group;
        let mut rng = rand::rngs::StdRng::seed_from_u64(zoo_core::seed::step_seed(seed, 1, 0));
        let z = zoo_core::seed::randn(&[1, g, frames * m.hop() / g], &mut rng)?
            .f_to_device(device)?
            .f_mul_scalar(sigma)?;
        let mel = mel.f_unsqueeze(0)?.f_to_device(device)?;
        let mut y = tch::no_grad(|| m.inverse(&mel, &z))?;
        if denoiser > 0.0 {
            y = self.denoiser.forward(&y, denoiser)?;
        }
        let y = y.f_select(0, 0)?.f_to_device(Device::Cpu)?.f_to_kind(Kind::Float)?;
        // A barely trained flow can blow up: keep the waveform finite and in range.
        Ok(y.f_nan_to_num(0.0, 1.0, -1.0)?.f_clamp(-1.0, 1.0)?)
    }
}

/// What [`TtsModel::speak`] gives.
#[derive(Debug)]
pub struct Speech {
    /// Mono, at the model's sample rate, in [-1, 1].
    pub audio: Audio,
    /// The log-mel the waveform was made from, (n_mels, frames), clamped to [`LOG_MEL_FLOOR`,
    /// `LOG_MEL_CEILING`].
    pub mel: Tensor,
    /// The normalised pieces spoken one after the other (one unless the text was long).
    pub pieces: Vec<String>,
    /// Characters outside the symbol set, dropped, each once in order of appearance.
    pub dropped: Vec<char>,
}

/// A Glow-TTS model with its variables and settings, and the vocoder it speaks through
/// (Griffin-Lim unless [`TtsModel::use_waveglow`] is called).
pub struct TtsModel {
    pub vs: VarStore,
    pub model: GlowTts,
    pub file: TtsFile,
    pub vocoding: Vocoding,
}

impl TtsModel {
    /// A freshly initialised model (f32; ActNorm not yet initialised) from libtorch's generator.
    pub fn new(file: &TtsFile, device: Device) -> Result<Self> {
        file.validate()?;
        let vs = VarStore::new(device);
        let model = GlowTts::new(vs.root(), &file.model)?;
        Ok(TtsModel { vs, model, file: file.clone(), vocoding: Vocoding::GriffinLim })
    }

    /// Speaks through the WaveGlow model folder `dir` from now on (see [`WaveGlowVoice::load`]).
    pub fn use_waveglow(&mut self, dir: &Path) -> Result<()> {
        let v = WaveGlowVoice::load(dir, &self.file.data.mel, self.vs.device())?;
        self.vocoding = Vocoding::WaveGlow(Box::new(v));
        Ok(())
    }

    /// Loads a model folder strictly (every tensor by name and shape), in f32 whatever the
    /// file's dtype.
    pub fn load(dir: &Path, device: Device) -> Result<Self> {
        let cfg_path = dir.join(CONFIG_FILE);
        if !cfg_path.is_file() {
            return Err(Error::Config(format!(
                "{} is not a text-to-speech model folder (no {CONFIG_FILE})",
                dir.display()
            )));
        }
        let file = TtsFile::from_json_file(&cfg_path)?;
        let m = TtsModel::new(&file, device)?;
        zoo_core::weights::load_into(&m.vs, &dir.join(WEIGHTS_FILE), &zoo_core::weights::keep_names)?;
        for (name, v) in m.vs.variables() {
            if name.ends_with("initialized") && v.f_double_value(&[0])? == 0.0 {
                return Err(Error::Config(format!(
                    "{}: the model was never trained (ActNorm {name} is not initialised)",
                    dir.display()
                )));
            }
        }
        Ok(m)
    }

    /// Writes config.json (with the symbol table) and model.safetensors into `dir`, the
    /// weights in `kind` (f32, or f16 for half the size); returns the weights' path.
    pub fn save(&self, dir: &Path, kind: Kind) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let mut file = self.file.clone();
        file.data.symbol_table = Some(file.data.symbols.table().into_iter().collect());
        let cfg_path = dir.join(CONFIG_FILE);
        let text = serde_json::to_string_pretty(&file).map_err(|e| Error::Config(e.to_string()))?;
        zoo_core::fsutil::atomic_write_bytes(&cfg_path, text.as_bytes())?;
        let mut vars: Vec<(String, Tensor)> = self.vs.variables().into_iter().collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        let vars = vars.into_iter().map(|(n, t)| Ok((n, t.f_to_kind(kind)?))).collect::<Result<Vec<_>>>()?;
        let p = dir.join(WEIGHTS_FILE);
        zoo_core::weights::save(&p, &vars, None)?;
        Ok(p)
    }

    /// Trainable parameters.
    pub fn n_params(&self) -> i64 {
        self.vs.trainable_variables().iter().map(|t| t.numel() as i64).sum()
    }

    /// Text -> log-mel (n_mels, frames) for each piece, joined and kept within the front end's
    /// range (see below), and the pieces and dropped characters. Errors: empty text, nothing left after dropping characters outside the
    /// symbol set, phonemes without espeak-ng, bad scales.
    pub fn text_to_mel(&self, text: &str, o: &SpeakOptions) -> Result<(Tensor, Vec<String>, Vec<char>)> {
        // The whole text first: its errors (empty, nothing to say) and the dropped characters.
        let (_, dropped) = self.file.encode(text)?;
        let pieces: Vec<String> = split_sentences(&normalize(text), o.max_chars)
            .into_iter()
            .filter(|p| self.file.encode(p).is_ok())
            .collect();
        if pieces.is_empty() {
            return Err(Error::Input(format!("nothing to say in {text:?}")));
        }
        let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(o.seed);
        let device = self.vs.device();
        let mut mels = Vec::with_capacity(pieces.len());
        for p in &pieces {
            let (ids, _) = self.file.encode(p)?;
            let n = ids.len() as i64;
            let ids = Tensor::f_from_slice(&ids)?.f_view([1, n])?.f_to_device(device)?;
            let lengths = Tensor::f_from_slice(&[n])?.f_to_device(device)?;
            let out = tch::no_grad(|| {
                self.model.infer(&ids, &lengths, o.noise_scale, o.length_scale, Some(&mut rng))
            })?;
            let len = out.lengths.f_int64_value(&[0])?;
            mels.push(out.mel.f_select(0, 0)?.f_narrow(1, 0, len)?);
        }
        let mel = Tensor::f_cat(&mels, 1)?.f_to_device(Device::Cpu)?.f_to_kind(Kind::Float)?;
        // Within the front end's range: its floor ln 1e-5 below, and e^5 above (far above what
        // audio in [-1, 1] gives), since a barely trained model can give values whose exp
        // overflows, and Griffin-Lim would turn them into NaN.
        let (floor, ceiling) = (LOG_MEL_FLOOR, LOG_MEL_CEILING);
        let mel = mel.f_nan_to_num(floor, ceiling, floor)?.f_clamp(floor, ceiling)?;
        Ok((mel, pieces, dropped))
    }

    /// Text -> speech through the model's vocoder (see the module docs).
    pub fn speak(&self, text: &str, o: &SpeakOptions) -> Result<Speech> {
        let (mel, pieces, dropped) = self.text_to_mel(text, o)?;
        let cfg = &self.file.data.mel;
        let floor = LOG_MEL_FLOOR;
        // Both vocoders need more than n_fft / 2 samples (Griffin-Lim's and the denoiser's
        // STFT): pad a very short mel with silence.
        let min_frames = cfg.n_fft / 2 / cfg.hop_length + 2;
        let frames = mel.size()[1];
        let padded =
            if frames < min_frames { mel.f_pad([0, min_frames - frames], "constant", floor)? } else { mel };
        let wave = match &self.vocoding {
            Vocoding::GriffinLim => {
                let gl = GriffinLimConfig { seed: Some(o.seed), ..o.griffin_lim.clone() };
                GriffinLim::new(cfg, Device::Cpu)?.vocode(&padded, &gl, None)?.f_clamp(-1.0, 1.0)?
            }
            Vocoding::WaveGlow(w) => w.vocode(&padded, o.waveglow_sigma, o.denoiser, o.seed)?,
        };
        let audio = Audio::new(wave, cfg.sample_rate)?;
        Ok(Speech { audio, mel: padded, pieces, dropped })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preset_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/tts")
    }

    #[test]
    fn tts_presets_parse_and_validate() {
        for name in ["glow-tts-small", "glow-tts-tiny"] {
            let f = TtsFile::from_json_file(&preset_dir().join(format!("{name}.json"))).unwrap();
            assert_eq!(f.model.n_vocab, f.data.symbols.len() as i64, "{name}");
        }
        let mut bad = TtsFile::tiny();
        bad.model.n_vocab += 1;
        assert!(bad.validate().unwrap_err().to_string().contains("n_vocab"));
        let mut bad = TtsFile::tiny();
        bad.data.mel.n_mels = 40;
        assert!(bad.validate().unwrap_err().to_string().contains("n_mels"));
        let mut bad = TtsFile::tiny();
        bad.data.symbol_table = Some("_abc".into());
        assert!(bad.validate().unwrap_err().to_string().contains("symbol_table"));
    }

    #[test]
    fn tts_model_folder_round_trips_in_f16_and_speaks() {
        tch::manual_seed(0);
        let m = TtsModel::new(&TtsFile::tiny(), Device::Cpu).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // Never trained: refused on load.
        m.save(dir.path(), Kind::Float).unwrap();
        let err = TtsModel::load(dir.path(), Device::Cpu).err().unwrap().to_string();
        assert!(err.contains("never trained"), "{err}");
        // One forward pass initialises the ActNorms.
        let mel = Tensor::randn([1, 80, 20], (Kind::Float, Device::Cpu));
        let ids = Tensor::from_slice(&[0i64, 5, 0, 6, 0]).view([1, 5]);
        m.model.loss(&ids, &Tensor::from_slice(&[5i64]), &mel, &Tensor::from_slice(&[20i64]), false).unwrap();
        m.save(dir.path(), Kind::Half).unwrap();
        let back = TtsModel::load(dir.path(), Device::Cpu).unwrap();
        assert_eq!(
            back.file.data.symbol_table.as_deref().map(|t| t.chars().count()),
            Some(Symbols::Characters.len())
        );
        for (name, v) in m.vs.variables() {
            let w = &back.vs.variables()[&name];
            assert_eq!(w.kind(), Kind::Float);
            let err = (v - w).abs().max().double_value(&[]);
            assert!(err < 1e-2, "{name}: {err}");
        }
        // Speech: the same seed gives the same samples; bad text is refused.
        let o = SpeakOptions {
            griffin_lim: GriffinLimConfig { n_iter: 2, ..Default::default() },
            ..Default::default()
        };
        let a = back.speak("Hello there, café!", &o).unwrap();
        // Other draws from libtorch's generator (another thread's, say) change nothing.
        tch::manual_seed(12345);
        let _ = Tensor::randn([7], (Kind::Float, Device::Cpu));
        let b = back.speak("Hello there, café!", &o).unwrap();
        assert_eq!(a.dropped, vec!['é']);
        assert_eq!(a.pieces, vec!["hello there, café!".to_string()]);
        assert_eq!(a.audio.sample_rate, 22050);
        assert_eq!((a.audio.samples.copy() - &b.audio.samples).abs().max().double_value(&[]), 0.0);
        assert_eq!(a.mel.size()[0], 80);
        // Whatever an untrained model gives, the mel is in range and the audio finite.
        let (lo, hi) = (a.mel.min().double_value(&[]), a.mel.max().double_value(&[]));
        assert!(lo >= LOG_MEL_FLOOR - 1e-6 && hi <= LOG_MEL_CEILING, "{lo} {hi}");
        assert_eq!(a.audio.samples.isfinite().all().int64_value(&[]), 1);
        let long = "One two three. Four five six. Seven eight nine.";
        let s = back.speak(long, &SpeakOptions { max_chars: 17, ..o.clone() }).unwrap();
        assert_eq!(s.pieces, vec!["one two three.", "four five six.", "seven eight nine."]);
        assert!(back.speak("  ", &o).unwrap_err().to_string().contains("empty"));
        assert!(back.speak("日本", &o).unwrap_err().to_string().contains("nothing to say"));
        assert!(back.speak("hi", &SpeakOptions { length_scale: 0.0, ..o }).is_err());
    }

    /// A tiny WaveGlow on `mel`'s front end, saved into `dir`.
    fn tiny_waveglow(dir: &Path, mel: &MelConfig) {
        use crate::waveglow::{Config, DataConfig, ModelFile, TrainConfig};
        let file = ModelFile {
            description: String::new(),
            waveglow_config: Config { n_mel_channels: mel.n_mels, ..Config::tiny() },
            data_config: DataConfig {
                segment_length: 1024,
                sampling_rate: mel.sample_rate,
                filter_length: mel.n_fft,
                hop_length: mel.hop_length,
                win_length: mel.win_length,
                mel_fmin: mel.fmin,
                mel_fmax: mel.fmax,
            },
            train_config: TrainConfig {
                sigma: 1.0,
                learning_rate: 1e-3,
                batch_size: 1,
                steps: 1,
                clip_grad: None,
            },
        };
        let v = Vocoder::new(&file, Device::Cpu).unwrap();
        // WN's zero-initialised ends would make every coupling the identity (and the bias the
        // denoiser removes zero): give them weights.
        tch::no_grad(|| {
            for (name, t) in v.vs.variables() {
                if name.contains(".end.") {
                    t.shallow_clone().copy_(&(Tensor::randn_like(&t) * 0.1));
                }
            }
        });
        v.save(dir).unwrap();
    }

    #[test]
    fn tts_model_speaks_through_a_waveglow_of_its_front_end() {
        tch::manual_seed(1);
        let mut m = TtsModel::new(&TtsFile::tiny(), Device::Cpu).unwrap();
        let dir = tempfile::tempdir().unwrap();
        // A WaveGlow of another front end is refused, naming both.
        let other = dir.path().join("8k");
        tiny_waveglow(&other, &MelConfig::speech_8k());
        let err = m.use_waveglow(&other).err().unwrap().to_string();
        assert!(err.contains("8000 Hz") && err.contains("22050 Hz"), "{err}");
        assert_eq!(m.vocoding.name(), "griffin-lim");
        let wg = dir.path().join("22k");
        tiny_waveglow(&wg, &m.file.data.mel);
        m.use_waveglow(&wg).unwrap();
        assert_eq!(m.vocoding.name(), "waveglow");
        let o = SpeakOptions::default();
        let a = m.speak("one two", &o).unwrap();
        // One hop of samples per mel frame, finite and in range.
        assert_eq!(a.audio.len(), a.mel.size()[1] * m.file.data.mel.hop_length);
        let x = &a.audio.samples;
        assert_eq!(x.isfinite().all().int64_value(&[]), 1);
        assert!(x.abs().max().double_value(&[]) <= 1.0);
        // The same seed gives the same samples whatever libtorch's generator does; another
        // seed other ones; sigma 0 none of the vocoder's noise; a denoiser changes them.
        tch::manual_seed(99);
        let b = m.speak("one two", &o).unwrap();
        assert_eq!((x - &b.audio.samples).abs().max().double_value(&[]), 0.0);
        let c = m.speak("one two", &SpeakOptions { seed: 5, ..o.clone() }).unwrap();
        assert!((x - &c.audio.samples).abs().max().double_value(&[]) > 0.0);
        // (the acoustic model's noise off too: the seed draws it as well)
        let quiet = SpeakOptions { waveglow_sigma: 0.0, noise_scale: 0.0, ..o.clone() };
        let z0 = m.speak("one two", &quiet).unwrap();
        let z1 = m.speak("one two", &SpeakOptions { seed: 5, ..quiet }).unwrap();
        assert_eq!((&z0.audio.samples - &z1.audio.samples).abs().max().double_value(&[]), 0.0);
        let d = m.speak("one two", &SpeakOptions { denoiser: 0.5, ..o.clone() }).unwrap();
        assert!((x - &d.audio.samples).abs().max().double_value(&[]) > 1e-4);
        assert!(m.speak("one two", &SpeakOptions { waveglow_sigma: -1.0, ..o }).is_err());
    }
}
