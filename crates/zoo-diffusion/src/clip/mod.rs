//! CLIP's text encoder (Radford et al. 2021, "Learning Transferable Visual Models From Natural
//! Language Supervision"), the prompt encoder of Stable Diffusion, as transformers'
//! `CLIPTextModel` builds it (transformers/models/clip/modeling_clip.py), with its config keys
//! and weight names, so that the `text_encoder/` folder of a diffusers pipeline (config.json +
//! model.safetensors), e.g. Stable Diffusion 1.x (openai/clip-vit-large-patch14) or 2.x
//! (OpenCLIP ViT-H/14 as converted by Stability), loads 1:1.
//!
//! A pre-LayerNorm transformer over token + learned position embeddings with a causal mask,
//! then a final LayerNorm. Outputs the last hidden state, the pooled output (the hidden state
//! at the end-of-text token), and every layer's hidden state, from which diffusers' `clip_skip`
//! takes an earlier layer ([`CLIPTextModel::prompt_embeds`]).
//!
//! Not supported: the padding `attention_mask` of transformers' forward (Stable Diffusion
//! pipelines do not pass one), the projection head of `CLIPTextModelWithProjection`.
//!
//! The tokenizer is in [`tokenizer`].
pub mod tokenizer;

use std::path::Path;

use serde::{Deserialize, Serialize};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};
use zoo_core::weights::Remap;

use crate::{Error, Result};

pub use tokenizer::{write_word_tokenizer, ClipBatch, ClipTokenizer};

/// An `nn.Linear` through zoo-core's linear (oneDNN for large products). Shapes: (.., in) -> (.., out).
fn linear(l: &nn::Linear, x: &Tensor) -> Result<Tensor> {
    Ok(zoo_core::ops::linear(x, &l.ws, l.bs.as_ref())?)
}

fn is_float(kind: Kind) -> bool {
    matches!(kind, Kind::Half | Kind::BFloat16 | Kind::Float | Kind::Double)
}

/// The MLP nonlinearity (`hidden_act`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HiddenAct {
    /// OpenAI CLIP's x * sigmoid(1.702 x) (SD 1.x).
    QuickGelu,
    /// The exact (erf) GELU (OpenCLIP ViT-H, SD 2.x).
    Gelu,
}

impl HiddenAct {
    pub fn parse(s: &str) -> Result<Self> {
        match s {
            "quick_gelu" => Ok(HiddenAct::QuickGelu),
            "gelu" => Ok(HiddenAct::Gelu),
            _ => Err(Error::Config(format!(
                "CLIP text config key 'hidden_act': '{s}' is not one of quick_gelu, gelu"
            ))),
        }
    }

    fn apply(self, x: &Tensor) -> Result<Tensor> {
        Ok(match self {
            HiddenAct::QuickGelu => x.f_mul(&x.f_mul_scalar(1.702)?.f_sigmoid()?)?,
            HiddenAct::Gelu => x.f_gelu("none")?,
        })
    }
}

/// `CLIPTextEmbeddings`: token embedding + learned absolute position embedding.
#[derive(Debug)]
struct CLIPTextEmbeddings {
    token_embedding: nn::Embedding,
    position_embedding: nn::Embedding,
}

impl CLIPTextEmbeddings {
    fn new(p: nn::Path, cfg: &CLIPTextConfig) -> Self {
        let e = |name: &str, n: i64| nn::embedding(&p / name, n, cfg.hidden_size, Default::default());
        CLIPTextEmbeddings {
            token_embedding: e("token_embedding", cfg.vocab_size),
            position_embedding: e("position_embedding", cfg.max_position_embeddings),
        }
    }

    /// Shapes: (B, T) int64 -> (B, T, hidden). Positions are 0..T (transformers' `position_ids`
    /// buffer).
    fn forward(&self, ids: &Tensor) -> Result<Tensor> {
        let t = ids.size()[1];
        let tok = Tensor::f_embedding(&self.token_embedding.ws, ids, -1, false, false)?;
        let pos = self.position_embedding.ws.f_narrow(0, 0, t)?; // (T, hidden)
        Ok(tok.f_add(&pos.f_unsqueeze(0)?)?)
    }
}

/// `CLIPAttention`: multi-head self-attention with separate q/k/v projections (all with bias),
/// scale head_dim^-0.5.
#[derive(Debug)]
struct CLIPAttention {
    q_proj: nn::Linear,
    k_proj: nn::Linear,
    v_proj: nn::Linear,
    out_proj: nn::Linear,
    heads: i64,
    dropout: f64,
}

impl CLIPAttention {
    fn new(p: nn::Path, cfg: &CLIPTextConfig) -> Self {
        let h = cfg.hidden_size;
        let lin = |name: &str| nn::linear(&p / name, h, h, Default::default());
        CLIPAttention {
            q_proj: lin("q_proj"),
            k_proj: lin("k_proj"),
            v_proj: lin("v_proj"),
            out_proj: lin("out_proj"),
            heads: cfg.num_attention_heads,
            dropout: cfg.attention_dropout,
        }
    }

    /// Causal self-attention. Shapes: (B, T, C) -> (B, T, C).
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let (b, t, c) = x.size3()?;
        let hd = c / self.heads;
        let split = |y: Tensor| y.f_view([b, t, self.heads, hd])?.f_transpose(1, 2); // (B, nh, T, hd)
        let q = split(linear(&self.q_proj, x)?)?;
        let k = split(linear(&self.k_proj, x)?)?;
        let v = split(linear(&self.v_proj, x)?)?;
        let dropout = if train { self.dropout } else { 0.0 };
        // SDPA's default scale is head_dim^-0.5, CLIP's scale.
        let a =
            Tensor::f_scaled_dot_product_attention::<Tensor>(&q, &k, &v, None, dropout, true, None, false)?;
        let a = a.f_transpose(1, 2)?.f_reshape([b, t, c])?; // (B, T, C)
        linear(&self.out_proj, &a)
    }
}

/// `CLIPMLP`: fc1, activation, fc2.
#[allow(clippy::upper_case_acronyms)] // transformers' name, as for the other blocks
#[derive(Debug)]
struct CLIPMLP {
    fc1: nn::Linear,
    fc2: nn::Linear,
    act: HiddenAct,
}

impl CLIPMLP {
    fn new(p: nn::Path, cfg: &CLIPTextConfig) -> Result<Self> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(CLIPMLP {
            fc1: nn::linear(&p / "fc1", h, i, Default::default()),
            fc2: nn::linear(&p / "fc2", i, h, Default::default()),
            act: HiddenAct::parse(&cfg.hidden_act)?,
        })
    }

    fn forward(&self, x: &Tensor) -> Result<Tensor> {
        linear(&self.fc2, &self.act.apply(&linear(&self.fc1, x)?)?)
    }
}

fn layer_norm(p: nn::Path, cfg: &CLIPTextConfig) -> nn::LayerNorm {
    let c = nn::LayerNormConfig { eps: cfg.layer_norm_eps, ..Default::default() };
    nn::layer_norm(p, vec![cfg.hidden_size], c)
}

/// `CLIPEncoderLayer`: x + attn(ln1(x)), then x + mlp(ln2(x)).
#[derive(Debug)]
struct CLIPEncoderLayer {
    self_attn: CLIPAttention,
    layer_norm1: nn::LayerNorm,
    mlp: CLIPMLP,
    layer_norm2: nn::LayerNorm,
}

impl CLIPEncoderLayer {
    fn new(p: nn::Path, cfg: &CLIPTextConfig) -> Result<Self> {
        Ok(CLIPEncoderLayer {
            self_attn: CLIPAttention::new(&p / "self_attn", cfg),
            layer_norm1: layer_norm(&p / "layer_norm1", cfg),
            mlp: CLIPMLP::new(&p / "mlp", cfg)?,
            layer_norm2: layer_norm(&p / "layer_norm2", cfg),
        })
    }

    /// Shapes: (B, T, C) -> (B, T, C).
    fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let x = x.f_add(&self.self_attn.forward(&self.layer_norm1.forward(x), train)?)?;
        Ok(x.f_add(&self.mlp.forward(&self.layer_norm2.forward(&x))?)?)
    }
}

fn d_eps() -> f64 {
    1e-5
}
fn d_pad() -> i64 {
    1
}
fn d_bos() -> i64 {
    49406
}
fn d_eos() -> i64 {
    49407
}

/// transformers' `CLIPTextConfig` (the keys of a `text_encoder/config.json`; unknown keys such
/// as `architectures` or `initializer_range` are ignored). Defaults, for keys a config may
/// omit, are transformers' class defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CLIPTextConfig {
    pub vocab_size: i64,
    pub hidden_size: i64,
    pub intermediate_size: i64,
    pub num_hidden_layers: i64,
    pub num_attention_heads: i64,
    /// The longest input (77 for CLIP).
    pub max_position_embeddings: i64,
    /// "quick_gelu" or "gelu".
    pub hidden_act: String,
    #[serde(default = "d_eps")]
    pub layer_norm_eps: f64,
    #[serde(default)]
    pub attention_dropout: f64,
    /// Size of `CLIPTextModelWithProjection`'s head; unused by `CLIPTextModel`.
    #[serde(default)]
    pub projection_dim: Option<i64>,
    #[serde(default = "d_pad")]
    pub pad_token_id: i64,
    #[serde(default = "d_bos")]
    pub bos_token_id: i64,
    /// Decides how the pooled output finds the end of the text: see
    /// [`CLIPTextModel::eos_positions`].
    #[serde(default = "d_eos")]
    pub eos_token_id: i64,
}

impl CLIPTextConfig {
    /// Parses a `config.json` value; errors name the key.
    pub fn from_value(v: &serde_json::Value) -> Result<Self> {
        let cfg: CLIPTextConfig =
            serde_json::from_value(v.clone()).map_err(|e| Error::Config(format!("CLIP text config: {e}")))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and checks a `config.json`; errors name the file.
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| zoo_core::Error::io(path, e))?;
        let bad = |msg: String| Error::Core(zoo_core::Error::bad_file(path, msg));
        let v: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| bad(format!("not valid JSON: {e}")))?;
        if v.get("text_config").is_some() {
            return Err(bad(
                "a full CLIPModel config (text_config and vision_config); give the folder of a \
                 CLIPTextModel (a pipeline's text_encoder/)"
                    .into(),
            ));
        }
        Self::from_value(&v).map_err(|e| bad(e.to_string()))
    }

    pub fn validate(&self) -> Result<()> {
        let bad = |k: &str, why: String| Err(Error::Config(format!("CLIP text config key '{k}': {why}")));
        for (k, v) in [
            ("vocab_size", self.vocab_size),
            ("hidden_size", self.hidden_size),
            ("intermediate_size", self.intermediate_size),
            ("num_hidden_layers", self.num_hidden_layers),
            ("num_attention_heads", self.num_attention_heads),
            ("max_position_embeddings", self.max_position_embeddings),
        ] {
            if v <= 0 {
                return bad(k, format!("{v} is not positive"));
            }
        }
        if self.hidden_size % self.num_attention_heads != 0 {
            return bad(
                "num_attention_heads",
                format!("{} heads do not divide hidden_size {}", self.num_attention_heads, self.hidden_size),
            );
        }
        if !(0.0..1.0).contains(&self.attention_dropout) {
            return bad("attention_dropout", format!("{} is not in [0, 1)", self.attention_dropout));
        }
        HiddenAct::parse(&self.hidden_act)?;
        Ok(())
    }

    /// Stable Diffusion 1.x's text encoder: OpenAI CLIP ViT-L/14's text transformer, as in
    /// `runwayml/stable-diffusion-v1-5/text_encoder/config.json` (123,060,480 parameters).
    pub fn sd1() -> Self {
        CLIPTextConfig {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            attention_dropout: 0.0,
            projection_dim: Some(768),
            // The ids of the files SD ships (before transformers' PR #24773): eos 2 makes the
            // pooled output take the argmax id, which is <|endoftext|> (49407).
            pad_token_id: 1,
            bos_token_id: 0,
            eos_token_id: 2,
        }
    }

    /// Stable Diffusion 2.x's text encoder: OpenCLIP ViT-H/14's text transformer with its last
    /// layer removed (SD 2 conditions on the penultimate layer), as in
    /// `stabilityai/stable-diffusion-2-1/text_encoder/config.json`.
    pub fn sd2() -> Self {
        CLIPTextConfig {
            hidden_size: 1024,
            intermediate_size: 4096,
            num_hidden_layers: 23,
            num_attention_heads: 16,
            hidden_act: "gelu".into(),
            projection_dim: Some(512),
            ..Self::sd1()
        }
    }

    /// A tiny model for tests: vocabulary 1000 (bos 998, eos 999), width 32, 2 layers of 4
    /// heads, MLP 37.
    pub fn tiny() -> Self {
        CLIPTextConfig {
            vocab_size: 1000,
            hidden_size: 32,
            intermediate_size: 37,
            num_hidden_layers: 2,
            num_attention_heads: 4,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            layer_norm_eps: 1e-5,
            attention_dropout: 0.0,
            projection_dim: None,
            pad_token_id: 1,
            bos_token_id: 998,
            eos_token_id: 999,
        }
    }
}

/// What [`CLIPTextModel::forward`] returns (transformers' `BaseModelOutputWithPooling` with
/// `output_hidden_states=True`).
#[derive(Debug)]
pub struct CLIPTextOutput {
    /// (B, T, hidden): the last layer's output after `final_layer_norm`.
    pub last_hidden_state: Tensor,
    /// (B, hidden): `last_hidden_state` at the end-of-text position of each row.
    pub pooler_output: Tensor,
    /// num_hidden_layers + 1 tensors (B, T, hidden): the embeddings, then each layer's output,
    /// all before `final_layer_norm`.
    pub hidden_states: Vec<Tensor>,
}

/// transformers' `CLIPTextModel`.
#[derive(Debug)]
pub struct CLIPTextModel {
    pub config: CLIPTextConfig,
    embeddings: CLIPTextEmbeddings,
    layers: Vec<CLIPEncoderLayer>,
    final_layer_norm: nn::LayerNorm,
}

impl CLIPTextModel {
    /// Creates the variables under `p` with transformers' names (`text_model.embeddings...`);
    /// weights are loaded separately ([`CLIPTextModel::load`], or
    /// `zoo_core::weights::load_into` with [`checkpoint_remap`]).
    pub fn new(p: nn::Path, cfg: &CLIPTextConfig) -> Result<Self> {
        cfg.validate()?;
        let tm = &p / "text_model";
        let enc = &tm / "encoder" / "layers";
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| CLIPEncoderLayer::new(&enc / i, cfg))
            .collect::<Result<Vec<_>>>()?;
        Ok(CLIPTextModel {
            config: cfg.clone(),
            embeddings: CLIPTextEmbeddings::new(&tm / "embeddings", cfg),
            layers,
            final_layer_norm: layer_norm(&tm / "final_layer_norm", cfg),
        })
    }

    /// Reads `dir/config.json` and the weights in `dir` (`model.safetensors`, or its sharded
    /// index) strictly, as `kind` on `device`, for inference: the weights need no gradient.
    /// Pickle files are refused with the converter's name. (To fine-tune, build with
    /// [`CLIPTextModel::new`] in your own VarStore and load with [`checkpoint_remap`].)
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self> {
        if !is_float(kind) {
            return Err(Error::Config(format!("the CLIP text encoder runs in a float dtype, not {kind:?}")));
        }
        let cfg = CLIPTextConfig::from_file(&dir.join("config.json"))?;
        let mut vs = nn::VarStore::new(device);
        let model = CLIPTextModel::new(vs.root(), &cfg)?;
        if kind != Kind::Float {
            vs.set_kind(kind);
        }
        // The file itself when there is one, so that errors name it; else the folder's
        // sharded index (or the pickle that is refused).
        let single = dir.join("model.safetensors");
        let weights = if single.is_file() { single } else { dir.to_path_buf() };
        zoo_core::weights::load_into(&vs, &weights, &checkpoint_remap)?;
        vs.freeze();
        // The variables live on in the model's tensors when the VarStore goes.
        Ok(model)
    }

    /// Inference forward. Shapes: input_ids (B, T) integer, T <= max_position_embeddings ->
    /// last_hidden_state (B, T, hidden), pooler_output (B, hidden).
    pub fn forward(&self, input_ids: &Tensor) -> Result<CLIPTextOutput> {
        self.forward_t(input_ids, false)
    }

    /// As [`CLIPTextModel::forward`], with attention dropout when `train`.
    pub fn forward_t(&self, input_ids: &Tensor, train: bool) -> Result<CLIPTextOutput> {
        let ids = self.check_ids(input_ids)?;
        // 1. token + position embeddings
        let mut h = self.embeddings.forward(&ids)?;
        // 2. the causal transformer, keeping every layer's output
        let mut hidden_states = Vec::with_capacity(self.layers.len() + 1);
        hidden_states.push(h.shallow_clone());
        for layer in &self.layers {
            h = layer.forward(&h, train)?;
            hidden_states.push(h.shallow_clone());
        }
        // 3. final norm and pooling at the end of the text
        let last_hidden_state = self.final_layer_norm.forward(&h);
        let pos = self.eos_positions(&ids)?;
        let rows = Tensor::f_arange(ids.size()[0], (Kind::Int64, ids.device()))?;
        let pooler_output = last_hidden_state.f_index(&[Some(rows), Some(pos)])?;
        Ok(CLIPTextOutput { last_hidden_state, pooler_output, hidden_states })
    }

    /// The prompt embeddings of diffusers' `encode_prompt`. Shapes: (B, T) -> (B, T, hidden).
    /// `clip_skip` None: the last hidden state. `clip_skip` Some(k): the output of the k-th
    /// layer from the end (`hidden_states[-(k + 1)]`, so 1 is the penultimate layer) through
    /// `final_layer_norm`; Some(0) equals None.
    pub fn prompt_embeds(&self, input_ids: &Tensor, clip_skip: Option<usize>) -> Result<Tensor> {
        let mut out = self.forward(input_ids)?;
        let Some(k) = clip_skip else {
            return Ok(out.last_hidden_state);
        };
        let n = out.hidden_states.len();
        if k >= n {
            return Err(Error::Input(format!(
                "clip_skip {k}: the text encoder has {} layers, so clip_skip can be at most {}",
                n - 1,
                n - 1
            )));
        }
        let h = out.hidden_states.swap_remove(n - 1 - k);
        Ok(self.final_layer_norm.forward(&h))
    }

    /// The position of each row's end-of-text token, by transformers' rule: configs with
    /// `eos_token_id == 2` (the files written before transformers' PR #24773, which include
    /// Stable Diffusion's) take the position of the largest id (<|endoftext|> is the largest
    /// id of CLIP's vocabulary; ties go to the first); other configs take the first position
    /// holding `eos_token_id` (0 when a row has none). Shapes: (B, T) -> (B) int64.
    pub fn eos_positions(&self, input_ids: &Tensor) -> Result<Tensor> {
        let ids = input_ids.f_to_kind(Kind::Int64)?;
        Ok(if self.config.eos_token_id == 2 {
            ids.f_argmax(-1, false)?
        } else {
            ids.f_eq(self.config.eos_token_id)?.f_to_kind(Kind::Int)?.f_argmax(-1, false)?
        })
    }

    /// The dtype of the weights.
    pub fn kind(&self) -> Kind {
        self.embeddings.token_embedding.ws.kind()
    }

    /// Checks ids against the vocabulary and the context length (an out-of-range id would be a
    /// libtorch crash, not an error); returns them as int64 on the model's device.
    fn check_ids(&self, input_ids: &Tensor) -> Result<Tensor> {
        let cfg = &self.config;
        let size = input_ids.size();
        if size.len() != 2 {
            return Err(Error::Input(format!("CLIP input ids must be (B, T), got {size:?}")));
        }
        if is_float(input_ids.kind()) {
            return Err(Error::Input(format!("CLIP input ids must be integers, got {:?}", input_ids.kind())));
        }
        let t = size[1];
        if t == 0 || t > cfg.max_position_embeddings {
            return Err(Error::Input(format!(
                "CLIP input of {t} tokens: the text encoder takes 1 to {} (max_position_embeddings)",
                cfg.max_position_embeddings
            )));
        }
        let ids =
            input_ids.f_to_kind(Kind::Int64)?.f_to_device(self.embeddings.token_embedding.ws.device())?;
        if size[0] > 0 {
            let lo = ids.f_min()?.f_int64_value(&[])?;
            let hi = ids.f_max()?.f_int64_value(&[])?;
            if lo < 0 || hi >= cfg.vocab_size {
                return Err(Error::Input(format!(
                    "CLIP token ids must be in 0..{}, got {lo}..={hi}",
                    cfg.vocab_size
                )));
            }
        }
        Ok(ids)
    }
}

/// The remap of CLIP text encoder checkpoints:
/// - files saved by transformers >= 5 (and some converters) have no `text_model.` prefix,
///   which transformers adds back on load; so do we;
/// - files saved by transformers < 4.31 (Stable Diffusion's among them) hold the
///   `embeddings.position_ids` buffer (0..77), which we compute and skip.
pub fn checkpoint_remap(name: &str) -> Remap {
    let full = if name.starts_with("text_model.") { name.to_string() } else { format!("text_model.{name}") };
    if full == "text_model.embeddings.position_ids" {
        Remap::Skip
    } else {
        Remap::To(full)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::nn::VarStore;

    fn tiny(cfg: &CLIPTextConfig) -> (VarStore, CLIPTextModel) {
        tch::manual_seed(0);
        let vs = VarStore::new(Device::Cpu);
        let m = CLIPTextModel::new(vs.root(), cfg).unwrap();
        (vs, m)
    }

    fn ids(rows: &[&[i64]]) -> Tensor {
        let t = rows[0].len() as i64;
        Tensor::from_slice(&rows.concat()).view([rows.len() as i64, t])
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
        (a - b).abs().max().double_value(&[])
    }

    #[test]
    fn tiny_shapes_and_pooling() {
        let (_vs, m) = tiny(&CLIPTextConfig::tiny());
        let x = ids(&[&[998, 5, 6, 999, 1, 1], &[998, 7, 999, 1, 1, 1]]);
        let out = m.forward(&x).unwrap();
        assert_eq!(out.last_hidden_state.size(), vec![2, 6, 32]);
        assert_eq!(out.pooler_output.size(), vec![2, 32]);
        assert_eq!(out.hidden_states.len(), 3);
        // The pooled output is the hidden state at each row's eos.
        assert_eq!(max_diff(&out.pooler_output.get(0), &out.last_hidden_state.get(0).get(3)), 0.0);
        assert_eq!(max_diff(&out.pooler_output.get(1), &out.last_hidden_state.get(1).get(2)), 0.0);
        // The last hidden state is the last layer's output through the final norm.
        let normed = m.final_layer_norm.forward(&out.hidden_states[2]);
        assert_eq!(max_diff(&normed, &out.last_hidden_state), 0.0);
    }

    #[test]
    fn attention_is_causal() {
        let (_vs, m) = tiny(&CLIPTextConfig::tiny());
        let a = m.forward(&ids(&[&[998, 5, 6, 7, 999]])).unwrap().last_hidden_state;
        let b = m.forward(&ids(&[&[998, 5, 6, 300, 999]])).unwrap().last_hidden_state;
        assert!(
            max_diff(&a.narrow(1, 0, 3), &b.narrow(1, 0, 3)) < 1e-5,
            "a later token changed earlier outputs"
        );
        assert!(max_diff(&a.narrow(1, 3, 2), &b.narrow(1, 3, 2)) > 1e-3, "the changed token had no effect");
        // A shorter input gives the same outputs on its positions (up to rounding: libtorch's
        // AVX-512 kernels block a 3-token and a 5-token matrix differently).
        let c = m.forward(&ids(&[&[998, 5, 6]])).unwrap().last_hidden_state;
        assert!(max_diff(&a.narrow(1, 0, 3), &c) < 1e-5);
    }

    #[test]
    fn eos_rule_follows_the_config() {
        // eos_token_id 2 (SD's files): the largest id's position, ties to the first.
        let mut cfg = CLIPTextConfig::tiny();
        cfg.eos_token_id = 2;
        let (_vs, legacy) = tiny(&cfg);
        let x = ids(&[&[998, 7, 500, 999, 999], &[5, 999, 999, 2, 1]]);
        assert_eq!(Vec::<i64>::try_from(legacy.eos_positions(&x).unwrap()).unwrap(), vec![3, 1]);
        // Any other eos id: its first position (0 when absent).
        cfg.eos_token_id = 500;
        let (_vs, first) = tiny(&cfg);
        assert_eq!(Vec::<i64>::try_from(first.eos_positions(&x).unwrap()).unwrap(), vec![2, 0]);
    }

    #[test]
    fn clip_skip_takes_an_earlier_layer() {
        let (_vs, m) = tiny(&CLIPTextConfig::tiny());
        let x = ids(&[&[998, 5, 6, 999]]);
        let out = m.forward(&x).unwrap();
        assert_eq!(max_diff(&m.prompt_embeds(&x, None).unwrap(), &out.last_hidden_state), 0.0);
        assert_eq!(max_diff(&m.prompt_embeds(&x, Some(0)).unwrap(), &out.last_hidden_state), 0.0);
        let skip1 = m.prompt_embeds(&x, Some(1)).unwrap();
        assert_eq!(max_diff(&skip1, &m.final_layer_norm.forward(&out.hidden_states[1])), 0.0);
        assert!(max_diff(&skip1, &out.last_hidden_state) > 1e-3);
        assert!(m.prompt_embeds(&x, Some(2)).is_ok());
        let e = m.prompt_embeds(&x, Some(3)).unwrap_err().to_string();
        assert!(e.contains("at most 2"), "{e}");
    }

    #[test]
    fn bad_inputs_are_errors() {
        let (_vs, m) = tiny(&CLIPTextConfig::tiny());
        let e = m.forward(&ids(&[&[998, 1000, 999]])).unwrap_err().to_string();
        assert!(e.contains("0..1000"), "{e}");
        let e = m.forward(&ids(&[&[-1, 5]])).unwrap_err().to_string();
        assert!(e.contains("0..1000"), "{e}");
        let long = vec![5i64; 78];
        let e = m.forward(&ids(&[&long])).unwrap_err().to_string();
        assert!(e.contains("78 tokens") && e.contains("max_position_embeddings"), "{e}");
        let e = m.forward(&Tensor::from_slice(&[1i64, 2])).unwrap_err().to_string();
        assert!(e.contains("(B, T)"), "{e}");
        let e = m.forward(&Tensor::from_slice(&[1.0f32, 2.0]).view([1, 2])).unwrap_err().to_string();
        assert!(e.contains("integers"), "{e}");
        // int32 ids are fine.
        assert!(m.forward(&ids(&[&[998, 5, 999]]).to_kind(Kind::Int)).is_ok());
    }

    #[test]
    fn names_and_parameter_counts() {
        let (vs, _m) = tiny(&CLIPTextConfig::tiny());
        let vars = vs.variables();
        assert_eq!(vars.len(), 36);
        for name in [
            "text_model.embeddings.token_embedding.weight",
            "text_model.embeddings.position_embedding.weight",
            "text_model.encoder.layers.1.self_attn.q_proj.weight",
            "text_model.encoder.layers.1.self_attn.out_proj.bias",
            "text_model.encoder.layers.0.layer_norm1.weight",
            "text_model.encoder.layers.0.layer_norm2.bias",
            "text_model.encoder.layers.0.mlp.fc1.weight",
            "text_model.encoder.layers.0.mlp.fc2.bias",
            "text_model.final_layer_norm.weight",
        ] {
            assert!(vars.contains_key(name), "no {name}");
        }
        let count = |vs: &VarStore| vs.variables().values().map(Tensor::numel).sum::<usize>();
        // transformers' CLIPTextModel(CLIPTextConfig(vocab_size=1000, hidden_size=32,
        // intermediate_size=37, num_hidden_layers=2, num_attention_heads=4)): 48,106.
        assert_eq!(count(&vs), 48_106);
        let vs = VarStore::new(Device::Cpu);
        let _m = CLIPTextModel::new(vs.root(), &CLIPTextConfig::sd1()).unwrap();
        assert_eq!(count(&vs), 123_060_480, "openai/clip-vit-large-patch14's text model");
    }

    #[test]
    fn configs_parse_with_their_keys() {
        // runwayml/stable-diffusion-v1-5/text_encoder/config.json
        let sd1 = serde_json::json!({
            "_name_or_path": "openai/clip-vit-large-patch14", "architectures": ["CLIPTextModel"],
            "attention_dropout": 0.0, "bos_token_id": 0, "dropout": 0.0, "eos_token_id": 2,
            "hidden_act": "quick_gelu", "hidden_size": 768, "initializer_factor": 1.0,
            "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-05,
            "max_position_embeddings": 77, "model_type": "clip_text_model", "num_attention_heads": 12,
            "num_hidden_layers": 12, "pad_token_id": 1, "projection_dim": 768, "torch_dtype": "float32",
            "transformers_version": "4.22.0.dev0", "vocab_size": 49408
        });
        assert_eq!(CLIPTextConfig::from_value(&sd1).unwrap(), CLIPTextConfig::sd1());
        let mut sd2 = sd1.clone();
        for (k, v) in [
            ("hidden_act", serde_json::json!("gelu")),
            ("hidden_size", 1024.into()),
            ("intermediate_size", 4096.into()),
            ("num_attention_heads", 16.into()),
            ("num_hidden_layers", 23.into()),
            ("projection_dim", 512.into()),
        ] {
            sd2[k] = v;
        }
        assert_eq!(CLIPTextConfig::from_value(&sd2).unwrap(), CLIPTextConfig::sd2());
        let mut bad = sd1.clone();
        bad["hidden_act"] = "relu".into();
        assert!(CLIPTextConfig::from_value(&bad).unwrap_err().to_string().contains("hidden_act"));
        bad = sd1.clone();
        bad["num_attention_heads"] = 7.into();
        assert!(CLIPTextConfig::from_value(&bad).unwrap_err().to_string().contains("num_attention_heads"));
        bad = sd1.clone();
        bad.as_object_mut().unwrap().remove("hidden_size");
        assert!(CLIPTextConfig::from_value(&bad).unwrap_err().to_string().contains("hidden_size"));
        // Keys transformers fills with its class defaults.
        let mut short = sd1;
        for k in ["bos_token_id", "eos_token_id", "pad_token_id", "layer_norm_eps", "projection_dim"] {
            short.as_object_mut().unwrap().remove(k);
        }
        let c = CLIPTextConfig::from_value(&short).unwrap();
        assert_eq!((c.bos_token_id, c.eos_token_id, c.pad_token_id), (49406, 49407, 1));
        assert_eq!(c.projection_dim, None);
    }

    #[test]
    fn remap_adds_the_prefix_and_skips_position_ids() {
        assert_eq!(
            checkpoint_remap("embeddings.token_embedding.weight"),
            Remap::To("text_model.embeddings.token_embedding.weight".into())
        );
        assert_eq!(
            checkpoint_remap("text_model.final_layer_norm.bias"),
            Remap::To("text_model.final_layer_norm.bias".into())
        );
        assert_eq!(checkpoint_remap("text_model.embeddings.position_ids"), Remap::Skip);
        assert_eq!(checkpoint_remap("embeddings.position_ids"), Remap::Skip);
    }

    #[test]
    fn load_round_trip_and_errors() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = CLIPTextConfig::tiny();
        let (vs, m) = tiny(&cfg);
        std::fs::write(dir.path().join("config.json"), serde_json::to_string(&cfg).unwrap()).unwrap();
        // As transformers 5 saves it (no prefix), with the old position_ids buffer.
        let mut tensors: Vec<(String, Tensor)> = vs
            .variables()
            .into_iter()
            .map(|(k, v)| (k.trim_start_matches("text_model.").to_string(), v))
            .collect();
        tensors.push((
            "embeddings.position_ids".into(),
            Tensor::arange(77, (Kind::Int64, Device::Cpu)).view([1, 77]),
        ));
        let weights = dir.path().join("model.safetensors");
        zoo_core::weights::save(&weights, &tensors, None).unwrap();
        let x = ids(&[&[998, 5, 6, 999]]);
        let loaded = CLIPTextModel::load(dir.path(), Device::Cpu, Kind::Float).unwrap();
        let want = m.forward(&x).unwrap();
        let got = loaded.forward(&x).unwrap();
        // Equal up to rounding: the trained model's weights require gradients and the loaded
        // ones do not, and libtorch may pick other kernels for the two (1 ulp on AVX-512).
        assert!(max_diff(&got.last_hidden_state, &want.last_hidden_state) < 1e-5);
        assert!(!got.last_hidden_state.requires_grad(), "loaded for inference");
        let half = CLIPTextModel::load(dir.path(), Device::Cpu, Kind::BFloat16).unwrap();
        assert_eq!(half.kind(), Kind::BFloat16);
        let got = half.forward(&x).unwrap().last_hidden_state.to_kind(Kind::Float);
        assert!(max_diff(&got, &want.last_hidden_state) < 0.1);

        // A missing weight is named, with the file.
        tensors.retain(|(k, _)| k != "final_layer_norm.bias");
        zoo_core::weights::save(&weights, &tensors, None).unwrap();
        let e = CLIPTextModel::load(dir.path(), Device::Cpu, Kind::Float).unwrap_err().to_string();
        assert!(e.contains("text_model.final_layer_norm.bias") && e.contains("model.safetensors"), "{e}");
        // Pickles are refused.
        std::fs::remove_file(&weights).unwrap();
        std::fs::write(dir.path().join("pytorch_model.bin"), b"PK\x03\x04").unwrap();
        let e = CLIPTextModel::load(dir.path(), Device::Cpu, Kind::Float).unwrap_err().to_string();
        assert!(e.contains("convert_to_safetensors"), "{e}");
        // A bad config names its file.
        std::fs::write(dir.path().join("config.json"), "{\"hidden_size\": 32}").unwrap();
        let e = CLIPTextModel::load(dir.path(), Device::Cpu, Kind::Float).unwrap_err().to_string();
        assert!(e.contains("config.json") && e.contains("vocab_size"), "{e}");
        assert!(CLIPTextModel::load(dir.path(), Device::Cpu, Kind::Int64).is_err());
    }
}
