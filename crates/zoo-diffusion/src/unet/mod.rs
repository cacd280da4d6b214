//! UNet2DModel: the noise-prediction network of DDPM (Ho et al. 2020), as diffusers'
//! `UNet2DModel` builds it (diffusers/models/unets/unet_2d.py), with its config keys and
//! weight names, so that a diffusers `unet/` folder (config.json +
//! diffusion_pytorch_model.safetensors), e.g. google/ddpm-cifar10-32, loads 1:1.
//!
//! Supported: positional time embeddings, DownBlock2D / AttnDownBlock2D / UpBlock2D /
//! AttnUpBlock2D, UNetMidBlock2D (with or without attention), conv down/upsampling, "default"
//! and "scale_shift" resnets, class embeddings (`num_class_embeds`). Not supported (an error
//! naming the key): Fourier or learned time embeddings, skip and cross-attention blocks,
//! resnet down/upsampling, `class_embed_type` other than none.
pub mod blocks;
pub mod condition;
pub mod transformer;

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::Tensor;

pub use blocks::Act;
use blocks::{AttnOpts, DownBlock, MidBlock, ResnetOpts, TimestepEmbedding, UpBlock};
pub use condition::{UNet2DConditionConfig, UNet2DConditionModel};
use zoo_core::layers::{Conv2d, GroupNorm};
use zoo_core::weights::Remap;

use crate::{Error, Result};

/// `sample_size`: one side, or (height, width).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SampleSize {
    Square(i64),
    Rect([i64; 2]),
}

impl SampleSize {
    pub fn hw(&self) -> (i64, i64) {
        match self {
            SampleSize::Square(s) => (*s, *s),
            SampleSize::Rect([h, w]) => (*h, *w),
        }
    }
}

fn d_in() -> i64 {
    3
}
fn d_true() -> bool {
    true
}
fn d_positional() -> String {
    "positional".into()
}
fn d_down() -> Vec<String> {
    ["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"].map(String::from).to_vec()
}
fn d_up() -> Vec<String> {
    ["AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"].map(String::from).to_vec()
}
fn d_channels() -> Vec<i64> {
    vec![224, 448, 672, 896]
}
fn d_two() -> usize {
    2
}
fn d_one_f() -> f64 {
    1.0
}
fn d_one() -> i64 {
    1
}
fn d_conv() -> String {
    "conv".into()
}
fn d_silu() -> String {
    "silu".into()
}
fn d_head() -> Option<i64> {
    Some(8)
}
fn d_groups() -> i64 {
    32
}
fn d_eps() -> f64 {
    1e-5
}
fn d_default() -> String {
    "default".into()
}
fn d_mid() -> Option<String> {
    Some("UNetMidBlock2D".into())
}

/// diffusers' UNet2DModel config (its `config.json` keys; defaults are diffusers').
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UNet2DConfig {
    #[serde(default)]
    pub sample_size: Option<SampleSize>,
    #[serde(default = "d_in")]
    pub in_channels: i64,
    #[serde(default = "d_in")]
    pub out_channels: i64,
    /// Map the input from [0, 1] to [-1, 1] first.
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "d_positional")]
    pub time_embedding_type: String,
    #[serde(default)]
    pub time_embedding_dim: Option<i64>,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default = "d_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default = "d_down")]
    pub down_block_types: Vec<String>,
    #[serde(default = "d_mid")]
    pub mid_block_type: Option<String>,
    #[serde(default = "d_up")]
    pub up_block_types: Vec<String>,
    #[serde(default = "d_channels")]
    pub block_out_channels: Vec<i64>,
    #[serde(default = "d_two")]
    pub layers_per_block: usize,
    #[serde(default = "d_one_f")]
    pub mid_block_scale_factor: f64,
    #[serde(default = "d_one")]
    pub downsample_padding: i64,
    #[serde(default = "d_conv")]
    pub downsample_type: String,
    #[serde(default = "d_conv")]
    pub upsample_type: String,
    #[serde(default)]
    pub dropout: f64,
    #[serde(default = "d_silu")]
    pub act_fn: String,
    /// None: one head per block (head dim = channels), as google/ddpm-cifar10-32.
    #[serde(default = "d_head")]
    pub attention_head_dim: Option<i64>,
    #[serde(default = "d_groups")]
    pub norm_num_groups: i64,
    #[serde(default)]
    pub attn_norm_num_groups: Option<i64>,
    #[serde(default = "d_eps")]
    pub norm_eps: f64,
    #[serde(default = "d_default")]
    pub resnet_time_scale_shift: String,
    #[serde(default = "d_true")]
    pub add_attention: bool,
    #[serde(default)]
    pub class_embed_type: Option<String>,
    /// Classes of a class-conditional model (zoo's own models add one for the null class of
    /// classifier-free guidance: see [`crate::pipeline`]).
    #[serde(default)]
    pub num_class_embeds: Option<i64>,
    #[serde(default)]
    pub num_train_timesteps: Option<i64>,
}

impl UNet2DConfig {
    /// Parses a UNet `config.json`; errors name the key.
    pub fn from_value(v: &serde_json::Value) -> Result<Self> {
        let cfg: UNet2DConfig =
            serde_json::from_value(v.clone()).map_err(|e| Error::Config(format!("UNet config: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, why: String| Err(Error::Config(format!("UNet config key '{k}': {why}")));
        let n = self.block_out_channels.len();
        if n == 0 {
            return bad("block_out_channels", "is empty".into());
        }
        if self.down_block_types.len() != n || self.up_block_types.len() != n {
            return bad(
                "down_block_types",
                format!(
                    "{} down and {} up block types for {n} block_out_channels",
                    self.down_block_types.len(),
                    self.up_block_types.len()
                ),
            );
        }
        if self.time_embedding_type != "positional" {
            return bad(
                "time_embedding_type",
                format!("'{}' is not supported (positional)", self.time_embedding_type),
            );
        }
        if self.class_embed_type.is_some() {
            return bad(
                "class_embed_type",
                "only none (an embedding table of num_class_embeds) is supported".into(),
            );
        }
        if self.downsample_type != "conv" {
            return bad("downsample_type", format!("'{}' is not supported (conv)", self.downsample_type));
        }
        if self.upsample_type != "conv" {
            return bad("upsample_type", format!("'{}' is not supported (conv)", self.upsample_type));
        }
        if !matches!(self.resnet_time_scale_shift.as_str(), "default" | "scale_shift") {
            return bad(
                "resnet_time_scale_shift",
                format!("'{}' is not supported (default, scale_shift)", self.resnet_time_scale_shift),
            );
        }
        match self.mid_block_type.as_deref() {
            Some("UNetMidBlock2D") | None => {}
            Some(o) => return bad("mid_block_type", format!("'{o}' is not supported (UNetMidBlock2D)")),
        }
        if self.layers_per_block == 0 {
            return bad("layers_per_block", "must be at least 1".into());
        }
        if self.in_channels <= 0 || self.out_channels <= 0 || self.block_out_channels.iter().any(|&c| c <= 0)
        {
            return bad("block_out_channels", "channel counts must be positive".into());
        }
        if let Some(n) = self.num_class_embeds {
            if n < 1 {
                return bad("num_class_embeds", format!("{n} is not positive"));
            }
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", format!("{} is not in [0, 1)", self.dropout));
        }
        Act::parse(&self.act_fn)?;
        Ok(())
    }

    /// Side length (or (height, width)) of the samples the model was trained on; 32 when the
    /// config does not say.
    pub fn sample_hw(&self) -> (i64, i64) {
        self.sample_size.as_ref().map_or((32, 32), SampleSize::hw)
    }

    /// How many times the down path halves the resolution.
    pub fn downsamples(&self) -> u32 {
        self.block_out_channels.len() as u32 - 1
    }

    /// A tiny model for tests: 16x16 RGB, channels (16, 32), attention in the second level.
    pub fn tiny() -> Self {
        serde_json::from_value(serde_json::json!({
            "sample_size": 16, "in_channels": 3, "out_channels": 3,
            "block_out_channels": [16, 32], "layers_per_block": 1,
            "down_block_types": ["DownBlock2D", "AttnDownBlock2D"],
            "up_block_types": ["AttnUpBlock2D", "UpBlock2D"],
            "norm_num_groups": 8, "attention_head_dim": 8
        }))
        .unwrap_or_else(|_| unreachable!("the tiny config is valid"))
    }
}

/// diffusers' UNet2DModel.
#[derive(Debug)]
pub struct UNet2DModel {
    pub config: UNet2DConfig,
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    class_embedding: Option<nn::Embedding>,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<MidBlock>,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    act: Act,
}

impl UNet2DModel {
    /// Creates the variables under `p` (weights are loaded separately).
    pub fn new(p: nn::Path, cfg: &UNet2DConfig) -> Result<Self> {
        cfg.validate()?;
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let act = Act::parse(&cfg.act_fn)?;
        let temb = cfg.time_embedding_dim.unwrap_or(ch[0] * 4);
        let ro = ResnetOpts {
            temb: Some(temb),
            groups: cfg.norm_num_groups,
            eps: cfg.norm_eps,
            act,
            scale_shift: cfg.resnet_time_scale_shift == "scale_shift",
            dropout: cfg.dropout,
            output_scale_factor: 1.0,
        };
        let ao = AttnOpts {
            head_dim: cfg.attention_head_dim,
            groups: cfg.norm_num_groups,
            eps: cfg.norm_eps,
            transformer: None,
        };

        let mut down_blocks = Vec::new();
        let mut out_c = ch[0];
        for (i, kind) in cfg.down_block_types.iter().enumerate() {
            let in_c = out_c;
            out_c = ch[i];
            let last = i == n - 1;
            down_blocks.push(DownBlock::new(
                &p / "down_blocks" / i,
                kind,
                cfg.layers_per_block,
                in_c,
                out_c,
                !last,
                cfg.downsample_padding,
                &ro,
                &ao,
            )?);
        }
        let mid_block = match cfg.mid_block_type {
            Some(_) => {
                let mro = ResnetOpts { output_scale_factor: cfg.mid_block_scale_factor, ..ro };
                let (c, groups) = (ch[n - 1], cfg.attn_norm_num_groups);
                Some(MidBlock::new(
                    &p / "mid_block",
                    "UNetMidBlock2D",
                    c,
                    cfg.add_attention,
                    groups,
                    &mro,
                    &ao,
                )?)
            }
            None => None,
        };
        let rev: Vec<i64> = ch.iter().rev().cloned().collect();
        let mut up_blocks = Vec::new();
        let mut out_c = rev[0];
        for (i, kind) in cfg.up_block_types.iter().enumerate() {
            let prev = out_c;
            out_c = rev[i];
            let in_c = rev[(i + 1).min(n - 1)];
            let last = i == n - 1;
            up_blocks.push(UpBlock::new(
                &p / "up_blocks" / i,
                kind,
                cfg.layers_per_block + 1,
                in_c,
                prev,
                out_c,
                !last,
                &ro,
                &ao,
            )?);
        }
        Ok(UNet2DModel {
            config: cfg.clone(),
            conv_in: Conv2d::new(&p / "conv_in", cfg.in_channels, ch[0], 3, 1, 1)?,
            time_embedding: TimestepEmbedding::new(
                &p / "time_embedding",
                ch[0],
                temb,
                act,
                cfg.flip_sin_to_cos,
                cfg.freq_shift,
            )?,
            class_embedding: cfg
                .num_class_embeds
                .map(|k| nn::embedding(&p / "class_embedding", k, temb, Default::default())),
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::new(&p / "conv_norm_out", cfg.norm_num_groups, ch[0], cfg.norm_eps)?,
            conv_out: Conv2d::new(&p / "conv_out", ch[0], cfg.out_channels, 3, 1, 1)?,
            act,
        })
    }

    /// Inference forward. Shapes: sample (B, Cin, H, W), timesteps (B) or (1) (integer or
    /// fractional), class_labels (B) int64 -> (B, Cout, H, W).
    pub fn forward(
        &self,
        sample: &Tensor,
        timesteps: &Tensor,
        class_labels: Option<&Tensor>,
    ) -> Result<Tensor> {
        self.forward_t(sample, timesteps, class_labels, false)
    }

    /// As [`UNet2DModel::forward`], with dropout when `train`.
    pub fn forward_t(
        &self,
        sample: &Tensor,
        timesteps: &Tensor,
        class_labels: Option<&Tensor>,
        train: bool,
    ) -> Result<Tensor> {
        self.run(sample, timesteps, class_labels, train, &mut None)
    }

    /// The shape after each stage, for `zoo diffusion arch`.
    pub fn trace(
        &self,
        sample: &Tensor,
        timesteps: &Tensor,
        class_labels: Option<&Tensor>,
    ) -> Result<Vec<(String, Vec<i64>)>> {
        let mut log = Some(Vec::new());
        let _ = self.run(sample, timesteps, class_labels, false, &mut log)?;
        Ok(log.unwrap_or_default())
    }

    fn run(
        &self,
        sample: &Tensor,
        timesteps: &Tensor,
        class_labels: Option<&Tensor>,
        train: bool,
        log: &mut Option<Vec<(String, Vec<i64>)>>,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let b = blocks::check_sample(sample, cfg.in_channels, cfg.downsamples())?;
        let mut note = |name: &str, t: &Tensor| {
            if let Some(l) = log.as_mut() {
                l.push((name.to_string(), t.size()));
            }
        };
        // 1. time (and class) embedding
        let x = if cfg.center_input_sample {
            sample.f_mul_scalar(2.0)?.f_sub_scalar(1.0)?
        } else {
            sample.shallow_clone()
        };
        let mut emb = self.time_embedding.embed(timesteps, b, x.kind(), x.device())?;
        note("time_embedding", &emb);
        match (&self.class_embedding, class_labels) {
            (Some(e), Some(labels)) => {
                let n = cfg.num_class_embeds.unwrap_or(0);
                let lo = labels.f_min()?.f_int64_value(&[])?;
                let hi = labels.f_max()?.f_int64_value(&[])?;
                if lo < 0 || hi >= n {
                    return Err(Error::Input(format!("class labels must be in 0..{n}, got {lo}..={hi}")));
                }
                emb = emb.f_add(&e.forward(&labels.f_to_device(x.device())?).f_to_kind(emb.kind())?)?;
            }
            (Some(_), None) => {
                return Err(Error::Input("this UNet is class-conditional: give class labels".into()))
            }
            (None, Some(_)) => {
                return Err(Error::Input("this UNet has no class embedding: give no class labels".into()))
            }
            (None, None) => {}
        }
        // 2. down path, keeping every skip output
        let mut h = self.conv_in.forward(&x)?;
        note("conv_in", &h);
        let mut skips = vec![h.shallow_clone()];
        for (i, d) in self.down_blocks.iter().enumerate() {
            let (y, s) = d.forward(&h, &emb, None, train)?;
            h = y;
            skips.extend(s);
            note(&format!("down_blocks.{i} ({})", d.kind), &h);
        }
        // 3. middle
        if let Some(mb) = &self.mid_block {
            h = mb.forward(&h, &emb, None, train)?;
            note("mid_block", &h);
        }
        // 4. up path, consuming the skips in reverse
        for (i, u) in self.up_blocks.iter().enumerate() {
            h = u.forward(&h, &mut skips, &emb, None, train)?;
            note(&format!("up_blocks.{i} ({})", u.kind), &h);
        }
        // 5. output
        let out = self.conv_out.forward(&self.act.apply(&self.conv_norm_out.forward(&h)?)?)?;
        note("conv_out", &out);
        Ok(out)
    }
}

/// The remap of diffusers checkpoints saved before diffusers 0.14 (google/ddpm-*), whose
/// attention blocks name their projections query/key/value/proj_attn; diffusers renames them
/// on load (`_from_deprecated_attn_block`), and so do we.
pub fn legacy_attention_remap(name: &str) -> Remap {
    if !name.contains(".attentions.") {
        return Remap::To(name.to_string());
    }
    let mut parts: Vec<&str> = name.split('.').collect();
    let n = parts.len();
    if n >= 2 {
        let new = match parts[n - 2] {
            "query" => Some("to_q"),
            "key" => Some("to_k"),
            "value" => Some("to_v"),
            "proj_attn" => Some("to_out.0"),
            _ => None,
        };
        if let Some(new) = new {
            parts[n - 2] = new;
        }
    }
    Remap::To(parts.join("."))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device, Kind};

    #[test]
    fn tiny_forward_shapes_and_errors() {
        let vs = VarStore::new(Device::Cpu);
        let m = UNet2DModel::new(vs.root(), &UNet2DConfig::tiny()).unwrap();
        let x = Tensor::randn([2, 3, 16, 16], (Kind::Float, Device::Cpu));
        let y = m.forward(&x, &Tensor::from_slice(&[10i64, 500]), None).unwrap();
        assert_eq!(y.size(), vec![2, 3, 16, 16]);
        // One timestep broadcasts over the batch.
        let y1 = m.forward(&x, &Tensor::from_slice(&[10.0f32]), None).unwrap();
        let y2 = m.forward(&x, &Tensor::from_slice(&[10.0f32, 10.0]), None).unwrap();
        assert!((&y1 - &y2).abs().max().double_value(&[]) < 1e-6);
        let e = m.forward(
            &Tensor::zeros([1, 3, 15, 16], (Kind::Float, Device::Cpu)),
            &Tensor::from_slice(&[1i64]),
            None,
        );
        assert!(e.unwrap_err().to_string().contains("multiples of 2"));
        let e = m.forward(&x, &Tensor::from_slice(&[1i64]), Some(&Tensor::from_slice(&[0i64, 1])));
        assert!(e.unwrap_err().to_string().contains("no class embedding"));
    }

    #[test]
    fn config_errors_name_the_key() {
        let mut c = UNet2DConfig::tiny();
        c.down_block_types[0] = "CrossAttnDownBlock2D".into();
        let vs = VarStore::new(Device::Cpu);
        let e = UNet2DModel::new(vs.root(), &c).unwrap_err().to_string();
        assert!(e.contains("down_block_types") && e.contains("CrossAttnDownBlock2D"), "{e}");
        let mut c = UNet2DConfig::tiny();
        c.norm_num_groups = 5;
        assert!(UNet2DModel::new(vs.root(), &c).unwrap_err().to_string().contains("norm_num_groups"));
        let e = UNet2DConfig::from_value(&serde_json::json!({"act_fn": "relu6"})).unwrap_err().to_string();
        assert!(e.contains("act_fn"), "{e}");
        let e = UNet2DConfig::from_value(&serde_json::json!({"time_embedding_type": "fourier"})).unwrap_err();
        assert!(e.to_string().contains("time_embedding_type"));
    }

    #[test]
    fn class_labels_are_checked() {
        let mut c = UNet2DConfig::tiny();
        c.num_class_embeds = Some(4);
        let vs = VarStore::new(Device::Cpu);
        let m = UNet2DModel::new(vs.root(), &c).unwrap();
        let x = Tensor::zeros([1, 3, 16, 16], (Kind::Float, Device::Cpu));
        let t = Tensor::from_slice(&[3i64]);
        assert!(m.forward(&x, &t, Some(&Tensor::from_slice(&[3i64]))).is_ok());
        let e = m.forward(&x, &t, Some(&Tensor::from_slice(&[4i64]))).unwrap_err().to_string();
        assert!(e.contains("0..4"), "{e}");
        assert!(m.forward(&x, &t, None).is_err());
    }

    #[test]
    fn legacy_names_are_renamed() {
        assert_eq!(
            legacy_attention_remap("mid_block.attentions.0.proj_attn.weight"),
            Remap::To("mid_block.attentions.0.to_out.0.weight".into())
        );
        assert_eq!(
            legacy_attention_remap("down_blocks.1.attentions.0.query.bias"),
            Remap::To("down_blocks.1.attentions.0.to_q.bias".into())
        );
        assert_eq!(legacy_attention_remap("conv_in.weight"), Remap::To("conv_in.weight".into()));
    }
}
