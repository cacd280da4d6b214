//! `zoo info`: what this zoo is built on and what it can run.
use anyhow::Result;
use serde_json::json;
use zoo_core::{device, presets};

use crate::global::Global;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

/// The model families this build has, with their subcommand. Each family's issue adds its line
/// when its commands work.
pub const FAMILIES: &[(&str, &str)] = &[
    (
        "llm",
        "zoo llm: GPT-2, Llama, Mistral, Qwen2 from HF checkpoints; generate (KV cache, samplers), chat, tokens, arch, score, tokenizer train",
    ),
    (
        "diffusion",
        "zoo diffusion: diffusers' UNet2DModel, DDPM/DDIM/Euler/Euler-a/DPM++ schedulers; sample (guidance), arch, train",
    ),
    (
        "vae",
        "zoo vae: MLP, conv and beta-VAEs, diffusers' AutoencoderKL; train, eval, sample, reconstruct, interpolate, encode, decode",
    ),
    (
        "gan",
        "zoo gan: DCGAN (PyTorch recipe layout), conditional DCGAN, StyleGAN2-style; BCE, hinge, WGAN-GP, spectral norm, R1; train, sample, interpolate, arch",
    ),
    (
        "flow",
        "zoo flow: WaveGlow vocoder (NVIDIA's layout; train on WAVs, vocode with sigma and denoiser, mel), RealNVP/Glow 2-D densities",
    ),
];

pub fn run(g: &Global, a: Args) -> Result<()> {
    let libtorch = device::libtorch_version();
    let cuda = device::load_cuda();
    let cuda_devices = device::cuda_device_count();
    let presets = presets::all()?;
    let (models, source) = presets::locate_models();
    let built_in = |p: &presets::Preset| p.path.starts_with(presets::BUILT_IN_DIR);
    if a.json {
        let v = json!({
            "zoo": env!("CARGO_PKG_VERSION"),
            "tch": TCH_VERSION,
            "libtorch": libtorch,
            "cuda": {
                "available": cuda_devices > 0,
                "devices": cuda_devices,
                "note": cuda.err(),
            },
            "mps": tch::utils::has_mps(),
            "threads": device::threads(),
            "gemv_kernel": zoo_core::ops::gemv_available(),
            "kernels": if zoo_core::ops::libtorch_only() { "libtorch" } else { "zoo" },
            "device": g.device.to_string(),
            "families": FAMILIES.iter().map(|(f, _)| f).collect::<Vec<_>>(),
            "models": {
                "dir": models.display().to_string(),
                "found": source != presets::ModelsSource::Missing,
                "source": format!("{source:?}"),
            },
            "presets": presets.iter().map(|p| format!("{}/{}", p.family, p.name)).collect::<Vec<_>>(),
            "built_in_presets": presets.iter().filter(|p| built_in(p)).map(|p| format!("{}/{}", p.family, p.name)).collect::<Vec<_>>(),
        });
        println!("{v}");
        return Ok(());
    }
    println!("zoo {}", env!("CARGO_PKG_VERSION"));
    println!("tch {TCH_VERSION}, libtorch {}", libtorch.as_deref().unwrap_or("(version unknown)"));
    match (cuda_devices, cuda) {
        (n, _) if n > 0 => {
            let names: Vec<String> = (0..n).map(|i| format!("cuda:{i}")).collect();
            println!("CUDA: {n} device(s): {}; cuDNN {}", names.join(", "), tch::utils::version_cudnn());
        }
        (_, Err(why)) => println!("CUDA: not available ({why})"),
        (_, Ok(())) => println!("CUDA: libtorch's CUDA backend loaded, but no device found"),
    }
    println!("MPS: {}", if tch::utils::has_mps() { "available" } else { "not available" });
    println!(
        "CPU threads: {} (libtorch intra-op; --threads N to change); MKL {}, OpenMP {}",
        device::threads(),
        yes_no(tch::utils::has_mkl()),
        yes_no(tch::utils::has_openmp())
    );
    println!(
        "kernels: {}",
        if zoo_core::ops::libtorch_only() {
            "libtorch's only (ZOO_KERNELS=libtorch)"
        } else {
            "zoo's where they are faster (Winograd, 4x4 stride-2, few-channel GEMM, oneDNN matmul; ZOO_KERNELS=libtorch turns them off)"
        }
    );
    println!(
        "decoding kernels: {}",
        if zoo_core::ops::gemv_available() {
            "zoo's AVX-512 matrix-vector kernels for float32 linear layers at batch 1-4"
        } else if zoo_core::ops::libtorch_only() {
            "libtorch's (ZOO_KERNELS=libtorch)"
        } else {
            "libtorch's (this CPU has no AVX-512)"
        }
    );
    if FAMILIES.is_empty() {
        println!(
            "families: none yet; the shared core (weights, training loop, image and audio I/O) is in place"
        );
    } else {
        for (family, about) in FAMILIES {
            println!("family {family}: {about}");
        }
    }
    match source {
        presets::ModelsSource::Missing => println!("models: {}", source.describe()),
        _ => println!("models: {} ({})", models.display(), source.describe()),
    }
    if presets.is_empty() {
        println!("presets: none");
    } else {
        let names: Vec<String> = presets
            .iter()
            .map(|p| format!("{}/{}{}", p.family, p.name, if built_in(p) { " (built in)" } else { "" }))
            .collect();
        println!("presets: {}", names.join(", "));
    }
    Ok(())
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

/// The tch crate version this binary was built with, as Cargo.lock pins it.
const TCH_VERSION: &str = match option_env!("ZOO_TCH_VERSION") {
    Some(v) => v,
    None => "(unknown)",
};
