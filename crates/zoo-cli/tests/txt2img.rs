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
