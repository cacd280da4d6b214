//! zoo_diffusion::txt2img_train end to end on a tiny recipe: both stages train and their losses
//! fall, a run stopped in stage 2 and resumed repeats the uninterrupted run's losses exactly,
//! and the folder it writes is a Stable Diffusion pipeline that loads and draws.
//!
//! One test function on purpose: exact resume depends on libtorch's global generator, which
//! tests running in parallel threads of one binary would share.
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde_json::{json, Value};
use tch::{Device, Kind};
use zoo_core::data::scenes::Split;
use zoo_core::run::RunDir;
use zoo_core::train::trainer::Silent;
use zoo_diffusion::stable_diffusion::{Edit, Txt2ImgOptions};
use zoo_diffusion::txt2img_train::{self, Recipe};
use zoo_diffusion::{schedulers, StableDiffusion};

fn tiny_recipe() -> Recipe {
    let r = json!({
        "seed": 3,
        "image_size": 16,
        "max_length": 12,
        "vae": {
            "model": {"in_channels": 3, "out_channels": 3,
                      "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
                      "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
                      "block_out_channels": [8, 16], "layers_per_block": 1, "act_fn": "silu",
                      "latent_channels": 4, "norm_num_groups": 4, "sample_size": 16},
            "train": {"batch_size": 8, "lr": 0.002, "beta": 1e-6, "steps": 30, "eval_every": 15,
                      "recon": "l1", "iw_samples": 0},
            "scenes": 64,
            "crop": 8
        },
        "text_encoder": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                         "num_attention_heads": 2, "hidden_act": "gelu"},
        "unet": {"sample_size": 8, "block_out_channels": [16, 32], "layers_per_block": 1,
                 "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                 "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
                 "cross_attention_dim": 16, "attention_head_dim": 2, "norm_num_groups": 8},
        "scheduler": {"num_train_timesteps": 1000, "beta_schedule": "scaled_linear",
                      "beta_start": 0.00085, "beta_end": 0.012, "set_alpha_to_one": false,
                      "steps_offset": 1},
        "train": {"batch_size": 8, "lr": 0.002, "min_lr": 0.0005, "warmup_steps": 2, "steps": 12,
                  "ema_decay": 0.9, "caption_dropout": 0.2, "scenes": 48, "log_every": 1,
                  "sample_every": 6, "checkpoint_every": 4, "sample_steps": 2}
    });
    let r: Recipe = serde_json::from_value(r).unwrap();
    r.validate().unwrap();
    r
}

fn losses(run: &Path) -> Vec<(u64, f64)> {
    RunDir::open(run)
        .unwrap()
        .metrics()
        .unwrap()
        .iter()
        .filter_map(|r| Some((r.get("step")?.as_u64()?, r.get("loss")?.as_f64()?)))
        .collect()
}

static STEPS_SEEN: AtomicU64 = AtomicU64::new(0);

/// Asks the loop to stop before its 7th step of this process.
fn stop_at_seven() -> bool {
    STEPS_SEEN.fetch_add(1, Ordering::SeqCst) >= 7
}

#[test]
fn two_stages_train_resume_exactly_and_make_a_pipeline() {
    let recipe = tiny_recipe();
    let dir = tempfile::tempdir().unwrap();
    let device = Device::Cpu;

    // 1. the uninterrupted run
    let a = txt2img_train::open_run(&recipe, &dir.path().join("a"), false).unwrap();
    let o = txt2img_train::train_vae(&recipe, &a, device, &mut Silent, None).unwrap();
    assert_eq!((o.steps, o.interrupted), (30, false));
    let vae_loss = losses(&a.vae_run());
    let first = vae_loss.first().unwrap().1;
    let last = vae_loss.last().unwrap().1;
    assert!(last < 0.7 * first, "autoencoder loss {first} -> {last}");
    let vae_cfg: Value =
        serde_json::from_str(&std::fs::read_to_string(a.vae_model().join("config.json")).unwrap()).unwrap();
    let sf = vae_cfg["scaling_factor"].as_f64().unwrap();
    assert!(sf.is_finite() && sf > 0.0 && sf != 1.0, "scaling factor {sf}");
    // A finished stage 1 is not trained again.
    let again = txt2img_train::train_vae(&recipe, &a, device, &mut Silent, None).unwrap();
    assert_eq!(losses(&a.vae_run()), vae_loss);
    assert!(!again.interrupted);

    let o = txt2img_train::train_ldm(&recipe, &a, device, &mut Silent, None).unwrap();
    assert_eq!((o.steps, o.interrupted), (12, false));
    let full = losses(&a.ldm_run());
    assert_eq!(full.len(), 12);
    let head: f64 = full[..3].iter().map(|x| x.1).sum::<f64>() / 3.0;
    let tail: f64 = full[9..].iter().map(|x| x.1).sum::<f64>() / 3.0;
    assert!(tail < 0.8 * head, "denoising loss {head} -> {tail}");
    assert!(a.ldm_run().join("samples/step-000006.png").is_file());

    // 2. the same recipe, stopped in stage 2 and resumed: the very same losses
    let b_dir = dir.path().join("b");
    let b = txt2img_train::open_run(&recipe, &b_dir, false).unwrap();
    txt2img_train::train_vae(&recipe, &b, device, &mut Silent, None).unwrap();
    let o = txt2img_train::train_ldm(&recipe, &b, device, &mut Silent, Some(stop_at_seven)).unwrap();
    assert!(o.interrupted);
    assert!(!b.model().exists(), "an interrupted run writes no model");
    let b = txt2img_train::open_run(&recipe, &b_dir, true).unwrap();
    txt2img_train::train_ldm(&recipe, &b, device, &mut Silent, None).unwrap();
    assert_eq!(losses(&b.ldm_run()), full);

    // Starting over in a run folder, or resuming with another recipe, is refused.
    let e = txt2img_train::open_run(&recipe, &b_dir, false).unwrap_err().to_string();
    assert!(e.contains("already holds a run"), "{e}");
    let mut other = recipe.clone();
    other.train.lr *= 2.0;
    let e = txt2img_train::open_run(&other, &b_dir, true).unwrap_err().to_string();
    assert!(e.contains("another recipe"), "{e}");

    // 3. the folder is a Stable Diffusion pipeline: it loads, and a seed gives one picture
    let sd = StableDiffusion::load(&a.model(), device, Kind::Float).unwrap();
    assert_eq!(sd.default_size(), (16, 16));
    let words = txt2img_train::caption_words();
    assert!(words.iter().any(|w| w == "hexagons") && words.iter().any(|w| w == "left"));
    for w in &words {
        assert_eq!(sd.tokenizer.encode(w).unwrap().len(), 3, "'{w}' is not one token");
    }
    let caption =
        zoo_core::data::scenes::Scene::generate(3, txt2img_train::EVAL_START, Split::HeldOut).caption;
    let o = Txt2ImgOptions {
        prompt: caption,
        negative_prompt: None,
        steps: 3,
        guidance_scale: 3.0,
        seed: 5,
        height: None,
        width: None,
        num_samples: 2,
    };
    let draw = || {
        let mut s = schedulers::build("ddim", &sd.scheduler).unwrap();
        sd.generate(s.as_mut(), &o, &Edit::None, &mut |_, _| {}).unwrap().images
    };
    let x = draw();
    assert_eq!(x.size(), [2, 3, 16, 16]);
    assert!(x.equal(&draw()));
    assert!(b.model().join("unet/diffusion_pytorch_model.safetensors").is_file());
}
