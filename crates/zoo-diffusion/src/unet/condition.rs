//! UNet2DConditionModel: the text-conditioned noise predictor of latent diffusion (Rombach et
//! al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models"), as diffusers'
//! `UNet2DConditionModel` builds it (diffusers 0.42 `models/unets/unet_2d_condition.py`), with
//! its config keys and weight names, so the `unet/` folder of a Stable Diffusion 1.x / 2.x
//! repository (config.json + diffusion_pytorch_model.safetensors) loads 1:1.
//!
//! Supported: positional time embeddings; DownBlock2D, CrossAttnDownBlock2D, AttnDownBlock2D
//! and their up mirrors; UNetMidBlock2DCrossAttn or UNetMidBlock2D; per-level lists for
//! `attention_head_dim` / `num_attention_heads`, `cross_attention_dim`, `layers_per_block`,
//! `transformer_layers_per_block` and `only_cross_attention`; `use_linear_projection` (SD 2.x);
//! 9-channel inpainting inputs. Not supported (an error naming the key): SDXL's added
//! embeddings (`addition_embed_type`), class embeddings, `encoder_hid_dim`,
//! `time_cond_proj_dim`, dual cross-attention, other attention or time embedding types.
//!
//! diffusers' naming quirk, kept for compatibility: in SD configs `attention_head_dim` is the
//! number of heads of each level (SD 1.x: 8 heads; SD 2.x: [5, 10, 20, 20], 64 channels each),
//! unless `num_attention_heads` is given.
use serde::{Deserialize, Serialize};
use tch::{nn, Tensor};
use zoo_core::layers::{Conv2d, GroupNorm};

use super::blocks::{
    check_sample, Act, AttnOpts, DownBlock, MidBlock, ResnetOpts, TimestepEmbedding, UpBlock,
};
use super::transformer::TransformerOpts;
use crate::{Error, Result};

/// A config value given once for all levels or as a list with one entry per level.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PerLevel<T> {
    One(T),
    Each(Vec<T>),
}

impl<T: Clone> PerLevel<T> {
    /// The value of each of `n` levels; an error naming `key` when a list has another length.
    pub fn levels(&self, n: usize, key: &str) -> Result<Vec<T>> {
        match self {
            PerLevel::One(v) => Ok(vec![v.clone(); n]),
            PerLevel::Each(v) if v.len() == n => Ok(v.clone()),
            PerLevel::Each(v) => Err(Error::Config(format!(
                "UNet config key '{key}': {} entries for {n} block_out_channels",
                v.len()
            ))),
        }
    }
}

fn d_four() -> i64 {
    4
}
fn d_down() -> Vec<String> {
    ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
        .map(String::from)
        .to_vec()
}
fn d_up() -> Vec<String> {
    ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"].map(String::from).to_vec()
}
fn d_mid() -> Option<String> {
    Some("UNetMidBlock2DCrossAttn".into())
}
fn d_channels() -> Vec<i64> {
    vec![320, 640, 1280, 1280]
}
fn d_layers() -> PerLevel<usize> {
    PerLevel::One(2)
}
fn d_one_layer() -> PerLevel<usize> {
    PerLevel::One(1)
}
fn d_cross() -> PerLevel<i64> {
    PerLevel::One(1280)
}
fn d_heads() -> PerLevel<i64> {
    PerLevel::One(8)
}
fn d_false() -> PerLevel<bool> {
    PerLevel::One(false)
}
fn d_kernel() -> i64 {
    3
}

/// diffusers' UNet2DConditionModel config (its `config.json` keys; defaults are diffusers').
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UNet2DConditionConfig {
    #[serde(default)]
    pub sample_size: Option<super::SampleSize>,
    #[serde(default = "d_four")]
    pub in_channels: i64,
    #[serde(default = "d_four")]
    pub out_channels: i64,
    #[serde(default)]
    pub center_input_sample: bool,
    #[serde(default = "super::d_true")]
    pub flip_sin_to_cos: bool,
    #[serde(default)]
    pub freq_shift: f64,
    #[serde(default = "d_down")]
    pub down_block_types: Vec<String>,
    #[serde(default = "d_mid")]
    pub mid_block_type: Option<String>,
    #[serde(default = "d_up")]
    pub up_block_types: Vec<String>,
    #[serde(default = "d_false")]
    pub only_cross_attention: PerLevel<bool>,
    #[serde(default = "d_channels")]
    pub block_out_channels: Vec<i64>,
    #[serde(default = "d_layers")]
    pub layers_per_block: PerLevel<usize>,
    #[serde(default = "super::d_one")]
    pub downsample_padding: i64,
    #[serde(default = "super::d_one_f")]
    pub mid_block_scale_factor: f64,
    #[serde(default)]
    pub dropout: f64,
    #[serde(default = "super::d_silu")]
    pub act_fn: String,
    #[serde(default = "super::d_groups")]
    pub norm_num_groups: i64,
    #[serde(default = "super::d_eps")]
    pub norm_eps: f64,
    #[serde(default = "d_cross")]
    pub cross_attention_dim: PerLevel<i64>,
    #[serde(default = "d_one_layer")]
    pub transformer_layers_per_block: PerLevel<usize>,
    /// The heads of each level in SD configs (see the module docs).
    #[serde(default = "d_heads")]
    pub attention_head_dim: PerLevel<i64>,
    #[serde(default)]
    pub num_attention_heads: Option<PerLevel<i64>>,
    #[serde(default)]
    pub use_linear_projection: bool,
    /// Attention scores in f32 (SD 2.x). zoo's attention accumulates in f32 for every dtype.
    #[serde(default)]
    pub upcast_attention: bool,
    #[serde(default = "super::d_default")]
    pub resnet_time_scale_shift: String,
    #[serde(default = "super::d_one_f")]
    pub resnet_out_scale_factor: f64,
    #[serde(default = "super::d_positional")]
    pub time_embedding_type: String,
    #[serde(default)]
    pub time_embedding_dim: Option<i64>,
    #[serde(default = "d_kernel")]
    pub conv_in_kernel: i64,
    #[serde(default = "d_kernel")]
    pub conv_out_kernel: i64,
    // Keys of models zoo cannot build: accepted only at their "off" values.
    #[serde(default)]
    pub class_embed_type: Option<String>,
    #[serde(default)]
    pub num_class_embeds: Option<i64>,
    #[serde(default)]
    pub addition_embed_type: Option<String>,
    #[serde(default)]
    pub encoder_hid_dim: Option<i64>,
    #[serde(default)]
    pub time_cond_proj_dim: Option<i64>,
    #[serde(default)]
    pub dual_cross_attention: bool,
    #[serde(default)]
    pub attention_type: Option<String>,
    #[serde(default)]
    pub time_embedding_act_fn: Option<String>,
    #[serde(default)]
    pub timestep_post_act: Option<String>,
    #[serde(default)]
    pub resnet_skip_time_act: bool,
}

/// Everything per level that the blocks need, resolved from the config.
struct Levels {
    layers: Vec<usize>,
    heads: Vec<i64>,
    cross: Vec<i64>,
    transformer_layers: Vec<usize>,
    only_cross: Vec<bool>,
}

impl UNet2DConditionConfig {
    /// Parses a UNet `config.json`; errors name the key.
    pub fn from_value(v: &serde_json::Value) -> Result<Self> {
        let cfg: UNet2DConditionConfig =
            serde_json::from_value(v.clone()).map_err(|e| Error::Config(format!("UNet config: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn levels(&self) -> Result<Levels> {
        let n = self.block_out_channels.len();
        let heads = match &self.num_attention_heads {
            Some(h) => h.levels(n, "num_attention_heads")?,
            None => self.attention_head_dim.levels(n, "attention_head_dim")?,
        };
        Ok(Levels {
            layers: self.layers_per_block.levels(n, "layers_per_block")?,
            heads,
            cross: self.cross_attention_dim.levels(n, "cross_attention_dim")?,
            transformer_layers: self
                .transformer_layers_per_block
                .levels(n, "transformer_layers_per_block")?,
            only_cross: self.only_cross_attention.levels(n, "only_cross_attention")?,
        })
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
        let lv = self.levels()?;
        if lv.layers.contains(&0) {
            return bad("layers_per_block", "must be at least 1".into());
        }
        if lv.heads.iter().chain(&lv.cross).any(|&v| v < 1) {
            return bad("attention_head_dim", "heads and cross_attention_dim must be positive".into());
        }
        if self.in_channels < 1 || self.out_channels < 1 || self.block_out_channels.iter().any(|&c| c < 1) {
            return bad("block_out_channels", "channel counts must be positive".into());
        }
        if self.time_embedding_type != "positional" {
            return bad(
                "time_embedding_type",
                format!("'{}' is not supported (positional)", self.time_embedding_type),
            );
        }
        if !matches!(self.resnet_time_scale_shift.as_str(), "default" | "scale_shift") {
            return bad(
                "resnet_time_scale_shift",
                format!("'{}' is not supported (default, scale_shift)", self.resnet_time_scale_shift),
            );
        }
        if self.conv_in_kernel % 2 == 0 || self.conv_out_kernel % 2 == 0 || self.conv_in_kernel < 1 {
            return bad("conv_in_kernel", "kernels must be odd".into());
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad("dropout", format!("{} is not in [0, 1)", self.dropout));
        }
        let unsupported = [
            ("class_embed_type", self.class_embed_type.is_some()),
            ("num_class_embeds", self.num_class_embeds.is_some()),
            ("addition_embed_type", self.addition_embed_type.is_some()),
            ("encoder_hid_dim", self.encoder_hid_dim.is_some()),
            ("time_cond_proj_dim", self.time_cond_proj_dim.is_some()),
            ("dual_cross_attention", self.dual_cross_attention),
            ("attention_type", self.attention_type.as_deref().is_some_and(|t| t != "default")),
            ("time_embedding_act_fn", self.time_embedding_act_fn.is_some()),
            ("timestep_post_act", self.timestep_post_act.is_some()),
            ("resnet_skip_time_act", self.resnet_skip_time_act),
        ];
        if let Some((k, _)) = unsupported.iter().find(|(_, set)| *set) {
            return bad(k, "is not supported by zoo's UNet2DConditionModel (SD 1.x/2.x layouts)".into());
        }
        Act::parse(&self.act_fn)?;
        Ok(())
    }

    /// How many times the down path halves the resolution.
    pub fn downsamples(&self) -> u32 {
        self.block_out_channels.len() as u32 - 1
    }

    /// Stable Diffusion 1.x's UNet (`unet/config.json` of SD 1.4 / 1.5).
    pub fn sd1() -> Self {
        Self::parse_known(serde_json::json!({
            "sample_size": 64, "cross_attention_dim": 768, "attention_head_dim": 8
        }))
    }

    /// Stable Diffusion 2.x's UNet (SD 2.0 / 2.1, 768 px): linear projections, 64-channel heads.
    pub fn sd2() -> Self {
        Self::parse_known(serde_json::json!({
            "sample_size": 96, "cross_attention_dim": 1024, "attention_head_dim": [5, 10, 20, 20],
            "use_linear_projection": true, "upcast_attention": true
        }))
    }

    /// A tiny model for tests: 4x16x16 latents, channels (32, 64), 32-wide text features.
    pub fn tiny() -> Self {
        Self::parse_known(serde_json::json!({
            "sample_size": 16, "block_out_channels": [32, 64], "layers_per_block": 1,
            "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
            "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
            "cross_attention_dim": 32, "attention_head_dim": 4
        }))
    }

    fn parse_known(v: serde_json::Value) -> Self {
        serde_json::from_value(v).unwrap_or_else(|e| unreachable!("a built-in UNet config is valid: {e}"))
    }
}

/// diffusers' UNet2DConditionModel.
#[derive(Debug)]
pub struct UNet2DConditionModel {
    pub config: UNet2DConditionConfig,
    conv_in: Conv2d,
    time_embedding: TimestepEmbedding,
    down_blocks: Vec<DownBlock>,
    mid_block: Option<MidBlock>,
    up_blocks: Vec<UpBlock>,
    conv_norm_out: GroupNorm,
    conv_out: Conv2d,
    act: Act,
}

impl UNet2DConditionModel {
    /// Creates the variables under `p` (weights are loaded separately).
    pub fn new(p: nn::Path, cfg: &UNet2DConditionConfig) -> Result<Self> {
        cfg.validate()?;
        let ch = &cfg.block_out_channels;
        let n = ch.len();
        let lv = cfg.levels()?;
        let act = Act::parse(&cfg.act_fn)?;
        let temb = cfg.time_embedding_dim.unwrap_or(ch[0] * 4);
        let ro = ResnetOpts {
            temb: Some(temb),
            groups: cfg.norm_num_groups,
            eps: cfg.norm_eps,
            act,
            scale_shift: cfg.resnet_time_scale_shift == "scale_shift",
            dropout: cfg.dropout,
            output_scale_factor: cfg.resnet_out_scale_factor,
        };
        let attn = |i: usize| AttnOpts {
            // AttnDownBlock2D levels read attention_head_dim as the head width, as diffusers does.
            head_dim: Some(lv.heads[i]),
            groups: cfg.norm_num_groups,
            eps: cfg.norm_eps,
            transformer: Some(TransformerOpts {
                heads: lv.heads[i],
                cross_attention_dim: lv.cross[i],
                layers: lv.transformer_layers[i],
                use_linear_projection: cfg.use_linear_projection,
                only_cross_attention: lv.only_cross[i],
                groups: cfg.norm_num_groups,
            }),
        };

        let mut down_blocks = Vec::new();
        let mut out_c = ch[0];
        for (i, kind) in cfg.down_block_types.iter().enumerate() {
            let in_c = out_c;
            out_c = ch[i];
            let last = i == n - 1;
            let (layers, pad) = (lv.layers[i], cfg.downsample_padding);
            let p = &p / "down_blocks" / i;
            down_blocks.push(DownBlock::new(p, kind, layers, in_c, out_c, !last, pad, &ro, &attn(i))?);
        }
        let mid_block = match &cfg.mid_block_type {
            Some(kind) => {
                let mro = ResnetOpts { output_scale_factor: cfg.mid_block_scale_factor, ..ro };
                let mut mao = attn(n - 1);
                if let Some(t) = mao.transformer.as_mut() {
                    t.only_cross_attention = false; // diffusers' mid_block_only_cross_attention
                }
                Some(MidBlock::new(&p / "mid_block", kind, ch[n - 1], true, None, &mro, &mao)?)
            }
            None => None,
        };
        let mut up_blocks = Vec::new();
        let mut out_c = ch[n - 1];
        for (i, kind) in cfg.up_block_types.iter().enumerate() {
            let level = n - 1 - i; // the up path reads the per-level lists reversed
            let prev = out_c;
            out_c = ch[level];
            let in_c = ch[level.saturating_sub(1)];
            let last = i == n - 1;
            let p = &p / "up_blocks" / i;
            let layers = lv.layers[level] + 1;
            up_blocks.push(UpBlock::new(p, kind, layers, in_c, prev, out_c, !last, &ro, &attn(level))?);
        }
        let (ki, ko) = (cfg.conv_in_kernel, cfg.conv_out_kernel);
        Ok(UNet2DConditionModel {
            config: cfg.clone(),
            conv_in: Conv2d::new(&p / "conv_in", cfg.in_channels, ch[0], ki, 1, (ki - 1) / 2)?,
            time_embedding: TimestepEmbedding::new(
                &p / "time_embedding",
                ch[0],
                temb,
                act,
                cfg.flip_sin_to_cos,
                cfg.freq_shift,
            )?,
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::new(&p / "conv_norm_out", cfg.norm_num_groups, ch[0], cfg.norm_eps)?,
            conv_out: Conv2d::new(&p / "conv_out", ch[0], cfg.out_channels, ko, 1, (ko - 1) / 2)?,
            act,
        })
    }

    /// The width of the text features the cross-attention expects (the first level's).
    pub fn cross_attention_dim(&self) -> i64 {
        match &self.config.cross_attention_dim {
            PerLevel::One(d) => *d,
            PerLevel::Each(v) => v.first().copied().unwrap_or(0),
        }
    }

    /// Inference forward. Shapes: sample (B, Cin, H, W), timesteps (B) or (1), text
    /// (B, S, cross_attention_dim) -> (B, Cout, H, W).
    pub fn forward(&self, sample: &Tensor, timesteps: &Tensor, text: &Tensor) -> Result<Tensor> {
        self.forward_t(sample, timesteps, text, false)
    }

    /// As [`UNet2DConditionModel::forward`], with dropout when `train`.
    pub fn forward_t(
        &self,
        sample: &Tensor,
        timesteps: &Tensor,
        text: &Tensor,
        train: bool,
    ) -> Result<Tensor> {
        let cfg = &self.config;
        let b = check_sample(sample, cfg.in_channels, cfg.downsamples())?;
        match text.size().as_slice() {
            &[tb, _, d] if tb == b && d == self.cross_attention_dim() => {}
            s => {
                return Err(Error::Input(format!(
                    "UNet text features must be ({b}, S, {}), got {s:?}",
                    self.cross_attention_dim()
                )))
            }
        }
        // 1. time embedding
        let x = if cfg.center_input_sample {
            sample.f_mul_scalar(2.0)?.f_sub_scalar(1.0)?
        } else {
            sample.shallow_clone()
        };
        let emb = self.time_embedding.embed(timesteps, b, x.kind(), x.device())?;
        let text = text.f_to_kind(x.kind())?;
        // 2. down path, keeping every skip output
        let mut h = self.conv_in.forward(&x)?;
        let mut skips = vec![h.shallow_clone()];
        for d in &self.down_blocks {
            let (y, s) = d.forward(&h, &emb, Some(&text), train)?;
            h = y;
            skips.extend(s);
        }
        // 3. middle
        if let Some(mb) = &self.mid_block {
            h = mb.forward(&h, &emb, Some(&text), train)?;
        }
        // 4. up path, consuming the skips in reverse
        for u in &self.up_blocks {
            h = u.forward(&h, &mut skips, &emb, Some(&text), train)?;
        }
        // 5. output
        Ok(self.conv_out.forward(&self.act.apply(&self.conv_norm_out.forward(&h)?)?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{nn::VarStore, Device, Kind};

    #[test]
    fn tiny_forward_shapes_and_errors() {
        let vs = VarStore::new(Device::Cpu);
        let m = UNet2DConditionModel::new(vs.root(), &UNet2DConditionConfig::tiny()).unwrap();
        let x = Tensor::randn([2, 4, 16, 16], (Kind::Float, Device::Cpu));
        let text = Tensor::randn([2, 7, 32], (Kind::Float, Device::Cpu));
        let y = m.forward(&x, &Tensor::from_slice(&[10i64, 500]), &text).unwrap();
        assert_eq!(y.size(), vec![2, 4, 16, 16]);
        // The text matters.
        let y2 = m.forward(&x, &Tensor::from_slice(&[10i64, 500]), &(&text * 2.0)).unwrap();
        assert!((&y - &y2).abs().max().double_value(&[]) > 1e-6);
        let e = m.forward(
            &x,
            &Tensor::from_slice(&[1i64]),
            &Tensor::zeros([2, 7, 16], (Kind::Float, Device::Cpu)),
        );
        assert!(e.unwrap_err().to_string().contains("(2, S, 32)"));
        let names = vs.variables();
        for k in [
            "down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight",
            "down_blocks.0.attentions.0.transformer_blocks.0.ff.net.0.proj.weight",
            "down_blocks.0.attentions.0.proj_in.weight",
            "mid_block.attentions.0.transformer_blocks.0.norm3.bias",
            "up_blocks.1.attentions.1.proj_out.bias",
            "up_blocks.0.upsamplers.0.conv.weight",
        ] {
            assert!(names.contains_key(k), "no {k}");
        }
        assert!(!names.contains_key("down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.bias"));
    }

    #[test]
    fn config_errors_name_the_key() {
        let bad = |v: serde_json::Value| UNet2DConditionConfig::from_value(&v).unwrap_err().to_string();
        assert!(bad(serde_json::json!({"addition_embed_type": "text_time"})).contains("addition_embed_type"));
        assert!(bad(serde_json::json!({"attention_head_dim": [8, 8]})).contains("attention_head_dim"));
        assert!(bad(serde_json::json!({"layers_per_block": 0})).contains("layers_per_block"));
        let mut c = UNet2DConditionConfig::tiny();
        c.down_block_types[1] = "SimpleCrossAttnDownBlock2D".into();
        let vs = VarStore::new(Device::Cpu);
        let e = UNet2DConditionModel::new(vs.root(), &c).unwrap_err().to_string();
        assert!(e.contains("down_block_types") && e.contains("SimpleCrossAttnDownBlock2D"), "{e}");
    }
}
