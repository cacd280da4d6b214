"""Golden fixtures for zoo-diffusion, made with diffusers in the project's .venv.

    .venv/bin/python tools/make_diffusion_fixtures.py [part ...]

(diffusers' LMSDiscreteScheduler needs scipy in the .venv for the schedulers part.)

Writes tests/fixtures/diffusion/:
- schedulers.json: every scheduler x beta schedule x prediction type (plus spacing, clipping,
  thresholding, eta and solver variants) run for a few steps on a fixed fake model,
  model_output = 0.8 sin(0.7 x + t / 137) + 0.05 x, recording every step's sample.
- unet-*/: tiny random UNet2DModels (config.json + diffusion_pytorch_model.safetensors) and
  inputs/outputs of one forward (io.safetensors).
- pipeline-ddim/ and pipeline-ddpm/: a tiny UNet with scheduler_config.json, and the images
  DDIMPipeline / DDPMPipeline make from it after torch.manual_seed(S).
- cifar10-arch.json: the parameter count of the google/ddpm-cifar10-32 architecture.
"""
import json
import os
import shutil

import torch
from diffusers.utils import logging as dlogging
from diffusers import (
    DDIMPipeline,
    DDIMScheduler,
    DDPMPipeline,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    UNet2DModel,
    UniPCMultistepScheduler,
)
from safetensors.torch import save_file

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "diffusion")
CIFAR_PRESET = os.path.join(ROOT, "models", "diffusion", "ddpm-cifar10-32.json")

SHAPE = (2, 1, 3, 3)
STEPS = 10
NOISE_SEED = 1234


def fake_model(x, t):
    return torch.sin(0.7 * x + float(t) / 137.0) * 0.8 + 0.05 * x


CLASSES = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "euler": EulerDiscreteScheduler,
    "euler-ancestral": EulerAncestralDiscreteScheduler,
    "dpm++2m": DPMSolverMultistepScheduler,
    "dpm++2m-karras": DPMSolverMultistepScheduler,
    "pndm": PNDMScheduler,
    "heun": HeunDiscreteScheduler,
    "lms": LMSDiscreteScheduler,
    "unipc": UniPCMultistepScheduler,
}
# Prediction types diffusers does not implement for a scheduler.
UNSUPPORTED = {("euler-ancestral", "sample"), ("pndm", "sample")}
# diffusers implements sigmoid betas only in DDPMScheduler; for the others the reference runs
# with those betas passed as trained_betas, and zoo with beta_schedule "sigmoid".
SIGMOID_NATIVE = {"ddpm"}


def run_case(name, cfg, steps=STEPS, eta=0.0):
    if name == "heun":
        # HeunDiscreteScheduler's own defaults are 0.00085 / 0.012; zoo's config defaults are
        # DDPM's for every scheduler, so the case states the betas.
        cfg = {"beta_start": 0.0001, "beta_end": 0.02, **cfg}
    py_cfg = dict(cfg)
    if cfg.get("beta_schedule") == "sigmoid" and name not in SIGMOID_NATIVE:
        ref = DDPMScheduler(**{k: v for k, v in cfg.items() if k in ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule")})
        py_cfg["trained_betas"] = ref.betas.tolist()
        py_cfg["beta_schedule"] = "linear"
    if name == "dpm++2m-karras":
        py_cfg["use_karras_sigmas"] = True
    s = CLASSES[name](**py_cfg)
    s.set_timesteps(steps)
    torch.manual_seed(0)
    x = torch.randn(SHAPE) * s.init_noise_sigma
    init = x.clone()
    torch.manual_seed(NOISE_SEED)
    traj = []
    for t in s.timesteps:
        inp = s.scale_model_input(x, t)
        out = fake_model(inp, t)
        if name == "ddim":
            x = s.step(out, t, x, eta=eta).prev_sample
        else:
            x = s.step(out, t, x).prev_sample
        traj.append(x.flatten().tolist())
    # add_noise at the first and last inference timesteps
    s2 = CLASSES[name](**py_cfg)
    s2.set_timesteps(steps)
    clean = torch.linspace(-1, 1, SHAPE[0] * 9).reshape(SHAPE[0], 1, 3, 3)
    noise = torch.cos(torch.arange(SHAPE[0] * 9, dtype=torch.float32)).reshape(SHAPE[0], 1, 3, 3)
    ts = torch.stack([s2.timesteps[0], s2.timesteps[-1]])
    noisy = s2.add_noise(clean, noise, ts)
    return {
        "scheduler": name,
        "config": cfg,
        "steps": steps,
        "eta": eta,
        "timesteps": [float(t) for t in s.timesteps],
        "init_noise_sigma": float(s.init_noise_sigma),
        "init": init.flatten().tolist(),
        "trajectory": traj,
        "add_noise_timesteps": [float(t) for t in ts],
        "add_noise": noisy.flatten().tolist(),
    }


def schedulers():
    cases = []
    betas = {
        "linear": {"beta_schedule": "linear"},
        "scaled_linear": {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
        "squaredcos_cap_v2": {"beta_schedule": "squaredcos_cap_v2"},
        "sigmoid": {"beta_schedule": "sigmoid"},
    }
    for name in CLASSES:
        for b in betas.values():
            for pred in ["epsilon", "v_prediction", "sample"]:
                if (name, pred) in UNSUPPORTED:
                    continue  # diffusers: NotImplementedError / ValueError
                cfg = {"num_train_timesteps": 1000, "prediction_type": pred, **b}
                try:
                    cases.append(run_case(name, cfg))
                except IndexError as e:
                    # diffusers' own failure: Karras timesteps of the cosine schedule are not
                    # rounded but truncated, repeat, and index_for_timestep then skips ahead.
                    print(f"skipped {name} {cfg}: diffusers raised IndexError: {e}")
    # PNDM as Stable Diffusion runs it: PLMS only
    for b in betas.values():
        for pred in ["epsilon", "v_prediction"]:
            cases.append(run_case("pndm", {"num_train_timesteps": 1000, "prediction_type": pred, "skip_prk_steps": True, **b}))
    # spacings, clipping, thresholding and solver options
    for name in CLASSES:
        for sp in ["leading", "linspace", "trailing"]:
            cases.append(run_case(name, {"timestep_spacing": sp, "steps_offset": 1 if sp == "leading" else 0}, steps=7))
    for name in ["ddpm", "ddim"]:
        cases.append(run_case(name, {"clip_sample": False}))
        cases.append(run_case(name, {"thresholding": True, "sample_max_value": 1.5, "dynamic_thresholding_ratio": 0.9}))
        cases.append(run_case(name, {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "timestep_spacing": "trailing"}))
        cases.append(run_case(name, {"clip_sample_range": 0.5}))
    cases.append(run_case("ddpm", {"variance_type": "fixed_large"}))
    cases.append(run_case("ddpm", {"variance_type": "fixed_small_log"}))
    cases.append(run_case("ddim", {"set_alpha_to_one": False}))
    cases.append(run_case("ddim", {}, eta=1.0))
    cases.append(run_case("ddim", {}, eta=0.5))
    cases.append(run_case("euler", {"use_karras_sigmas": True}))
    cases.append(run_case("euler", {"final_sigmas_type": "sigma_min"}))
    cases.append(run_case("euler", {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing"}))
    cases.append(run_case("dpm++2m", {"solver_type": "heun"}))
    cases.append(run_case("dpm++2m", {"solver_order": 1}))
    cases.append(run_case("dpm++2m", {}, steps=20))
    cases.append(run_case("dpm++2m", {"lower_order_final": False}))
    cases.append(run_case("dpm++2m", {"thresholding": True, "prediction_type": "sample"}))
    cases.append(run_case("dpm++2m-karras", {}, steps=25))
    for sp in ["leading", "linspace", "trailing"]:
        cases.append(run_case("pndm", {"skip_prk_steps": True, "timestep_spacing": sp, "steps_offset": 1 if sp == "leading" else 0}, steps=7))
    cases.append(run_case("pndm", {"set_alpha_to_one": True, "skip_prk_steps": True}))
    cases.append(run_case("pndm", {"set_alpha_to_one": True}, steps=4))
    cases.append(run_case("pndm", {"skip_prk_steps": True}, steps=2))
    cases.append(run_case("heun", {"use_karras_sigmas": True}))
    cases.append(run_case("heun", {"clip_sample": True, "prediction_type": "sample"}))
    cases.append(run_case("heun", {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012}, steps=1))
    cases.append(run_case("lms", {"use_karras_sigmas": True}))
    cases.append(run_case("lms", {}, steps=25))
    # diffusers' UniPC ends in inf or NaN on a last step to sigma 0 with bh1, with the noise form
    # (predict_x0 false) or with a second-order last step: those cases end at sigma_min.
    cases.append(run_case("unipc", {"solver_type": "bh1", "final_sigmas_type": "sigma_min"}))
    cases.append(run_case("unipc", {"final_sigmas_type": "sigma_min"}))
    cases.append(run_case("unipc", {"solver_order": 1}))
    cases.append(run_case("unipc", {"solver_order": 3}))
    cases.append(run_case("unipc", {"solver_order": 3, "lower_order_final": False, "final_sigmas_type": "sigma_min"}))
    cases.append(run_case("unipc", {"lower_order_final": False, "final_sigmas_type": "sigma_min"}))
    cases.append(run_case("unipc", {"predict_x0": False, "final_sigmas_type": "sigma_min"}))
    cases.append(run_case("unipc", {"predict_x0": False, "prediction_type": "v_prediction", "solver_type": "bh1", "final_sigmas_type": "sigma_min"}))
    cases.append(run_case("unipc", {"predict_x0": False, "prediction_type": "sample", "final_sigmas_type": "sigma_min"}))
    cases.append(run_case("unipc", {"disable_corrector": [0, 3]}))
    cases.append(run_case("unipc", {"thresholding": True, "prediction_type": "sample"}))
    cases.append(run_case("unipc", {"use_karras_sigmas": True}, steps=20))
    cases.append(run_case("unipc", {"solver_type": "midpoint"}))
    cases.append(run_case("unipc", {"rescale_betas_zero_snr": True, "prediction_type": "v_prediction", "timestep_spacing": "trailing"}))
    with open(os.path.join(OUT, "schedulers.json"), "w") as f:
        json.dump({"shape": list(SHAPE), "noise_seed": NOISE_SEED, "cases": cases}, f)
    print(f"schedulers.json: {len(cases)} cases")


# Tiny UNets. "attn": attention blocks, scale_shift resnets, odd freq_shift; "class": class
# embedding; "google": the google/ddpm-cifar10-32 layout (block types, flip_sin_to_cos false,
# freq_shift 1, downsample_padding 0, attention_head_dim null) at small width, saved with the
# legacy attention names (query/key/value/proj_attn) its hub checkpoint uses.
UNETS = {
    "attn": dict(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(16, 32), layers_per_block=1,
                 down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
                 norm_num_groups=8, attention_head_dim=8, resnet_time_scale_shift="scale_shift", freq_shift=1,
                 flip_sin_to_cos=False, center_input_sample=True),
    "class": dict(sample_size=8, in_channels=1, out_channels=1, block_out_channels=(8, 16, 16), layers_per_block=2,
                  down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
                  up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4,
                  attention_head_dim=4, num_class_embeds=11, mid_block_scale_factor=1.4142135623730951,
                  norm_eps=1e-6),
    "google": dict(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16, 16, 16),
                   layers_per_block=2, down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                   up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4,
                   attention_head_dim=None, downsample_padding=0, flip_sin_to_cos=False, freq_shift=1, norm_eps=1e-6,
                   act_fn="silu", mid_block_scale_factor=1, center_input_sample=False),
}


def legacy_names(sd):
    out = {}
    for k, v in sd.items():
        if ".attentions." in k:
            k = k.replace(".to_q.", ".query.").replace(".to_k.", ".key.").replace(".to_v.", ".value.")
            k = k.replace(".to_out.0.", ".proj_attn.")
        out[k] = v
    return out


def unets():
    for name, cfg in UNETS.items():
        torch.manual_seed(3)
        m = UNet2DModel(**cfg).eval()
        # Random weights all over (diffusers zero-initialises nothing here, but make biases and
        # norms non-trivial so that a wrongly loaded tensor shows).
        with torch.no_grad():
            for p in m.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        d = os.path.join(OUT, f"unet-{name}")
        shutil.rmtree(d, ignore_errors=True)
        m.save_pretrained(d, safe_serialization=True)
        if name == "google":
            sd = {k: v.contiguous() for k, v in m.state_dict().items()}
            save_file(legacy_names(sd), os.path.join(d, "diffusion_pytorch_model.safetensors"))
        torch.manual_seed(4)
        b = 2
        x = torch.randn(b, cfg["in_channels"], cfg["sample_size"], cfg["sample_size"])
        t = torch.tensor([7, 900])
        io = {"sample": x, "timesteps": t}
        kw = {}
        if cfg.get("num_class_embeds"):
            kw["class_labels"] = torch.tensor([3, 10])
            io["class_labels"] = kw["class_labels"]
        with torch.no_grad():
            io["out"] = m(x, t, **kw).sample
            io["out_t_float"] = m(x, torch.tensor([12.75, 401.5]), **kw).sample
        save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(d, "io.safetensors"))
        print(f"unet-{name}: {sum(p.numel() for p in m.parameters())} parameters")


def pipelines():
    cfg = UNETS["class"].copy()
    cfg.pop("num_class_embeds")
    cfg["mid_block_scale_factor"] = 1
    for name, Sched, Pipe, steps in [("ddim", DDIMScheduler, DDIMPipeline, 4), ("ddpm", DDPMScheduler, DDPMPipeline, 20)]:
        torch.manual_seed(5)
        unet = UNet2DModel(**cfg).eval()
        with torch.no_grad():
            for p in unet.parameters():
                p.add_(torch.randn_like(p) * 0.05)
        sched = Sched(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True)
        d = os.path.join(OUT, f"pipeline-{name}")
        shutil.rmtree(d, ignore_errors=True)
        pipe = Pipe(unet=unet, scheduler=sched)
        pipe.set_progress_bar_config(disable=True)
        pipe.save_pretrained(d, safe_serialization=True)
        seed = 42
        if name == "ddpm":
            sched2 = DDPMScheduler.from_pretrained(d, subfolder="scheduler")
            pipe = DDPMPipeline(unet=unet, scheduler=sched2)
            pipe.set_progress_bar_config(disable=True)
        torch.manual_seed(seed)
        kwargs = {"batch_size": 2, "num_inference_steps": steps, "output_type": "np"}
        if name == "ddim":
            kwargs["eta"] = 0.0
        images = pipe(**kwargs).images
        save_file({"images": torch.from_numpy(images).contiguous()}, os.path.join(d, "expected.safetensors"))
        with open(os.path.join(d, "expected.json"), "w") as f:
            json.dump({"seed": seed, "steps": steps, "batch_size": 2}, f)
        print(f"pipeline-{name}: {images.shape}")


def cifar_arch():
    with open(CIFAR_PRESET) as f:
        cfg = json.load(f)["model"]
    cfg = {k: v for k, v in cfg.items() if not k.startswith("_")}
    m = UNet2DModel(**cfg)
    n = sum(p.numel() for p in m.parameters())
    with open(os.path.join(OUT, "cifar10-arch.json"), "w") as f:
        json.dump({"parameters": n, "tensors": len(m.state_dict())}, f)
    print(f"ddpm-cifar10-32: {n} parameters")


if __name__ == "__main__":
    import sys

    # Optional arguments name the parts to remake (schedulers unets pipelines cifar_arch).
    parts = sys.argv[1:] or ["schedulers", "unets", "pipelines", "cifar_arch"]
    os.makedirs(OUT, exist_ok=True)
    for part in parts:
        globals()[part]()
