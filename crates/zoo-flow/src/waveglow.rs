//! WaveGlow: a flow-based vocoder, mel spectrogram -> waveform (Prenger, Valle & Catanzaro 2018,
//! "WaveGlow: A Flow-based Generative Network for Speech Synthesis").
//!
//! Mirrors NVIDIA/waveglow `glow.py` (`WaveGlow`, `WaveGlowLoss`, `infer`) with its module names,
//! so its published checkpoint, converted by `tools/convert_waveglow.py` (weight norm folded in),
//! loads 1:1: `upsample` (ConvTranspose1d, kernel 1024, stride 256), `convinv.k.conv.weight`,
//! `WN.k.{start,end,cond_layer,in_layers.i,res_skip_layers.i}`.
//!
//! The flow: audio is grouped into `n_group` channels ([`squeeze`]); each of `n_flows` steps is an
//! invertible 1x1 conv and an affine coupling whose WN conditioner also sees the upsampled,
//! equally grouped mel; every `n_early_every` steps `n_early_size` channels leave early.
//! `tests/tests/flow_golden.rs` holds this file to a PyTorch re-implementation.
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use tch::{nn, nn::VarStore, Device, Kind, Tensor};
use zoo_core::audio::MelConfig;

use crate::layers::{squeeze, unsqueeze, AffineCoupling, Flow, Invertible1x1Conv};
use crate::wn::{Wn, WnConfig};
use crate::{Error, Result};

/// NVIDIA's upsampler geometry (hard-coded in glow.py): one mel frame per hop of 256 samples,
/// each frame spread over 1024 samples. The defaults of `upsample_stride` / `upsample_kernel`.
pub const UPSAMPLE_KERNEL: i64 = 1024;
pub const UPSAMPLE_STRIDE: i64 = 256;

fn default_upsample_kernel() -> i64 {
    UPSAMPLE_KERNEL
}
fn default_upsample_stride() -> i64 {
    UPSAMPLE_STRIDE
}
fn is_default_kernel(k: &i64) -> bool {
    *k == UPSAMPLE_KERNEL
}
fn is_default_stride(s: &i64) -> bool {
    *s == UPSAMPLE_STRIDE
}

/// `waveglow_config` of NVIDIA's config.json.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Config {
    pub n_mel_channels: i64,
    pub n_flows: i64,
    pub n_group: i64,
    pub n_early_every: i64,
    pub n_early_size: i64,
    #[serde(rename = "WN_config")]
    pub wn_config: WnConfig,
    /// The upsampler's stride: samples per mel frame, the mel's hop. NVIDIA hard-codes 256 (its
    /// 22.05 kHz front end); other front ends set their hop here. Written only when not 256, so
    /// NVIDIA's code still reads our 22.05 kHz configs.
    #[serde(default = "default_upsample_stride", skip_serializing_if = "is_default_stride")]
    pub upsample_stride: i64,
    /// The upsampler's kernel: samples each mel frame is spread over (NVIDIA: 1024, 4 hops).
    #[serde(default = "default_upsample_kernel", skip_serializing_if = "is_default_kernel")]
    pub upsample_kernel: i64,
}

impl Config {
    /// The published 22.05 kHz model (`waveglow_256channels`).
    pub fn waveglow_22k() -> Self {
        Config {
            n_mel_channels: 80,
            n_flows: 12,
            n_group: 8,
            n_early_every: 4,
            n_early_size: 2,
            wn_config: WnConfig { n_layers: 8, n_channels: 256, kernel_size: 3 },
            upsample_stride: UPSAMPLE_STRIDE,
            upsample_kernel: UPSAMPLE_KERNEL,
        }
    }

    /// For tests: 4 mels, 4 flows over groups of 4 samples, one early output.
    pub fn tiny() -> Self {
        Config {
            n_mel_channels: 4,
            n_flows: 4,
            n_group: 4,
            n_early_every: 2,
            n_early_size: 2,
            wn_config: WnConfig { n_layers: 2, n_channels: 8, kernel_size: 3 },
            upsample_stride: UPSAMPLE_STRIDE,
            upsample_kernel: UPSAMPLE_KERNEL,
        }
    }

    /// Channels still in the flow at step k.
    fn channels_at(&self, k: i64) -> i64 {
        let early = if self.n_early_every > 0 { (k / self.n_early_every) * self.n_early_size } else { 0 };
        self.n_group - early
    }

    fn is_early(&self, k: i64) -> bool {
        k > 0 && k % self.n_early_every == 0
    }

    /// Channels of z drawn at the last step of the flow (NVIDIA's `n_remaining_channels`).
    pub fn n_remaining_channels(&self) -> i64 {
        self.channels_at(self.n_flows - 1)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::Config(format!("waveglow_config: {m}")));
        if self.n_mel_channels < 1 || self.n_flows < 1 || self.n_early_every < 1 || self.n_early_size < 0 {
            return bad(format!("sizes must be positive: {self:?}"));
        }
        if self.n_group < 2 || self.n_group % 2 != 0 {
            return bad(format!("n_group must be even and at least 2, got {}", self.n_group));
        }
        if self.n_early_size % 2 != 0 {
            return bad(format!("n_early_size must be even, got {}", self.n_early_size));
        }
        if self.upsample_stride < 1 || self.upsample_kernel < self.upsample_stride {
            return bad(format!(
                "the upsampler needs 1 <= upsample_stride <= upsample_kernel, got stride {} and kernel {}",
                self.upsample_stride, self.upsample_kernel
            ));
        }
        if self.upsample_stride % self.n_group != 0 {
            return bad(format!(
                "n_group {} must divide the upsampler's stride (the mel hop) {}",
                self.n_group, self.upsample_stride
            ));
        }
        if self.n_remaining_channels() < 2 {
            return bad(format!(
                "{} flows with {} early channels every {} leave {} channels of {}; at least 2 must remain",
                self.n_flows,
                self.n_early_size,
                self.n_early_every,
                self.n_remaining_channels(),
                self.n_group
            ));
        }
        self.wn_config.validate()
    }
}

/// What [`WaveGlow::forward`] returns.
pub struct ForwardOutput {
    /// (B, n_group, T / n_group): early outputs first, in the order they left.
    pub z: Tensor,
    /// Sum of log s over the couplings, per example (B).
    pub log_s: Tensor,
    /// Sum of the 1x1 convs' log|det W| times the number of groups, per example (B).
    pub log_det_w: Tensor,
}

impl ForwardOutput {
    /// WaveGlow's loss (`WaveGlowLoss`): (sum z^2 / (2 sigma^2) - sum log s - sum log det W)
    /// divided by the number of samples. The negative log-likelihood per sample in nats up to
    /// the constant 0.5 log(2 pi sigma^2).
    pub fn loss(&self, sigma: f64) -> Result<Tensor> {
        let n = self.z.numel() as f64;
        let zz = self.z.f_square()?.f_sum(self.z.kind())?.f_div_scalar(2.0 * sigma * sigma)?;
        let ld = self.log_s.f_sum(self.z.kind())?.f_add(&self.log_det_w.f_sum(self.z.kind())?)?;
        Ok(zz.f_sub(&ld)?.f_div_scalar(n)?)
    }

    /// The exact negative log-likelihood of the (continuous) audio under N(0, sigma^2) noise,
    /// in bits per sample: (loss + 0.5 log(2 pi sigma^2)) / ln 2.
    pub fn nll_bits_per_sample(&self, sigma: f64) -> Result<f64> {
        let loss = self.loss(sigma)?.f_double_value(&[])?;
        Ok((loss + 0.5 * (2.0 * std::f64::consts::PI * sigma * sigma).ln()) / std::f64::consts::LN_2)
    }
}

/// The WaveGlow model.
pub struct WaveGlow {
    pub cfg: Config,
    upsample_w: Tensor,
    upsample_b: Option<Tensor>,
    convinv: Vec<Invertible1x1Conv>,
    /// Coupling k, whose conditioner is `WN.k`.
    couplings: Vec<AffineCoupling<Wn>>,
}

impl WaveGlow {
    pub fn new(p: nn::Path, cfg: &Config) -> Result<Self> {
        cfg.validate()?;
        let m = cfg.n_mel_channels;
        let up = nn::conv_transpose1d(
            &p / "upsample",
            m,
            m,
            cfg.upsample_kernel,
            nn::ConvTransposeConfig { stride: cfg.upsample_stride, ..Default::default() },
        );
        let mut convinv = Vec::new();
        let mut couplings = Vec::new();
        for k in 0..cfg.n_flows {
            let c = cfg.channels_at(k);
            convinv.push(Invertible1x1Conv::new(&p / "convinv" / k, c, false)?);
            let wn = Wn::new(&p / "WN" / k, c / 2, m * cfg.n_group, &cfg.wn_config)?;
            couplings.push(AffineCoupling::new(wn, c)?);
        }
        Ok(WaveGlow { cfg: cfg.clone(), upsample_w: up.ws, upsample_b: up.bs, convinv, couplings })
    }

    /// The device of the model's variables.
    pub fn device(&self) -> Device {
        self.upsample_w.device()
    }

    fn check_mel(&self, mel: &Tensor) -> Result<(i64, i64)> {
        match mel.size()[..] {
            [b, m, f] if m == self.cfg.n_mel_channels && f > 0 => Ok((b, f)),
            [_, m, _] if m != self.cfg.n_mel_channels => Err(Error::Input(format!(
                "the model takes {} mel channels, the mel has {m}",
                self.cfg.n_mel_channels
            ))),
            ref s => Err(Error::Input(format!(
                "expected a mel of shape (B, {}, frames), got {s:?}",
                self.cfg.n_mel_channels
            ))),
        }
    }

    /// Samples per mel frame (the upsampler's stride; 256 in NVIDIA's model).
    pub fn hop(&self) -> i64 {
        self.cfg.upsample_stride
    }

    /// Shapes: (B, M, F) -> (B, M, (F - 1) * stride + kernel); NVIDIA's (F - 1) * 256 + 1024.
    pub fn upsample(&self, mel: &Tensor) -> Result<Tensor> {
        self.check_mel(mel)?;
        let mel = mel.f_to_kind(self.upsample_w.kind())?;
        Ok(mel.f_conv_transpose1d(
            &self.upsample_w,
            self.upsample_b.as_ref(),
            [self.cfg.upsample_stride],
            [0],
            [0],
            1,
            [1],
        )?)
    }

    /// Audio -> noise. Shapes: mel (B, M, F), audio (B, T) -> z (B, n_group, T' / n_group),
    /// with T' = T rounded down to a multiple of n_group (NVIDIA's `unfold` drops the rest).
    /// The upsampled mel, (F - 1) stride + kernel long, must cover the audio; it is cut to its
    /// length.
    pub fn forward(&self, mel: &Tensor, audio: &Tensor) -> Result<ForwardOutput> {
        let g = self.cfg.n_group;
        let (b, t) = match audio.size()[..] {
            [b, t] => (b, t),
            ref s => return Err(Error::Input(format!("expected audio of shape (B, T), got {s:?}"))),
        };
        let (bm, _) = self.check_mel(mel)?;
        if bm != b {
            return Err(Error::Input(format!("{bm} mels for {b} waveforms")));
        }
        // 1. upsample the mel to the audio's rate and group both into n_group channels
        let spect = self.upsample(mel)?;
        let t_up = spect.size()[2];
        if t_up < t {
            return Err(Error::Input(format!(
                "the mel covers {t_up} samples, fewer than the audio's {t}: it needs {} frames",
                (t - self.cfg.upsample_kernel + self.hop() - 1).div_euclid(self.hop()) + 1
            )));
        }
        let t_use = t - t % g;
        if t_use == 0 {
            return Err(Error::Input(format!("audio of {t} samples is shorter than one group of {g}")));
        }
        let spect = squeeze(&spect.f_narrow(2, 0, t_use)?, g)?;
        let mut x = squeeze(&audio.f_to_kind(spect.kind())?.f_narrow(1, 0, t_use)?.f_unsqueeze(1)?, g)?;
        // 2. the flow steps, with early outputs
        let mut outputs = Vec::new();
        let zeros = Tensor::f_zeros([b], (spect.kind(), spect.device()))?;
        let (mut log_s_total, mut log_det_w_total) = (zeros.shallow_clone(), zeros);
        for (k, (conv, coupling)) in self.convinv.iter().zip(&self.couplings).enumerate() {
            if self.cfg.is_early(k as i64) {
                outputs.push(x.f_narrow(1, 0, self.cfg.n_early_size)?);
                let c = x.size()[1];
                x = x.f_narrow(1, self.cfg.n_early_size, c - self.cfg.n_early_size)?;
            }
            let (y, ld) = conv.forward(&x, None)?;
            let (y, log_s) = coupling.forward_with_log_s(&y, Some(&spect))?;
            log_det_w_total = log_det_w_total.f_add(&ld)?;
            log_s_total =
                log_s_total.f_add(&log_s.f_sum_dim_intlist([1i64, 2].as_slice(), false, log_s.kind())?)?;
            x = y;
        }
        outputs.push(x);
        Ok(ForwardOutput { z: Tensor::f_cat(&outputs, 1)?, log_s: log_s_total, log_det_w: log_det_w_total })
    }

    /// The conditioning of inference: the upsampled mel without its last kernel - stride
    /// samples (NVIDIA's "trim conv artifacts"), grouped. Shapes: (B, M, F) -> (B, M g, F hop / g).
    fn infer_spect(&self, mel: &Tensor) -> Result<Tensor> {
        let spect = self.upsample(mel)?;
        let t = spect.size()[2] - (self.cfg.upsample_kernel - self.hop());
        squeeze(&spect.f_narrow(2, 0, t)?, self.cfg.n_group)
    }

    /// Noise -> audio: the exact inverse of [`WaveGlow::forward`] for audio of F * hop samples.
    /// Shapes: mel (B, M, F), z (B, n_group, F hop / n_group) -> (B, F hop).
    pub fn inverse(&self, mel: &Tensor, z: &Tensor) -> Result<Tensor> {
        let spect = self.infer_spect(mel)?;
        let want = [spect.size()[0], self.cfg.n_group, spect.size()[2]];
        if z.size() != want {
            return Err(Error::Input(format!("z must be {want:?} for this mel, got {:?}", z.size())));
        }
        let z = z.f_to_kind(spect.kind())?;
        let n_early_total = self.cfg.n_group - self.cfg.n_remaining_channels();
        let mut x = z.f_narrow(1, n_early_total, self.cfg.n_remaining_channels())?;
        for k in (0..self.cfg.n_flows).rev() {
            let ku = k as usize;
            x = self.couplings[ku].inverse(&x, Some(&spect))?;
            x = self.convinv[ku].inverse(&x, None)?;
            if self.cfg.is_early(k) {
                let j = k / self.cfg.n_early_every - 1;
                let early = z.f_narrow(1, j * self.cfg.n_early_size, self.cfg.n_early_size)?;
                x = Tensor::f_cat(&[&early, &x], 1)?;
            }
        }
        Ok(unsqueeze(&x, self.cfg.n_group)?.f_squeeze_dim(1)?)
    }

    /// Inference (NVIDIA's `infer`): z ~ N(0, sigma^2) ([`WaveGlow::draw_z`]), then
    /// [`WaveGlow::inverse`]. Shapes: (B, M, F) -> (B, F hop).
    pub fn infer(&self, mel: &Tensor, sigma: f64) -> Result<Tensor> {
        let (b, f) = self.check_mel(mel)?;
        self.inverse(mel, &self.draw_z(b, f, sigma)?)
    }

    /// The noise of inference for B mels of F frames, from libtorch's generator, drawn in
    /// NVIDIA's order (the last step's channels first, then each early output from the last to
    /// the first), so after the same seed the same z is drawn as PyTorch draws.
    /// Shapes: -> (B, n_group, F hop / n_group).
    pub fn draw_z(&self, b: i64, f: i64, sigma: f64) -> Result<Tensor> {
        let t = f * self.hop() / self.cfg.n_group;
        let opts = (self.upsample_w.kind(), self.upsample_w.device());
        let last = Tensor::f_randn([b, self.cfg.n_remaining_channels(), t], opts)?;
        let n_early = (self.cfg.n_flows - 1) / self.cfg.n_early_every;
        let mut early: Vec<Tensor> = (0..n_early)
            .map(|_| Tensor::f_randn([b, self.cfg.n_early_size, t], opts))
            .collect::<Result<_, _>>()?;
        early.reverse(); // drawn last-to-first, laid out first-to-last
        early.push(last);
        Ok(Tensor::f_cat(&early, 1)?.f_mul_scalar(sigma)?)
    }

    /// Mel frames on each side of a chunk that [`WaveGlow::inverse_chunked`] adds, so that the
    /// chunk's own samples are those of the whole inverse: every coupling's WN sees
    /// sum_i 2^i (kernel - 1) / 2 groups to each side, the flows stack them, and the upsampler
    /// spreads a frame over `upsample_kernel` samples.
    pub fn context_frames(&self) -> i64 {
        let wn = &self.cfg.wn_config;
        let per_coupling: i64 = (0..wn.n_layers).map(|i| (1i64 << i) * (wn.kernel_size - 1) / 2).sum();
        let samples = per_coupling * self.cfg.n_flows * self.cfg.n_group;
        let hop = self.hop();
        (samples + hop - 1) / hop + (self.cfg.upsample_kernel + hop - 1) / hop
    }

    /// [`WaveGlow::inverse`] a chunk of `chunk_frames` mel frames at a time, each with
    /// [`WaveGlow::context_frames`] of context on both sides, so a long mel needs memory for one
    /// chunk only and `progress(frames done, frames)` is called after each; the result equals
    /// the whole inverse (up to the rounding of convolutions of other lengths).
    /// Shapes: mel (B, M, F), z (B, n_group, F hop / n_group) -> (B, F hop).
    pub fn inverse_chunked(
        &self,
        mel: &Tensor,
        z: &Tensor,
        chunk_frames: i64,
        mut progress: impl FnMut(i64, i64),
    ) -> Result<Tensor> {
        let (b, f) = self.check_mel(mel)?;
        if chunk_frames < 1 {
            return Err(Error::Input(format!("chunks must hold at least one frame, got {chunk_frames}")));
        }
        let (hop, g) = (self.hop(), self.cfg.n_group);
        let want = [b, g, f * hop / g];
        if z.size() != want {
            return Err(Error::Input(format!("z must be {want:?} for this mel, got {:?}", z.size())));
        }
        let context = self.context_frames();
        let mut parts = Vec::new();
        let mut start = 0;
        while start < f {
            let end = (start + chunk_frames).min(f);
            let (lo, hi) = ((start - context).max(0), (end + context).min(f));
            let y = self.inverse(
                &mel.f_narrow(2, lo, hi - lo)?,
                &z.f_narrow(2, lo * hop / g, (hi - lo) * hop / g)?,
            )?;
            parts.push(y.f_narrow(1, (start - lo) * hop, (end - start) * hop)?);
            progress(end, f);
            start = end;
        }
        Ok(Tensor::f_cat(&parts, 1)?)
    }
}

/// `data_config` of NVIDIA's config.json: the mel front end and the training crop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DataConfig {
    pub segment_length: i64,
    pub sampling_rate: u32,
    pub filter_length: i64,
    pub hop_length: i64,
    pub win_length: i64,
    pub mel_fmin: f64,
    pub mel_fmax: Option<f64>,
}

impl DataConfig {
    /// The mel front end for a model with `n_mels` channels.
    pub fn mel_config(&self, n_mels: i64) -> MelConfig {
        MelConfig {
            sample_rate: self.sampling_rate,
            n_fft: self.filter_length,
            hop_length: self.hop_length,
            win_length: self.win_length,
            n_mels,
            fmin: self.mel_fmin,
            fmax: self.mel_fmax,
        }
    }
}

/// `train_config` of NVIDIA's config.json (the keys we use), plus the run length.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainConfig {
    /// The standard deviation of z the loss assumes.
    pub sigma: f64,
    pub learning_rate: f64,
    pub batch_size: i64,
    /// Optimiser steps of a run (NVIDIA counts epochs; FSDD is tiny, so we count steps).
    #[serde(default = "default_steps")]
    pub steps: u64,
    /// Clip the gradient norm (NVIDIA does not; a small model at a high rate likes it).
    #[serde(default)]
    pub clip_grad: Option<f64>,
}

fn default_steps() -> u64 {
    1000
}

/// A preset or a model folder's config.json: NVIDIA's config.json layout, so theirs parses.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelFile {
    #[serde(default)]
    pub description: String,
    pub waveglow_config: Config,
    pub data_config: DataConfig,
    pub train_config: TrainConfig,
}

impl ModelFile {
    pub fn from_json_file(path: &Path) -> Result<Self> {
        let text = zoo_core::presets::read(path)?;
        let f: ModelFile = serde_json::from_str(&text)
            .map_err(|e| Error::ConfigFile { path: path.to_path_buf(), msg: e.to_string() })?;
        f.validate().map_err(|e| Error::ConfigFile { path: path.to_path_buf(), msg: e.to_string() })?;
        Ok(f)
    }

    pub fn validate(&self) -> Result<()> {
        self.waveglow_config.validate()?;
        self.mel_config().validate()?;
        let stride = self.waveglow_config.upsample_stride;
        if self.data_config.hop_length != stride {
            return Err(Error::Config(format!(
                "data_config: hop_length {} must equal waveglow_config's upsample_stride {stride} (one mel frame per stride)",
                self.data_config.hop_length
            )));
        }
        let t = &self.train_config;
        if !(t.sigma > 0.0 && t.learning_rate > 0.0 && t.batch_size > 0) {
            return Err(Error::Config(format!(
                "train_config: sigma, learning_rate and batch_size must be positive: {t:?}"
            )));
        }
        if self.data_config.segment_length < self.waveglow_config.n_group {
            return Err(Error::Config("data_config: segment_length is shorter than one group".into()));
        }
        Ok(())
    }

    pub fn mel_config(&self) -> MelConfig {
        self.data_config.mel_config(self.waveglow_config.n_mel_channels)
    }
}

/// A WaveGlow with its variables and config: what a model folder (config.json +
/// model.safetensors) holds.
pub struct Vocoder {
    pub vs: VarStore,
    pub model: WaveGlow,
    pub file: ModelFile,
}

pub const WEIGHTS_FILE: &str = "model.safetensors";
pub const CONFIG_FILE: &str = "config.json";

impl Vocoder {
    /// A freshly initialised model on `device` (f32).
    pub fn new(file: &ModelFile, device: Device) -> Result<Self> {
        file.validate()?;
        let vs = VarStore::new(device);
        let model = WaveGlow::new(vs.root(), &file.waveglow_config)?;
        Ok(Vocoder { vs, model, file: file.clone() })
    }

    /// Loads a model folder strictly (every tensor by name and shape), as `kind`.
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self> {
        let cfg_path = dir.join(CONFIG_FILE);
        if !cfg_path.is_file() {
            return Err(Error::Config(format!(
                "{} is not a WaveGlow model folder (no config.json); make one with `zoo flow train` or tools/convert_waveglow.py",
                dir.display()
            )));
        }
        let file = ModelFile::from_json_file(&cfg_path)?;
        let mut v = Vocoder::new(&file, device)?;
        zoo_core::weights::load_into(&v.vs, &dir.join(WEIGHTS_FILE), &zoo_core::weights::keep_names)?;
        if kind != Kind::Float {
            v.vs.set_kind(kind);
        }
        Ok(v)
    }

    /// Writes config.json and model.safetensors into `dir`; returns the weights' path.
    pub fn save(&self, dir: &Path) -> Result<PathBuf> {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
        let cfg_path = dir.join(CONFIG_FILE);
        let text = serde_json::to_string_pretty(&self.file).map_err(|e| Error::Config(e.to_string()))?;
        zoo_core::fsutil::atomic_write(&cfg_path, |w| {
            std::io::Write::write_all(w, text.as_bytes()).map_err(|e| zoo_core::Error::io(&cfg_path, e))
        })?;
        let p = dir.join(WEIGHTS_FILE);
        zoo_core::weights::save_varstore(&self.vs, &p)?;
        Ok(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layers::tests::max_diff;

    fn randomise_ends(vs: &VarStore) {
        tch::no_grad(|| {
            for (name, v) in vs.variables() {
                if name.contains(".end.") {
                    v.shallow_clone().f_copy_(&(Tensor::randn_like(&v) * 0.1)).unwrap();
                }
            }
        });
    }

    #[test]
    fn names_and_shapes_follow_nvidia() {
        let vs = VarStore::new(Device::Cpu);
        let cfg = Config::tiny();
        let _m = WaveGlow::new(vs.root(), &cfg).unwrap();
        let v = vs.variables();
        assert_eq!(v["upsample.weight"].size(), vec![4, 4, 1024]);
        assert_eq!(v["upsample.bias"].size(), vec![4]);
        assert_eq!(v["convinv.0.conv.weight"].size(), vec![4, 4, 1]);
        // one early output of 2 channels at k = 2
        assert_eq!(v["convinv.2.conv.weight"].size(), vec![2, 2, 1]);
        assert_eq!(v["WN.1.start.weight"].size(), vec![8, 2, 1]);
        assert_eq!(v["WN.3.start.weight"].size(), vec![8, 1, 1]);
        assert_eq!(v["WN.0.cond_layer.weight"].size(), vec![2 * 8 * 2, 16, 1]);
        assert_eq!(v["WN.3.end.weight"].size(), vec![2, 8, 1]);
        assert_eq!(cfg.n_remaining_channels(), 2);
        // the published config: 12 flows, 8 -> 6 -> 4 -> 2 channels... as NVIDIA computes
        let big = Config::waveglow_22k();
        assert_eq!(big.n_remaining_channels(), 4);
        assert_eq!(
            (0..12).map(|k| big.channels_at(k)).collect::<Vec<_>>(),
            [8, 8, 8, 8, 6, 6, 6, 6, 4, 4, 4, 4]
        );
    }

    #[test]
    fn bad_configs_are_errors() {
        let t = Config::tiny();
        for bad in [
            Config { n_group: 3, ..t.clone() },
            Config { n_early_size: 1, ..t.clone() },
            Config { n_flows: 7, ..t.clone() }, // 4 - 3 * 2 channels left
            Config { n_early_every: 0, ..t.clone() },
            Config { upsample_stride: 18, ..t.clone() }, // n_group 4 does not divide it
            Config { upsample_stride: 64, upsample_kernel: 32, ..t.clone() },
            Config { upsample_stride: 0, ..t.clone() },
        ] {
            assert!(WaveGlow::new(VarStore::new(Device::Cpu).root(), &bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn whole_model_inverts() {
        let vs = VarStore::new(Device::Cpu);
        let m = WaveGlow::new(vs.root(), &Config::tiny()).unwrap();
        randomise_ends(&vs);
        let mel = Tensor::randn([2, 4, 3], (Kind::Float, Device::Cpu));
        let audio = Tensor::randn([2, 3 * 256], (Kind::Float, Device::Cpu)) * 0.3;
        let out = m.forward(&mel, &audio).unwrap();
        assert_eq!(out.z.size(), vec![2, 4, 192]);
        assert!(out.log_s.abs().sum(Kind::Float).double_value(&[]) > 1e-3);
        let back = m.inverse(&mel, &out.z).unwrap();
        assert_eq!(back.size(), vec![2, 768]);
        let d = max_diff(&back, &audio);
        assert!(d < 1e-4, "{d}");
        // inference shapes
        let y = m.infer(&mel, 0.6).unwrap();
        assert_eq!(y.size(), vec![2, 768]);
    }

    #[test]
    fn another_upsampler_geometry_inverts() {
        // an 8 ms hop at 8 kHz: 64 samples per frame, each spread over 256
        let cfg = Config { upsample_stride: 64, upsample_kernel: 256, ..Config::tiny() };
        let vs = VarStore::new(Device::Cpu);
        let m = WaveGlow::new(vs.root(), &cfg).unwrap();
        randomise_ends(&vs);
        assert_eq!(vs.variables()["upsample.weight"].size(), vec![4, 4, 256]);
        let mel = Tensor::randn([2, 4, 5], (Kind::Float, Device::Cpu));
        assert_eq!(m.upsample(&mel).unwrap().size(), vec![2, 4, 4 * 64 + 256]);
        let audio = Tensor::randn([2, 5 * 64], (Kind::Float, Device::Cpu)) * 0.3;
        let out = m.forward(&mel, &audio).unwrap();
        let d = max_diff(&m.inverse(&mel, &out.z).unwrap(), &audio);
        assert!(d < 1e-4, "{d}");
        assert_eq!(m.infer(&mel, 0.6).unwrap().size(), vec![2, 320]);
        // the mel must cover the audio: 5 frames cover 4 * 64 + 256 samples
        let long = Tensor::randn([2, 4 * 64 + 257], (Kind::Float, Device::Cpu));
        let e = m.forward(&mel, &long).err().unwrap().to_string();
        assert!(e.contains("needs 6 frames"), "{e}");
        // the geometry is written to config.json only when it is not NVIDIA's
        let json = serde_json::to_value(&cfg).unwrap();
        assert_eq!(json["upsample_stride"], 64);
        assert!(serde_json::to_value(Config::tiny()).unwrap().get("upsample_stride").is_none());
    }

    #[test]
    fn forward_logdet_matches_brute_force_on_a_tiny_model() {
        let mut vs = VarStore::new(Device::Cpu);
        let cfg = Config { n_flows: 3, ..Config::tiny() };
        let m = WaveGlow::new(vs.root(), &cfg).unwrap();
        vs.double();
        randomise_ends(&vs);
        let mel = Tensor::randn([1, 4, 1], (Kind::Double, Device::Cpu));
        // 8 samples: the mel of one frame covers 1024
        let audio = Tensor::randn([1, 8], (Kind::Double, Device::Cpu));
        let out = m.forward(&mel, &audio).unwrap();
        let ours = out.log_s.f_add(&out.log_det_w).unwrap().double_value(&[0]);
        let brute = crate::layers::tests::brute_logdet(
            &|x| m.forward(&mel, &x.reshape([1, 8])).unwrap().z,
            &audio.reshape([1, 1, 8]),
        );
        assert!(ours.abs() > 1e-3);
        assert!((ours - brute).abs() < 1e-8, "{ours} vs {brute}");
    }

    #[test]
    fn loss_is_nvidias_formula_and_inputs_are_checked() {
        let vs = VarStore::new(Device::Cpu);
        let m = WaveGlow::new(vs.root(), &Config::tiny()).unwrap();
        let mel = Tensor::randn([1, 4, 2], (Kind::Float, Device::Cpu));
        let audio = Tensor::randn([1, 512], (Kind::Float, Device::Cpu));
        let out = m.forward(&mel, &audio).unwrap();
        let sigma = 0.7;
        let want = ((&out.z * &out.z).sum(Kind::Double).double_value(&[]) / (2.0 * sigma * sigma)
            - out.log_s.sum(Kind::Double).double_value(&[])
            - out.log_det_w.sum(Kind::Double).double_value(&[]))
            / 512.0;
        assert!((out.loss(sigma).unwrap().double_value(&[]) - want).abs() < 1e-5);
        // log det W of orthonormal init is 0, and the zero `end` makes log s 0
        assert!(out.log_det_w.abs().max().double_value(&[]) < 1e-4);
        assert!(matches!(m.forward(&mel.narrow(1, 0, 3), &audio), Err(Error::Input(_))));
        let e = m.infer(&Tensor::zeros([1, 80, 5], (Kind::Float, Device::Cpu)), 0.6).unwrap_err();
        assert!(e.to_string().contains("takes 4 mel channels"), "{e}");
        assert!(m.forward(&mel, &Tensor::zeros([1, 2000], (Kind::Float, Device::Cpu))).is_err());
        assert!(m.forward(&mel, &Tensor::zeros([512], (Kind::Float, Device::Cpu))).is_err());
        assert!(m.inverse(&mel, &Tensor::zeros([1, 4, 3], (Kind::Float, Device::Cpu))).is_err());
    }

    #[test]
    fn chunked_inverse_equals_the_whole() {
        tch::manual_seed(3);
        let vs = VarStore::new(Device::Cpu);
        let m = WaveGlow::new(vs.root(), &Config::tiny()).unwrap();
        randomise_ends(&vs);
        // The tiny WN (2 layers, kernel 3) sees 1 + 2 groups each side in each of 4 flows: 48
        // samples, under one frame; the upsampler 4 frames.
        assert_eq!(m.context_frames(), 1 + 4);
        let f = 23;
        let mel = Tensor::randn([2, 4, f], (Kind::Float, Device::Cpu));
        let z = m.draw_z(2, f, 0.7).unwrap();
        let whole = m.inverse(&mel, &z).unwrap();
        let mut seen = Vec::new();
        for chunk in [1, 5, 7, 23, 100] {
            let y = m.inverse_chunked(&mel, &z, chunk, |done, all| seen.push((done, all))).unwrap();
            assert_eq!(y.size(), whole.size());
            assert!(max_diff(&y, &whole) < 1e-5, "chunks of {chunk}: {}", max_diff(&y, &whole));
        }
        assert_eq!(&seen[..3], &[(1, 23), (2, 23), (3, 23)]);
        assert_eq!(seen.last(), Some(&(23, 23)));
        // Without context the seams show: a chunk's edge is not the whole's.
        let cut = Tensor::cat(
            &[
                m.inverse(&mel.narrow(2, 0, 10), &z.narrow(2, 0, 640)).unwrap(),
                m.inverse(&mel.narrow(2, 10, 13), &z.narrow(2, 640, 832)).unwrap(),
            ],
            1,
        );
        assert!(max_diff(&cut, &whole) > 1e-3);
        assert!(m.inverse_chunked(&mel, &z, 0, |_, _| {}).is_err());
        assert!(m.inverse_chunked(&mel, &z.narrow(2, 0, 10), 5, |_, _| {}).is_err());
    }

    #[test]
    fn model_folder_round_trips_and_presets_parse() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["waveglow-22k", "waveglow-22k-small", "waveglow-8k-small", "waveglow-8k"] {
            let p = zoo_core::presets::find(&zoo_core::presets::models_dir(), "flow", name).unwrap();
            let f = ModelFile::from_json_file(&p.path).unwrap();
            match name {
                "waveglow-22k" => {
                    assert_eq!(f.waveglow_config, Config::waveglow_22k());
                    assert_eq!(f.mel_config(), MelConfig::waveglow_22k());
                }
                // the text-to-speech front end: it vocodes glow-tts-small's log-mels
                "waveglow-22k-small" => assert_eq!(f.mel_config(), MelConfig::waveglow_22k()),
                "waveglow-8k-small" => assert_eq!(f.mel_config(), MelConfig::speech_8k()),
                _ => {
                    // a 10 ms hop: the upsampler's stride follows the mel's hop
                    assert_eq!(f.mel_config().hop_length, 80);
                    assert_eq!(f.waveglow_config.upsample_stride, 80);
                }
            }
        }
        let p =
            zoo_core::presets::find(&zoo_core::presets::models_dir(), "flow", "waveglow-8k-small").unwrap();
        let mut f = ModelFile::from_json_file(&p.path).unwrap();
        f.waveglow_config = Config::tiny();
        let v = Vocoder::new(&f, Device::Cpu).unwrap();
        v.save(dir.path()).unwrap();
        let w = Vocoder::load(dir.path(), Device::Cpu, Kind::Float).unwrap();
        let a = v.vs.variables();
        for (k, t) in w.vs.variables() {
            assert_eq!(max_diff(&t, &a[&k]), 0.0, "{k}");
        }
        assert!(Vocoder::load(&dir.path().join("nope"), Device::Cpu, Kind::Float).is_err());
    }
}
