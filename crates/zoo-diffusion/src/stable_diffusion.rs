//! Latent diffusion with text: the Stable Diffusion pipelines of diffusers (0.42
//! `pipelines/stable_diffusion/`: `StableDiffusionPipeline`, `StableDiffusionImg2ImgPipeline`,
//! `StableDiffusionInpaintPipeline`) on zoo's parts: the CLIP text encoder and tokenizer
//! ([`crate::clip`]), [`UNet2DConditionModel`], zoo-vae's [`AutoencoderKL`] and every
//! zoo-diffusion scheduler.
//!
//! A model is a diffusers pipeline folder, loaded as it is (safetensors only):
//! `model_index.json` (optional), `unet/`, `vae/`, `text_encoder/`, `tokenizer/` and
//! `scheduler/scheduler_config.json`.
//!
//! The semantics follow diffusers, so a seed gives the image diffusers gives:
//! - the prompt is tokenized into CLIP's 77-token window (longer prompts are truncated and the
//!   dropped text reported, never an error); classifier-free guidance runs only when the
//!   guidance scale is > 1, with the negative prompt (empty = unconditional) as the first half
//!   of the batch: `uncond + g * (text - uncond)`;
//! - libtorch's generator is seeded with the seed right before the first draw; txt2img draws the
//!   latents `randn(B, 4, H/8, W/8) * init_noise_sigma` first; img2img draws the VAE posterior
//!   sample of the image (batch 1), then the noise; inpainting draws the image's posterior
//!   sample (4-channel UNets, or strength < 1), then the noise, then the masked image's sample;
//!   the stochastic schedulers draw after that;
//! - img2img and inpainting start the schedule part-way: of n steps, the last
//!   `min(floor(n * strength), n)` run, from the image's latents noised to the first of them;
//! - inpainting (white = repaint) feeds 9-channel inpainting UNets the latents, the mask at
//!   latent resolution and the masked image's latents; ordinary 4-channel UNets instead have the
//!   unmasked region replaced after every step by the image's latents noised to the next step
//!   (the latent-blend method);
//! - latents are scaled by the VAE's `scaling_factor` (no `shift_factor`, as SD's pipelines);
//!   images leave the VAE as `(x / 2 + 0.5).clamp(0, 1)`.
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde_json::Value;
use tch::{nn::VarStore, Device, Kind, Tensor};
use zoo_vae::{AutoencoderKL, AutoencoderKLConfig};

use crate::clip::{CLIPTextModel, ClipTokenizer};
use crate::schedulers::{Scheduler, SchedulerConfig};
use crate::unet::{UNet2DConditionConfig, UNet2DConditionModel};
use crate::{Error, Result};

/// The parts of a Stable Diffusion pipeline folder.
pub struct StableDiffusion {
    pub unet: UNet2DConditionModel,
    pub unet_vs: VarStore,
    pub vae: AutoencoderKL,
    pub vae_vs: VarStore,
    pub text_encoder: CLIPTextModel,
    pub tokenizer: ClipTokenizer,
    pub scheduler: SchedulerConfig,
    /// The scheduler class the folder names (`scheduler_config.json`'s `_class_name`).
    pub scheduler_class: Option<String>,
    pub dir: PathBuf,
}

fn read_json(path: &Path) -> Result<Value> {
    let text = std::fs::read_to_string(path).map_err(|e| zoo_core::Error::io(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| Error::Core(zoo_core::Error::bad_file(path, format!("not valid JSON: {e}"))))
}

/// `dir/name`, or an error naming the missing component folder.
fn component(dir: &Path, name: &str) -> Result<PathBuf> {
    let p = dir.join(name);
    if p.is_dir() {
        Ok(p)
    } else {
        Err(Error::Config(format!(
            "{}: no {name}/ folder; a Stable Diffusion folder has unet/, vae/, text_encoder/, tokenizer/ and scheduler/",
            dir.display()
        )))
    }
}

/// Builds a model from `dir/config.json` with `new` and loads `dir`'s weights strictly.
pub(crate) fn load_part<M>(
    dir: &Path,
    device: Device,
    kind: Kind,
    new: impl FnOnce(&VarStore, &Value) -> Result<M>,
) -> Result<(M, VarStore)> {
    let cfg_path = dir.join("config.json");
    let cfg = read_json(&cfg_path)?;
    let mut vs = VarStore::new(device);
    let model = new(&vs, &cfg).map_err(|e| Error::Config(format!("{}: {e}", cfg_path.display())))?;
    if kind != Kind::Float {
        vs.set_kind(kind);
    }
    for f in zoo_core::weights::weight_files(dir)? {
        zoo_core::weights::load_into(&vs, &f, &zoo_core::weights::keep_names)?;
    }
    Ok((model, vs))
}

/// Is `dir` a Stable Diffusion pipeline folder (a `unet/` whose config has cross-attention)?
pub fn is_pipeline_dir(dir: &Path) -> bool {
    dir.join("text_encoder").is_dir() && dir.join("unet").join("config.json").is_file()
}

impl StableDiffusion {
    /// Loads the folder's parts on `device`: the UNet and text encoder in `kind`, the VAE in
    /// f32 (as diffusers' `force_upcast` does for f16 pipelines).
    pub fn load(dir: &Path, device: Device, kind: Kind) -> Result<Self> {
        if !dir.is_dir() {
            return Err(Error::Config(format!("{}: no such folder", dir.display())));
        }
        if !matches!(kind, Kind::Float | Kind::Half | Kind::BFloat16 | Kind::Double) {
            return Err(Error::Config(format!("Stable Diffusion runs in a float dtype, not {kind:?}")));
        }
        let (unet, unet_vs) = load_part(&component(dir, "unet")?, device, kind, |vs, v| {
            UNet2DConditionModel::new(vs.root(), &UNet2DConditionConfig::from_value(v)?)
        })?;
        let (vae, vae_vs) = load_part(&component(dir, "vae")?, device, Kind::Float, |vs, v| {
            let cfg: AutoencoderKLConfig = serde_json::from_value(v.clone())
                .map_err(|e| Error::Config(format!("AutoencoderKL config: {e}")))?;
            Ok(AutoencoderKL::new(vs.root(), &cfg)?)
        })?;
        let text_encoder = CLIPTextModel::load(&component(dir, "text_encoder")?, device, kind)?;
        let tokenizer = ClipTokenizer::from_dir(&component(dir, "tokenizer")?)?;
        let sched_path = component(dir, "scheduler")?.join("scheduler_config.json");
        let sched_json = read_json(&sched_path)?;
        let (scheduler, _ignored) = SchedulerConfig::from_value(&sched_json)
            .map_err(|e| Error::Config(format!("{}: {e}", sched_path.display())))?;
        let scheduler_class = sched_json.get("_class_name").and_then(Value::as_str).map(String::from);
        if text_encoder.config.hidden_size != unet.cross_attention_dim() {
            return Err(Error::Config(format!(
                "{}: the text encoder gives {}-wide features but the UNet's cross_attention_dim is {}",
                dir.display(),
                text_encoder.config.hidden_size,
                unet.cross_attention_dim()
            )));
        }
        Ok(StableDiffusion {
            unet,
            unet_vs,
            vae,
            vae_vs,
            text_encoder,
            tokenizer,
            scheduler,
            scheduler_class,
            dir: dir.to_path_buf(),
        })
    }

    /// How many pixels one latent covers along each side (`2^(VAE blocks - 1)`).
    pub fn vae_scale_factor(&self) -> i64 {
        self.vae.cfg.downsample_factor()
    }

    /// The default image size: the UNet's `sample_size` in pixels.
    pub fn default_size(&self) -> (i64, i64) {
        let (h, w) = self.unet.config.sample_size.as_ref().map_or((64, 64), super::unet::SampleSize::hw);
        (h * self.vae_scale_factor(), w * self.vae_scale_factor())
    }

    /// Whether the UNet takes the 9-channel inpainting input (latents, mask, masked image).
    pub fn is_inpainting_unet(&self) -> bool {
        self.unet.config.in_channels == 9
    }

    /// Prompt embeddings (1, 77, D) and the text the 77-token window dropped, if any.
    pub fn encode_prompt(&self, prompt: &str) -> Result<(Tensor, Option<String>)> {
        let (ids, truncated) = self.tokenizer.encode_padded(prompt)?;
        let device = self.unet_vs.device();
        let ids = Tensor::f_from_slice(&ids)?.f_view([1, -1])?.f_to_device(device)?;
        let emb = tch::no_grad(|| self.text_encoder.prompt_embeds(&ids, None))?;
        Ok((emb, truncated))
    }
}

/// What to make.
#[derive(Debug, Clone)]
pub struct Txt2ImgOptions {
    pub prompt: String,
    /// None: the empty prompt (unconditional) when guiding.
    pub negative_prompt: Option<String>,
    pub steps: usize,
    /// Classifier-free guidance; 1 or below runs the UNet once per step without it.
    pub guidance_scale: f64,
    pub seed: u64,
    /// Pixels; None takes the UNet's sample size (or the init image's size when editing).
    pub height: Option<i64>,
    pub width: Option<i64>,
    pub num_samples: i64,
}

/// An image to start from.
#[derive(Debug)]
pub enum Edit {
    /// Text to image from pure noise.
    None,
    /// img2img: `image` (1, 3, H, W) in [-1, 1], noised to `strength` of the schedule.
    Img2Img { image: Tensor, strength: f64 },
    /// Inpainting: `image` (1, 3, H, W) in [-1, 1], `mask` (1, 1, H, W) in [0, 1] (white = repaint).
    Inpaint { image: Tensor, mask: Tensor, strength: f64 },
}

/// The images and what it took.
pub struct Txt2ImgOutput {
    /// (B, 3, H, W) in [0, 1].
    pub images: Tensor,
    /// The part of the prompt (or negative prompt) beyond CLIP's window, which was dropped.
    pub truncated: Vec<String>,
    /// Seconds in the text encoder, the UNet and the VAE.
    pub seconds: [f64; 3],
}

impl StableDiffusion {
    /// Runs the pipeline: txt2img, img2img or inpainting (see the module docs for the exact
    /// semantics). `on_step(i, n)` is called after each denoising step.
    pub fn generate(
        &self,
        scheduler: &mut dyn Scheduler,
        o: &Txt2ImgOptions,
        edit: &Edit,
        on_step: &mut dyn FnMut(usize, usize),
    ) -> Result<Txt2ImgOutput> {
        let device = self.unet_vs.device();
        let kind = self.unet_vs.root().kind();
        let f = self.vae_scale_factor();
        let (height, width) = self.check_options(o, edit)?;
        let b = o.num_samples;
        let guided = o.guidance_scale > 1.0;
        let mut seconds = [0.0; 3];

        // 1. the prompt embeddings: [negative; prompt] when guiding, one row per image
        let t0 = Instant::now();
        let (cond, cut) = self.encode_prompt(&o.prompt)?;
        let mut truncated: Vec<String> = cut.into_iter().collect();
        let text = if guided {
            let (uncond, cut) = self.encode_prompt(o.negative_prompt.as_deref().unwrap_or(""))?;
            truncated.extend(cut);
            Tensor::f_cat(&[uncond.f_expand([b, -1, -1], false)?, cond.f_expand([b, -1, -1], false)?], 0)?
        } else {
            cond.f_expand([b, -1, -1], false)?
        }
        .f_to_kind(kind)?
        .f_contiguous()?;
        seconds[0] += t0.elapsed().as_secs_f64();

        // 2. the schedule, started part-way when editing
        scheduler.set_timesteps(o.steps)?;
        let all = scheduler.timesteps().to_vec();
        let strength = match edit {
            Edit::None => 1.0,
            Edit::Img2Img { strength, .. } | Edit::Inpaint { strength, .. } => *strength,
        };
        let init = ((o.steps as f64 * strength).floor() as usize).min(o.steps);
        let t_start = o.steps - init;
        if init < 1 {
            return Err(Error::Config(format!(
                "strength {strength}: with {} steps no denoising step is left; raise the strength or the steps",
                o.steps
            )));
        }
        let timesteps = all[(t_start * scheduler.order()).min(all.len())..].to_vec();
        let first_t = Tensor::from_slice(&vec![timesteps[0]; b as usize]).to_device(device);

        // 3. the starting latents; the draws follow diffusers' order (module docs)
        let latent_shape = [b, self.vae.cfg.latent_channels, height / f, width / f];
        let sf = self.vae.cfg.scaling_factor;
        let mut encode = |img: &Tensor| -> Result<Tensor> {
            let t = Instant::now();
            let z = tch::no_grad(|| -> Result<Tensor> {
                let q = self.vae.encode(&img.f_to_device(device)?.f_to_kind(Kind::Float)?)?;
                Ok(q.sample()?.f_mul_scalar(sf)?)
            })?;
            seconds[2] += t.elapsed().as_secs_f64();
            Ok(z.f_expand([b, -1, -1, -1], false)?.f_contiguous()?)
        };
        let randn = || -> Result<Tensor> {
            Ok(Tensor::f_randn(latent_shape, (Kind::Float, Device::Cpu))?.f_to_device(device)?)
        };
        zoo_core::seed::seed_all(o.seed);
        // (inpainting) the mask at latent resolution and the masked image's latents
        let mut blend: Option<(Tensor, Tensor, Tensor)> = None; // (image latents, noise, mask)
        let mut unet_extra: Option<Tensor> = None; // (B, 5, h, w) for 9-channel UNets
        let mut latents = match edit {
            Edit::None => randn()?.f_mul_scalar(scheduler.init_noise_sigma())?,
            Edit::Img2Img { image, .. } => {
                let z = encode(image)?;
                let noise = randn()?;
                scheduler.add_noise(&z, &noise, &first_t)?
            }
            Edit::Inpaint { image, mask, .. } => {
                let blend_latents = !self.is_inpainting_unet();
                let z = if blend_latents || strength < 1.0 { Some(encode(image)?) } else { None };
                let noise = randn()?;
                let start = match (&z, strength < 1.0) {
                    (Some(z), true) => scheduler.add_noise(z, &noise, &first_t)?,
                    _ => noise.f_mul_scalar(scheduler.init_noise_sigma())?,
                };
                let mask = binarize(mask)?;
                let keep = mask.f_lt(0.5)?.f_to_kind(Kind::Float)?;
                let masked = encode(&image.f_mul(&keep)?)?;
                let small = mask.f_upsample_nearest2d([height / f, width / f], None, None)?;
                let small = small.f_to_device(device)?.f_expand([b, -1, -1, -1], false)?.f_contiguous()?;
                if blend_latents {
                    if let Some(z) = z {
                        blend = Some((z, noise, small));
                    }
                } else {
                    unet_extra = Some(Tensor::f_cat(&[small, masked], 1)?.f_to_kind(kind)?);
                }
                start
            }
        };

        // 4. the denoising loop
        let n = timesteps.len();
        tch::no_grad(|| -> Result<()> {
            for (i, &t) in timesteps.iter().enumerate() {
                let tu = Instant::now();
                let x = scheduler.scale_model_input(&latents, t)?.f_to_kind(kind)?;
                let x = if guided { Tensor::f_cat(&[&x, &x], 0)? } else { x };
                let x = match &unet_extra {
                    Some(e) if guided => Tensor::f_cat(&[x, Tensor::f_cat(&[e, e], 0)?], 1)?,
                    Some(e) => Tensor::f_cat(&[&x, e], 1)?,
                    None => x,
                };
                let t_tensor = Tensor::from_slice(&[t]).to_device(device);
                let out = self.unet.forward(&x, &t_tensor, &text)?.f_to_kind(Kind::Float)?;
                let eps = if guided {
                    let parts = out.f_chunk(2, 0)?;
                    let (uncond, cond) = (&parts[0], &parts[1]);
                    uncond.f_add(&cond.f_sub(uncond)?.f_mul_scalar(o.guidance_scale)?)?
                } else {
                    out
                };
                latents = scheduler.step(&eps, t, &latents)?.prev_sample;
                if let Some((z, noise, mask)) = &blend {
                    let proper = match timesteps.get(i + 1) {
                        Some(&next) => {
                            let next = Tensor::from_slice(&vec![next; b as usize]).to_device(device);
                            scheduler.add_noise(z, noise, &next)?
                        }
                        None => z.shallow_clone(),
                    };
                    let inv = mask.f_neg()?.f_add_scalar(1.0)?;
                    latents = proper.f_mul(&inv)?.f_add(&mask.f_mul(&latents)?)?;
                }
                seconds[1] += tu.elapsed().as_secs_f64();
                on_step(i + 1, n);
            }
            Ok(())
        })?;

        // 5. decode
        let tv = Instant::now();
        let images = tch::no_grad(|| -> Result<Tensor> {
            let z = latents.f_to_kind(Kind::Float)?.f_div_scalar(sf)?;
            Ok(self.vae.decode(&z)?.f_div_scalar(2.0)?.f_add_scalar(0.5)?.f_clamp(0.0, 1.0)?)
        })?;
        seconds[2] += tv.elapsed().as_secs_f64();
        Ok(Txt2ImgOutput { images, truncated, seconds })
    }

    /// The image size, after checking every option against the model and the edit.
    fn check_options(&self, o: &Txt2ImgOptions, edit: &Edit) -> Result<(i64, i64)> {
        if o.num_samples < 1 {
            return Err(Error::Config(format!("num_samples {}: must be at least 1", o.num_samples)));
        }
        if o.steps < 1 {
            return Err(Error::Config("steps: must be at least 1".into()));
        }
        if !o.guidance_scale.is_finite() || o.guidance_scale < 0.0 {
            return Err(Error::Config(format!("guidance scale {}: must be 0 or more", o.guidance_scale)));
        }
        let f = self.vae_scale_factor() * (1 << self.unet.config.downsamples());
        let image_size = match edit {
            Edit::None => None,
            Edit::Img2Img { image, strength } | Edit::Inpaint { image, strength, .. } => {
                if !(0.0..=1.0).contains(strength) {
                    return Err(Error::Config(format!("strength {strength}: must be in [0, 1]")));
                }
                match image.size().as_slice() {
                    &[1, 3, h, w] => Some((h, w)),
                    s => return Err(Error::Input(format!("the init image must be (1, 3, H, W), got {s:?}"))),
                }
            }
        };
        if let Edit::Inpaint { mask, .. } = edit {
            let (h, w) = image_size.unwrap_or_default();
            if mask.size() != [1, 1, h, w] {
                return Err(Error::Input(format!(
                    "the mask is {:?} but the init image is {h}x{w}: give a mask of the image's size",
                    &mask.size()[2..]
                )));
            }
            if self.is_inpainting_unet() {
                // 4 latent + 1 mask + 4 masked-image channels.
            } else if self.unet.config.in_channels != self.vae.cfg.latent_channels {
                return Err(Error::Config(format!(
                    "the UNet takes {} channels: inpainting needs a {}-channel UNet (latent blending) or a 9-channel inpainting UNet",
                    self.unet.config.in_channels, self.vae.cfg.latent_channels
                )));
            }
        } else if self.is_inpainting_unet() {
            return Err(Error::Config(
                "this is an inpainting model (a 9-channel UNet): use it for inpainting with an image and a mask".into(),
            ));
        }
        let (dh, dw) = image_size.unwrap_or_else(|| self.default_size());
        let (h, w) = (o.height.unwrap_or(dh), o.width.unwrap_or(dw));
        if let Some((ih, iw)) = image_size {
            if (h, w) != (ih, iw) {
                return Err(Error::Input(format!(
                    "the init image is {iw}x{ih} but {w}x{h} was asked for: give an image of the output size"
                )));
            }
        }
        if h < f || w < f || h % f != 0 || w % f != 0 {
            return Err(Error::Config(format!(
                "width {w} and height {h}: both must be positive multiples of {f} (the VAE factor {} times the UNet's {} halvings)",
                self.vae_scale_factor(),
                self.unet.config.downsamples()
            )));
        }
        Ok((h, w))
    }
}

/// Reads an inpainting mask as (1, 1, H, W) in [0, 1]: grey as PIL's `convert("L")` makes it
/// (ITU-R 601-2 luma in integer arithmetic), which is what diffusers' mask processor sees.
pub fn load_mask(path: &Path) -> Result<Tensor> {
    // load_image_rgb gives (3, H, W) in [-1, 1]; back to the file's 8-bit values.
    let rgb = zoo_core::image::load_image_rgb(path)?;
    let v = rgb.f_add_scalar(1.0)?.f_mul_scalar(127.5)?.f_round()?.f_to_kind(Kind::Int64)?;
    let w = Tensor::from_slice(&[19595i64, 38470, 7471]).view([3, 1, 1]);
    let l = v.f_mul(&w)?.f_sum_dim_intlist([0i64].as_slice(), true, Kind::Int64)?.f_add_scalar(32768)?;
    let l = l.f_div_scalar_mode(65536, "floor")?.f_to_kind(Kind::Float)?.f_div_scalar(255.0)?;
    Ok(l.f_unsqueeze(0)?)
}

/// diffusers' mask preprocessing: values below 0.5 become 0, the rest 1.
fn binarize(mask: &Tensor) -> Result<Tensor> {
    Ok(mask.f_ge(0.5)?.f_to_kind(Kind::Float)?)
}
