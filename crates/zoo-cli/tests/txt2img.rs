//! `zoo txt2img`, `zoo img2img`, `zoo inpaint` end to end on the tiny diffusers pipeline of
//! tests/fixtures/sd (tools/make_sd_fixtures.py): the image equals diffusers' for the same seed
//! (up to 8-bit rounding), and bad input gets one `error:` line.
use std::path::Path;

mod common;

use common::{fails, zoo};
use tch::{Kind, Tensor};

fn fixture(p: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/fixtures/sd")
        .join(p)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn txt2img_writes_diffusers_image() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("a.png");
    let model = fixture("sd1-tiny");
    let o = zoo()
        .args(["--seed", "0", "-q", "txt2img", "--model", &model, "--steps", "4", "--num-samples", "1"])
        .args(["--prompt", "a photo of an astronaut riding a horse on mars"])
        .args(["--negative-prompt", "blurry, low quality", "--out", out.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(o.stderr.is_empty(), "-q printed {}", String::from_utf8_lossy(&o.stderr));
    // diffusers' first image of the same case (seed 0 draws the first image's latents first).
    let want = zoo_core::weights::load(Path::new(&fixture("sd1-tiny/expected.safetensors")))
        .unwrap()
        .into_iter()
        .find(|(k, _)| k == "txt2img_cfg.images")
        .unwrap()
        .1
        .get(0)
        .permute([2, 0, 1]);
    let got = (zoo_core::image::load_image_rgb(&out).unwrap() + 1.0) / 2.0;
    let d = (&got - &want).abs().max().double_value(&[]);
    assert!(d <= 1.0 / 255.0 + 1e-4, "PNG differs from diffusers' image by {d}");
}

#[test]
fn bad_input_is_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.png");
    let out = out.to_str().unwrap();
    let model = fixture("sd1-tiny");
    let init = fixture("sd1-tiny/init.png");
    let base = ["--model", model.as_str(), "--prompt", "a cat", "--steps", "2"];
    fails(&[&["txt2img"][..], &base, &["--width", "30", "--out", out]].concat(), 1, "multiples of 4");
    fails(&[&["txt2img"][..], &base, &["--out", "x.gif"]].concat(), 1, "--out x.gif");
    fails(&["txt2img", "--model", "/nonexistent/sd", "--prompt", "x", "--out", out], 1, "no such folder");
    fails(
        &[&["img2img"][..], &base, &["--init-image", &init, "--strength", "1.5", "--out", out]].concat(),
        1,
        "strength 1.5",
    );
    fails(&[&["img2img"][..], &base, &["--init-image", &init, "--out", &init]].concat(), 1, "input file");
    let mask = fixture("sd1-inpaint-tiny/mask.png");
    let inpaint = fixture("sd1-inpaint-tiny");
    fails(
        &["txt2img", "--model", &inpaint, "--prompt", "x", "--steps", "2", "--out", out],
        1,
        "inpainting model",
    );
    // A mask of another size than the image.
    let small = dir.path().join("small.png");
    zoo_core::image::save_image(&Tensor::zeros([3, 16, 16], (Kind::Float, tch::Device::Cpu)), &small)
        .unwrap();
    let args =
        [&["inpaint"][..], &base, &["--init-image", &init, "--mask", small.to_str().unwrap(), "--out", out]]
            .concat();
    fails(&args, 1, "mask");
    assert!(Path::new(&mask).is_file());
    fails(&["txt2img", "--model", &model, "--out", out], 2, "--prompt");
}

/// A recipe small enough for a test: 64x64 scenes, a two-level autoencoder, a one-layer text
/// encoder and a two-level UNet, a few steps each.
fn tiny_recipe(dir: &Path) -> String {
    let r = serde_json::json!({
        "seed": 1, "image_size": 64, "max_length": 12,
        "vae": {
            "model": {"in_channels": 3, "out_channels": 3,
                      "down_block_types": ["DownEncoderBlock2D", "DownEncoderBlock2D"],
                      "up_block_types": ["UpDecoderBlock2D", "UpDecoderBlock2D"],
                      "block_out_channels": [8, 16], "layers_per_block": 1, "act_fn": "silu",
                      "latent_channels": 4, "norm_num_groups": 4},
            "train": {"batch_size": 4, "lr": 0.001, "beta": 1e-6, "steps": 4, "recon": "l1", "iw_samples": 0},
            "scenes": 16, "crop": 16
        },
        "text_encoder": {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 1,
                         "num_attention_heads": 2, "hidden_act": "gelu"},
        "unet": {"sample_size": 32, "block_out_channels": [16, 32], "layers_per_block": 1,
                 "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
                 "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"],
                 "cross_attention_dim": 16, "attention_head_dim": 2, "norm_num_groups": 8},
        "scheduler": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
        "train": {"batch_size": 4, "lr": 0.001, "min_lr": 0.0001, "steps": 3, "ema_decay": 0.9,
                  "caption_dropout": 0.1, "scenes": 8, "log_every": 1}
    });
    let p = dir.join("tiny.json");
    std::fs::write(&p, serde_json::to_string(&r).unwrap()).unwrap();
    p.to_string_lossy().into_owned()
}

#[test]
fn train_a_model_draw_with_it_and_score_it() {
    let dir = tempfile::tempdir().unwrap();
    let recipe = tiny_recipe(dir.path());
    let run = dir.path().join("run");
    let run_s = run.to_str().unwrap();
    let o = zoo().args(["-q", "txt2img", "train", "--recipe", &recipe, "--out", run_s]).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let model = run.join("model");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), model.to_str().unwrap());
    for part in ["model_index.json", "unet/config.json", "vae/config.json", "text_encoder/model.safetensors"]
    {
        assert!(model.join(part).is_file(), "{part}");
    }
    // The same run again is refused; resuming a finished run changes nothing.
    fails(&["txt2img", "train", "--recipe", &recipe, "--out", run_s], 1, "already holds a run");
    let o = zoo()
        .args(["-q", "txt2img", "train", "--recipe", &recipe, "--out", run_s, "--resume"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));

    let png = dir.path().join("a.png");
    let m = model.to_str().unwrap();
    let o = zoo()
        .args(["-q", "txt2img", "--model", m, "--prompt", "a red circle in the top left", "--steps", "2"])
        .args(["--out", png.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let img = zoo_core::image::load_image_rgb(&png).unwrap();
    assert_eq!(img.size(), [3, 64, 64]);

    let scorer = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/eval/scenes-scorer");
    let o = zoo()
        .args(["-q", "eval", "scenes-adherence", "--model", m, "--scorer", scorer.to_str().unwrap()])
        .args(["--num", "3", "--steps", "2", "--guidance-scale", "1,2", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    for split in ["seen", "held-out"] {
        let c = v["autoencoder_ceiling"][split].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&c), "{split} ceiling {c}");
    }
    let cols = v["columns"].as_array().unwrap();
    assert_eq!(cols.len(), 4, "two scales x seen / held-out");
    for c in cols {
        let all = c["accuracy"]["all correct"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&all));
        assert!(c["frechet"].as_f64().unwrap().is_finite());
    }

    fails(&["txt2img", "train", "--recipe", "no-such-recipe", "--out", run_s], 1, "unknown txt2img preset");
    fails(&["txt2img", "--steps", "3"], 2, "--model");
}
