//! `zoo txt2img`, `zoo img2img`, `zoo inpaint`: Stable-Diffusion-layout text-to-image on a
//! diffusers pipeline folder (zoo_diffusion::stable_diffusion).
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tch::{Device, Tensor};
use zoo_core::image::{load_image_rgb, save_image};
use zoo_diffusion::schedulers;
use zoo_diffusion::stable_diffusion::{load_mask, Edit, StableDiffusion, Txt2ImgOptions};
use zoo_diffusion::txt2img_train::{self, Recipe};

use crate::global::Global;

#[derive(clap::Args, Debug)]
pub struct CommonArgs {
    /// A diffusers Stable Diffusion folder (unet/, vae/, text_encoder/, tokenizer/, scheduler/).
    #[arg(long)]
    model: PathBuf,
    /// What the picture should show (CLIP reads 77 tokens; the rest is dropped with a warning).
    #[arg(long)]
    prompt: String,
    /// What it should not show (guidance pushes away from it; default: the empty prompt).
    #[arg(long)]
    negative_prompt: Option<String>,
    /// Denoising steps.
    #[arg(long, default_value_t = 30)]
    steps: usize,
    /// Classifier-free guidance scale (1 or less: no guidance, one UNet call per step).
    #[arg(long, default_value_t = 7.5)]
    guidance_scale: f64,
    /// The sampler (see `zoo diffusion schedulers`; default: the folder's own scheduler), with
    /// the settings of the folder's scheduler_config.json.
    #[arg(long)]
    scheduler: Option<String>,
    /// Images to make (one grid in --out).
    #[arg(long, default_value_t = 1)]
    num_samples: i64,
    /// The image (.png or .jpg); several images are written as one grid.
    #[arg(long)]
    out: PathBuf,
}

/// `zoo txt2img [generation flags]` or `zoo txt2img train ...`.
#[derive(clap::Args, Debug)]
#[command(args_conflicts_with_subcommands = true)]
pub struct Txt2ImgCmd {
    #[command(subcommand)]
    command: Option<Txt2ImgSub>,
    #[command(flatten)]
    generate: Option<CommonArgs>,
    /// Image width in pixels (a multiple of the VAE factor times the UNet's halvings; default:
    /// the model's sample size).
    #[arg(long)]
    width: Option<i64>,
    /// Image height in pixels (as --width).
    #[arg(long)]
    height: Option<i64>,
}

#[derive(clap::Subcommand, Debug)]
enum Txt2ImgSub {
    /// Trains a text-to-image model from nothing on the captioned scenes, from a recipe of
    /// models/txt2img/: the autoencoder, then the text encoder and UNet together. Writes the
    /// pipeline folder <out>/model/, which `zoo txt2img --model` reads.
    Train(TrainArgs),
}

#[derive(clap::Args, Debug)]
struct TrainArgs {
    /// A recipe of models/txt2img/ (scenes) or the path of a recipe file. Its "seed" decides the
    /// scenes, the initial weights and the data order (--seed is not used).
    #[arg(long, default_value = "scenes")]
    recipe: String,
    /// The run folder: recipe.json, vae/ and ldm/ (the two stages' runs), model/.
    #[arg(long)]
    out: PathBuf,
    /// Continue the run in --out from its latest checkpoint (with its own recipe).
    #[arg(long)]
    resume: bool,
    /// Report progress as JSON lines on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(clap::Args, Debug)]
pub struct Img2ImgArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The picture to start from; the output has its size.
    #[arg(long)]
    init_image: PathBuf,
    /// How much to change it: 0 keeps it, 1 ignores it (the schedule starts at this fraction).
    #[arg(long, default_value_t = 0.8)]
    strength: f64,
}

#[derive(clap::Args, Debug)]
pub struct InpaintArgs {
    #[command(flatten)]
    common: CommonArgs,
    /// The picture to repaint part of; the output has its size.
    #[arg(long)]
    init_image: PathBuf,
    /// A mask of the same size: white is repainted, black is kept.
    #[arg(long)]
    mask: PathBuf,
    /// How much of the schedule runs (1: the masked region starts from pure noise).
    #[arg(long, default_value_t = 1.0)]
    strength: f64,
}

pub fn txt2img(g: &Global, cmd: Txt2ImgCmd) -> Result<()> {
    match (cmd.command, cmd.generate) {
        (Some(Txt2ImgSub::Train(a)), _) => train(g, a),
        (None, Some(a)) => run(g, &a, Edit::None, cmd.height, cmd.width),
        (None, None) => {
            bail!("give --model, --prompt and --out to make a picture, or `zoo txt2img train` (see --help)")
        }
    }
}

fn train(g: &Global, a: TrainArgs) -> Result<()> {
    g.f32_training("zoo txt2img train")?;
    let path = if a.recipe.ends_with(".json") {
        PathBuf::from(&a.recipe)
    } else {
        zoo_core::presets::find_preset("txt2img", &a.recipe)?.path
    };
    let recipe = Recipe::load(&path)?;
    let paths = txt2img_train::open_run(&recipe, &a.out, a.resume)?;
    let device = g.device()?;
    let mut reporter = g.reporter(a.json);
    let t0 = std::time::Instant::now();
    g.note(format!("txt2img train: {} in {}; stage 1, the autoencoder", path.display(), a.out.display()));
    let o = txt2img_train::train_vae(&recipe, &paths, device, reporter.as_mut(), None)?;
    if o.interrupted {
        g.note(format!("stopped at autoencoder step {}; continue with --resume", o.steps));
        return Ok(());
    }
    g.note(format!(
        "stage 2, the text encoder and UNet ({} s so far); the first start encodes {} scenes",
        t0.elapsed().as_secs(),
        recipe.train.scenes
    ));
    let o = txt2img_train::train_ldm(&recipe, &paths, device, reporter.as_mut(), None)?;
    if o.interrupted {
        g.note(format!("stopped at step {}; continue with --resume", o.steps));
        return Ok(());
    }
    g.note(format!("done in {:.0} s", t0.elapsed().as_secs_f64()));
    println!("{}", paths.model().display());
    Ok(())
}

pub fn img2img(g: &Global, a: Img2ImgArgs) -> Result<()> {
    check_out(&a.common.out, &[&a.init_image])?;
    let image = load_image_rgb(&a.init_image)?.unsqueeze(0);
    run(g, &a.common, Edit::Img2Img { image, strength: a.strength }, None, None)
}

pub fn inpaint(g: &Global, a: InpaintArgs) -> Result<()> {
    check_out(&a.common.out, &[&a.init_image, &a.mask])?;
    let image = load_image_rgb(&a.init_image)?.unsqueeze(0);
    let mask = load_mask(&a.mask)?;
    let (ih, iw) = (image.size()[2], image.size()[3]);
    let (mh, mw) = (mask.size()[2], mask.size()[3]);
    if (ih, iw) != (mh, mw) {
        bail!(
            "--mask {}: it is {mw}x{mh} but --init-image is {iw}x{ih}; give a mask of the image's size",
            a.mask.display()
        );
    }
    run(g, &a.common, Edit::Inpaint { image, mask, strength: a.strength }, None, None)
}

/// Refuses an output name we cannot write, or one that would overwrite an input.
fn check_out(out: &Path, inputs: &[&Path]) -> Result<()> {
    let ext = out.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    if !["png", "jpg", "jpeg"].contains(&ext.as_str()) {
        bail!("--out {}: use a .png, .jpg or .jpeg name", out.display());
    }
    for i in inputs {
        if out == *i || (out.exists() && out.canonicalize().ok() == i.canonicalize().ok()) {
            bail!("--out {}: that is an input file; write the result elsewhere", out.display());
        }
    }
    Ok(())
}

fn run(g: &Global, a: &CommonArgs, edit: Edit, height: Option<i64>, width: Option<i64>) -> Result<()> {
    check_out(&a.out, &[])?;
    let device = g.device()?;
    let t0 = std::time::Instant::now();
    let sd = StableDiffusion::load(&a.model, device, g.dtype.kind())?;
    let name = match (&a.scheduler, &sd.scheduler_class) {
        (Some(n), _) => n.clone(),
        (None, Some(c)) => c.clone(),
        (None, None) => "pndm".to_string(),
    };
    let mut sched = schedulers::build(&name, &sd.scheduler)?;
    if g.verbose {
        g.note(format!(
            "loaded {} in {:.1} s; scheduler {}",
            a.model.display(),
            t0.elapsed().as_secs_f64(),
            sched.name()
        ));
    }
    let o = Txt2ImgOptions {
        prompt: a.prompt.clone(),
        negative_prompt: a.negative_prompt.clone(),
        steps: a.steps,
        guidance_scale: a.guidance_scale,
        seed: g.seed,
        height,
        width,
        num_samples: a.num_samples,
    };
    let mut bar: Option<indicatif::ProgressBar> = None;
    // The bar appears after the first step, so that bad options fail without one.
    let mut on_step = |_i: usize, total: usize| {
        if g.quiet {
            return;
        }
        let b = bar.get_or_insert_with(|| {
            let b = indicatif::ProgressBar::new(total as u64);
            let style = indicatif::ProgressStyle::with_template(
                "{bar:30.cyan/blue} {pos}/{len} steps {per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
            b.set_style(style);
            b
        });
        b.inc(1);
    };
    let t1 = std::time::Instant::now();
    let out = sd.generate(sched.as_mut(), &o, &edit, &mut on_step)?;
    if let Some(b) = bar.take() {
        b.finish_and_clear();
    }
    for t in &out.truncated {
        g.note(format!("warning: CLIP reads 77 tokens; this part of the prompt was dropped: \"{t}\""));
    }
    let [te, unet, vae] = out.seconds;
    g.note(format!(
        "{} image(s) of {:?} with {} ({} steps) in {:.3} s",
        a.num_samples,
        &out.images.size()[1..],
        sched.name(),
        a.steps,
        t1.elapsed().as_secs_f64()
    ));
    if g.verbose {
        g.note(format!("seconds: text encoder {te:.3}, UNet {unet:.3}, VAE {vae:.3}"));
    }
    // save_image takes [-1, 1].
    let images = out.images.to_device(Device::Cpu).f_mul_scalar(2.0)?.f_sub_scalar(1.0)?;
    save_image(&images, &a.out)?;
    println!("{}", a.out.display());
    Ok(())
}

/// The guidance scale of the demo (the best of the measured scales, docs/text-to-image.md).
const DEMO_GUIDANCE: f64 = 3.0;
/// The shipped pipeline the demo draws with (`models/txt2img/NAME/`).
pub const DEMO_MODEL: &str = "scenes";

/// The demo's prompts: four with shape-colour pairs the model trained on, four it never saw
/// (red star, blue circle, white diamond, green hexagon are held out of its training scenes).
const DEMO_PROMPTS: [&str; 8] = [
    "a red circle in the top left",
    "a small blue square in the center",
    "two yellow triangles",
    "a green star to the left of a purple hexagon",
    "a red star",
    "a large blue circle in the bottom right",
    "a white diamond above an orange square",
    "two green hexagons",
];

/// `zoo demo`'s text-to-image part: the shipped scenes model (models/txt2img/scenes) draws the
/// prompts above, seen and held-out combinations, into one grid.
pub fn demo(g: &Global, dir: &Path, device: Device) -> Result<Vec<PathBuf>> {
    let model = zoo_core::presets::models_dir().join("txt2img").join(DEMO_MODEL);
    let sd = StableDiffusion::load(&model, device, tch::Kind::Float)?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let mut images = Vec::new();
    for (i, p) in DEMO_PROMPTS.iter().enumerate() {
        let mut sched = schedulers::build("ddim", &sd.scheduler)?;
        let o = Txt2ImgOptions {
            prompt: p.to_string(),
            negative_prompt: None,
            steps: 25,
            guidance_scale: DEMO_GUIDANCE,
            seed: g.seed + i as u64,
            height: None,
            width: None,
            num_samples: 1,
        };
        images.push(sd.generate(sched.as_mut(), &o, &Edit::None, &mut |_, _| {})?.images);
    }
    let grid = Tensor::f_cat(&images, 0)?.f_mul_scalar(2.0)?.f_sub_scalar(1.0)?.f_to_device(Device::Cpu)?;
    let png = dir.join("scenes.png");
    save_image(&grid, &png)?;
    let txt = dir.join("scenes-prompts.txt");
    std::fs::write(&txt, DEMO_PROMPTS.join("\n") + "\n")
        .with_context(|| format!("writing {}", txt.display()))?;
    g.note(format!(
        "txt2img: the scenes model drew {} prompts (the last four are combinations it never saw)",
        DEMO_PROMPTS.len()
    ));
    Ok(vec![png, txt])
}
