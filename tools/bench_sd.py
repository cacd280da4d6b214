#!/usr/bin/env python3
"""Stable Diffusion text-to-image speed and memory: `zoo txt2img` side by side with diffusers'
StableDiffusionPipeline, on the same random components (issue 21).

    cargo build --release -p zoo-cli
    .venv/bin/python tools/bench_sd.py [--sizes tiny,mid] [--rounds 3] [--threads 1,2]
        [--zoo target/release/zoo] [--out bench.json]

The pipelines, made here in a temporary folder by a child process (nothing downloaded, nothing
kept; HF_HUB_OFFLINE=1), in the on-disk layout of a diffusers SD 1.x repo:
  tiny  a copy of tests/fixtures/sd/sd1-tiny (tools/make_sd_fixtures.py): UNet (16, 32),
        VAE [8, 16] (factor 2), 3-layer 32-wide CLIP; 32x32 images, 16x16 latents, 4 steps
  mid   UNet2DConditionModel (128, 256, 256), CrossAttnDown x2 + Down / Up + CrossAttnUp x2,
        2 layers per block, attention_head_dim 8, cross_attention_dim 256, 32 groups;
        AutoencoderKL [64, 128, 128, 128] (4 levels: factor 8), 2 layers per block;
        CLIPTextModel 256 wide, 4 layers, 4 heads, MLP 1024, quick_gelu, 77 positions, with
        tests/fixtures/sd/clip/tokenizer-sd1 (948 ids); 256x256 images, 32x32 latents, 20 steps
        Random weights from torch.manual_seed(0), saved with safe_serialization; the text
        encoder's weights under text_model.* as in released SD repos.
Both sides run DDIM with SD 1.x's schedule (scaled_linear 0.00085..0.012, steps_offset 1,
set_alpha_to_one false, clip_sample false, "leading" spacing), guidance 7.5 with a negative
prompt (UNet batch 2), one image, seed 0, f32 on the CPU, at the same height and width.

Each round runs, per size and thread count, one zoo process and then one diffusers process, so
machine noise hits both alike; the table gives medians over rounds.
  diffusers  a child process: loads the folder (safety_checker None), swaps in
             DDIMScheduler.from_config(folder's scheduler config), torch.set_num_threads(T),
             one warm-up call, then one timed pipe(...) call: prompt encoding, the denoising
             loop, VAE decode and conversion to PIL (s/img). Stage times come from wrappers
             around text_encoder.forward, unet.forward and vae.decode.
  zoo        `zoo --device cpu --threads T --seed 0 -v txt2img --model DIR --prompt ...
             --negative-prompt ... --steps N --guidance-scale 7.5 --scheduler ddim --width W
             --height H --out X.png`, one call per process, no warm-up. "process" is the
             wall time of the whole process (libtorch start-up, loading, generation, PNG);
             "pipeline" is what zoo prints on stderr for the generate call, the sum of its
             `seconds: text encoder A, UNet B, VAE C` line (else `... in S s`).
Speed-up = diffusers s/img / zoo pipeline s (and / zoo process s). Peak RSS is each child's
ru_maxrss (os.wait4), the largest over rounds; Linux carries ru_maxrss across fork + exec, so
this parent imports no torch. Both sides use the same seed and the same draws (zoo follows
diffusers' generator use), so "max |diff|" compares the two PNGs of the last round (0-255).
The zoo side is skipped, with a line saying why, when the binary is missing or has no txt2img.
"""
import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "target" / "release" / "zoo"
FIXTURE = ROOT / "tests" / "fixtures" / "sd" / "sd1-tiny"
TOKENIZER = ROOT / "tests" / "fixtures" / "sd" / "clip" / "tokenizer-sd1"
PROMPT = "a photo of an astronaut riding a horse on mars"
NEGATIVE = "blurry, low quality"
GUIDANCE = 7.5
SEED = 0
# size: (steps, image height = width)
SIZES = {"tiny": (4, 32), "mid": (20, 256)}
SD1_SCHEDULER = {
    "_class_name": "DDIMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "epsilon",
    "set_alpha_to_one": False,
    "steps_offset": 1,
    "timestep_spacing": "leading",
    "trained_betas": None,
}
ENV = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", TOKENIZERS_PARALLELISM="false")


# ---------------------------------------------------------------------------------------------
# Child: make the pipeline folders.

def make_mid(d):
    import torch
    from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(TOKENIZER)
    v = len(tok)
    torch.manual_seed(0)
    text = CLIPTextModel(CLIPTextConfig(
        vocab_size=v, hidden_size=256, intermediate_size=1024, num_attention_heads=4, num_hidden_layers=4,
        max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5, projection_dim=256,
        bos_token_id=v - 2, eos_token_id=v - 1, pad_token_id=tok.pad_token_id)).eval()
    unet = UNet2DConditionModel(
        sample_size=32, in_channels=4, out_channels=4, block_out_channels=(128, 256, 256), layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=256, attention_head_dim=8, norm_num_groups=32).eval()
    vae = AutoencoderKL(
        in_channels=3, out_channels=3, down_block_types=["DownEncoderBlock2D"] * 4,
        up_block_types=["UpDecoderBlock2D"] * 4, block_out_channels=[64, 128, 128, 128], layers_per_block=2,
        latent_channels=4, norm_num_groups=32, sample_size=256).eval()
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tok, unet=unet,
                                   scheduler=DDIMScheduler.from_config(SD1_SCHEDULER), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(d, safe_serialization=True)
    # As tools/make_sd_fixtures.py: released SD repos hold the text encoder under text_model.*,
    # and the tokenizer as the SD files (vocab.json, merges.txt, ...).
    sd = {f"text_model.{k}": t.contiguous() for k, t in text.state_dict().items()}
    save_file(sd, os.path.join(d, "text_encoder", "model.safetensors"), metadata={"format": "pt"})
    shutil.rmtree(os.path.join(d, "tokenizer"))
    shutil.copytree(TOKENIZER, os.path.join(d, "tokenizer"))


def make_child(size, d):
    os.makedirs(d, exist_ok=True)
    if size == "tiny":
        for part in ["model_index.json", "scheduler", "text_encoder", "tokenizer", "unet", "vae"]:
            src = FIXTURE / part
            (shutil.copytree if src.is_dir() else shutil.copy)(src, os.path.join(d, part))
    else:
        make_mid(d)
    import torch
    from diffusers import StableDiffusionPipeline

    from safetensors.torch import load_file

    pipe = StableDiffusionPipeline.from_pretrained(d, safety_checker=None, requires_safety_checker=False)
    # The text_model.* names must load back into transformers (they do in transformers 5).
    saved = load_file(os.path.join(d, "text_encoder", "model.safetensors"))
    for k, t in pipe.text_encoder.state_dict().items():
        assert torch.equal(saved[f"text_model.{k}"], t), f"text encoder weight {k} did not load back"
    count = lambda m: sum(p.numel() for p in m.parameters())
    cfg = pipe.unet.config
    print(json.dumps({
        "params": {"unet": count(pipe.unet), "vae": count(pipe.vae), "vae_decoder": count(pipe.vae.decoder)
                   + count(pipe.vae.post_quant_conv), "text_encoder": count(pipe.text_encoder)},
        "unet_blocks": list(cfg.block_out_channels), "vae_blocks": list(pipe.vae.config.block_out_channels),
        "text_hidden": pipe.text_encoder.config.hidden_size, "latent": cfg.sample_size,
        "torch": torch.__version__,
    }))


# ---------------------------------------------------------------------------------------------
# Child: one diffusers process.

def diffusers_child(d, threads, steps, hw, png):
    import torch
    from diffusers import DDIMScheduler, StableDiffusionPipeline
    from diffusers.utils import logging as dlogging

    dlogging.set_verbosity_error()
    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    pipe = StableDiffusionPipeline.from_pretrained(d, safety_checker=None, requires_safety_checker=False)
    pipe.scheduler = DDIMScheduler.from_config(pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    load_s = time.perf_counter() - t0

    stages = {"text_encoder": 0.0, "unet": 0.0, "vae": 0.0}

    def timed(name, f):
        def g(*a, **k):
            t = time.perf_counter()
            out = f(*a, **k)
            stages[name] += time.perf_counter() - t
            return out
        return g

    pipe.text_encoder.forward = timed("text_encoder", pipe.text_encoder.forward)
    pipe.unet.forward = timed("unet", pipe.unet.forward)
    pipe.vae.decode = timed("vae", pipe.vae.decode)

    def call():
        g = torch.Generator("cpu").manual_seed(SEED)
        return pipe(PROMPT, negative_prompt=NEGATIVE, num_inference_steps=steps, guidance_scale=GUIDANCE,
                    num_images_per_prompt=1, height=hw, width=hw, generator=g).images[0]

    t = time.perf_counter()
    call()  # warm-up
    first_s = time.perf_counter() - t
    for k in stages:
        stages[k] = 0.0
    t = time.perf_counter()
    img = call()
    secs = time.perf_counter() - t
    img.save(png)
    print(json.dumps({"secs": secs, "first_s": first_s, "load_s": load_s, "stages": stages}))


# ---------------------------------------------------------------------------------------------
# Parent.

def run_child(cmd, threads):
    """Runs cmd; returns (returncode, stdout, stderr, wall seconds, peak RSS in MB)."""
    env = dict(ENV, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    with tempfile.TemporaryFile() as o, tempfile.TemporaryFile() as e:
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdout=o, stderr=e, env=env)
        _, status, ru = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t0
        o.seek(0)
        e.seek(0)
        out, err = o.read().decode(errors="replace"), e.read().decode(errors="replace")
    return os.waitstatus_to_exitcode(status), out, err, wall, ru.ru_maxrss / 1024  # KiB on Linux


def zoo_status(zoo):
    """None if zoo can run txt2img, else why not."""
    if not Path(zoo).is_file():
        return f"{zoo} not found (cargo build --release -p zoo-cli)"
    rc, out, err, _, _ = run_child([str(zoo), "txt2img", "--help"], 1)
    if rc != 0 or "--prompt" not in out:
        return f"{zoo} has no `txt2img` command yet ({(err.strip().splitlines() or ['?'])[-1][:120]})"
    return None


FLOAT = r"([0-9]+(?:\.[0-9]+)?)"


def run_zoo(zoo, d, threads, steps, hw, png):
    cmd = [str(zoo), "--device", "cpu", "--threads", str(threads), "--seed", str(SEED), "-v", "txt2img",
           "--model", d, "--prompt", PROMPT, "--negative-prompt", NEGATIVE, "--steps", str(steps),
           "--guidance-scale", str(GUIDANCE), "--scheduler", "ddim", "--width", str(hw), "--height", str(hw),
           "--out", png]
    rc, _, err, wall, rss = run_child(cmd, threads)
    if rc != 0:
        return None, f"zoo failed ({rc}): {err.strip()[-1500:]}"
    done = re.search(r"(\d+) image\(s\) of .* with (\S+) \((\d+) steps\) in " + FLOAT + " s", err)
    if not done or int(done.group(1)) != 1 or int(done.group(3)) != steps:
        return None, f"zoo did not print `1 image(s) of [...] with ddim ({steps} steps) in S s`: {err[-1500:]}"
    r = {"process_s": wall, "in_s": float(done.group(4)), "rss": rss, "scheduler": done.group(2)}
    parts = re.search(r"seconds: text encoder " + FLOAT + ", UNet " + FLOAT + ", VAE " + FLOAT, err)
    if parts:
        r["stages"] = {"text_encoder": float(parts.group(1)), "unet": float(parts.group(2)), "vae": float(parts.group(3))}
        r["pipeline_s"] = sum(r["stages"].values())
    else:
        r["pipeline_s"] = r["in_s"]
    load = re.search(r"loaded .* in " + FLOAT + " s", err)
    if load:
        r["load_s"] = float(load.group(1))
    return r, None


def run_diffusers(d, threads, steps, hw, png):
    rc, out, err, wall, rss = run_child([sys.executable, __file__, "--diffusers-child", d, str(threads),
                                         str(steps), str(hw), png], threads)
    if rc != 0:
        sys.exit(f"diffusers failed ({rc}): {err[-2000:]}")
    r = json.loads(out.strip().splitlines()[-1])
    r.update(process_s=wall, rss=rss)
    return r


def image_diff(a, b):
    """Max and mean |a - b| of two PNGs in 0-255, in a child (keeps numpy/PIL out of the parent)."""
    code = ("import sys, numpy as np, PIL.Image as I; a, b = (np.asarray(I.open(p).convert('RGB'), dtype=np.int16) "
            "for p in sys.argv[1:3]); d = np.abs(a - b) if a.shape == b.shape else None; "
            "print('shapes differ' if d is None else f'{d.max()} / {d.mean():.1f}')")
    rc, out, _, _, _ = run_child([sys.executable, "-c", code, a, b], 1)
    return out.strip() if rc == 0 else "?"


def machine():
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return f"{model}, {os.cpu_count()} cores"


def med(xs):
    return statistics.median(xs) if xs else None


def fmt(x, spec=".3f", unit=""):
    return "-" if x is None else f"{x:{spec}}{unit}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="tiny,mid")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--zoo", default=str(ZOO))
    ap.add_argument("--out", help="also write the results as JSON here")
    ap.add_argument("--make", nargs=2, help=argparse.SUPPRESS)
    ap.add_argument("--diffusers-child", nargs=5, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.make:
        make_child(*a.make)
        return
    if a.diffusers_child:
        d, t, s, hw, png = a.diffusers_child
        diffusers_child(d, int(t), int(s), int(hw), png)
        return

    sizes = a.sizes.split(",")
    threads = [int(t) for t in a.threads.split(",")]
    for s in sizes:
        if s not in SIZES:
            sys.exit(f"--sizes: unknown size {s!r}; choose from {', '.join(SIZES)}")
    start = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    load0 = os.getloadavg()
    why = zoo_status(a.zoo)
    if why:
        print(f"zoo side skipped: {why}", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        info = {}
        for s in sizes:
            d = os.path.join(tmp, s)
            rc, out, err, wall, _ = run_child([sys.executable, __file__, "--make", s, d], 2)
            if rc != 0:
                sys.exit(f"making the {s} pipeline failed: {err[-2000:]}")
            info[s] = json.loads(out.strip().splitlines()[-1])
            p = info[s]["params"]
            print(f"{s}: UNet {info[s]['unet_blocks']} {p['unet'] / 1e6:.2f}M, VAE {info[s]['vae_blocks']} "
                  f"{p['vae'] / 1e6:.2f}M (decoder {p['vae_decoder'] / 1e6:.2f}M), text encoder "
                  f"{info[s]['text_hidden']} wide {p['text_encoder'] / 1e6:.2f}M; {SIZES[s][0]} steps, "
                  f"{SIZES[s][1]}x{SIZES[s][1]} images ({wall:.0f} s to make)", file=sys.stderr, flush=True)
        for s in sizes:
            steps, hw = SIZES[s]
            d = os.path.join(tmp, s)
            for t in threads:
                runs = {"zoo": [], "diffusers": []}
                zpng, dpng = os.path.join(tmp, f"zoo-{s}-{t}.png"), os.path.join(tmp, f"diffusers-{s}-{t}.png")
                for r in range(a.rounds):
                    msg = f"{s} threads {t} round {r + 1}:"
                    if not why:
                        z, err = run_zoo(a.zoo, d, t, steps, hw, zpng)
                        if z is None:
                            why = err
                            print(f"zoo side skipped from here on: {err}", flush=True)
                        else:
                            runs["zoo"].append(z)
                            msg += f" zoo {z['pipeline_s']:.3f} s (process {z['process_s']:.2f} s, {z['rss']:.0f} MB),"
                    dr = run_diffusers(d, t, steps, hw, dpng)
                    runs["diffusers"].append(dr)
                    msg += f" diffusers {dr['secs']:.3f} s/img (first call {dr['first_s']:.3f} s, {dr['rss']:.0f} MB)"
                    print(msg, file=sys.stderr, flush=True)
                res = {
                    "diffusers_s": med([x["secs"] for x in runs["diffusers"]]),
                    "diffusers_first_s": med([x["first_s"] for x in runs["diffusers"]]),
                    "diffusers_rss": max(x["rss"] for x in runs["diffusers"]),
                    "diffusers_stages": {k: med([x["stages"][k] for x in runs["diffusers"]])
                                         for k in ("text_encoder", "unet", "vae")},
                    "zoo_process_s": med([x["process_s"] for x in runs["zoo"]]),
                    "zoo_pipeline_s": med([x["pipeline_s"] for x in runs["zoo"]]),
                    "zoo_rss": max((x["rss"] for x in runs["zoo"]), default=None),
                    "zoo_stages": ({k: med([x["stages"][k] for x in runs["zoo"]]) for k in ("text_encoder", "unet", "vae")}
                                   if runs["zoo"] and all("stages" in x for x in runs["zoo"]) else None),
                    "rounds": runs,
                }
                res["image_diff"] = image_diff(zpng, dpng) if runs["zoo"] else None
                results[f"{s}/{t}"] = res
    load1 = os.getloadavg()

    print(f"\nmachine: {machine()}; started {start}; load average (1, 5, 15 min) at the start "
          f"{load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}, at the end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}")
    print(f"command: .venv/bin/python tools/bench_sd.py --sizes {a.sizes} --rounds {a.rounds} --threads {a.threads}"
          + (f" --zoo {a.zoo}" if a.zoo != str(ZOO) else ""))
    print(f"medians of {a.rounds} round(s); s/img = seconds for one image, guidance on (UNet batch 2)")
    if why:
        print(f"zoo side: not measured ({why})")
    print("\n| size | threads | diffusers s/img | zoo pipeline s | zoo process s | speed-up (pipeline) "
          "| speed-up (process) | peak RSS diffusers | peak RSS zoo | max / mean abs diff |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k, v in results.items():
        s, t = k.split("/")
        zp, zq = v["zoo_pipeline_s"], v["zoo_process_s"]
        print(f"| {s} ({SIZES[s][0]} steps, {SIZES[s][1]}px) | {t} | {fmt(v['diffusers_s'])} | {fmt(zp)} | {fmt(zq, '.2f')} "
              f"| {fmt(v['diffusers_s'] / zp if zp else None, '.2f', 'x')} "
              f"| {fmt(v['diffusers_s'] / zq if zq else None, '.2f', 'x')} "
              f"| {v['diffusers_rss']:.0f} MB | {fmt(v['zoo_rss'], '.0f', ' MB')} | {v['image_diff'] or '-'} |")
    print("\nstages (s, median; diffusers' timed call / zoo's -v line):")
    print("| size | threads | text encoder diffusers | zoo | UNet diffusers | zoo | VAE decode diffusers | zoo "
          "| diffusers first call | diffusers load | zoo load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for k, v in results.items():
        s, t = k.split("/")
        ds, zs = v["diffusers_stages"], v["zoo_stages"] or {}
        zl = med([x["load_s"] for x in v["rounds"]["zoo"] if "load_s" in x])
        dl = med([x["load_s"] for x in v["rounds"]["diffusers"]])
        print(f"| {s} | {t} | {ds['text_encoder']:.3f} | {fmt(zs.get('text_encoder'), '.2f')} | {ds['unet']:.3f} "
              f"| {fmt(zs.get('unet'), '.2f')} | {ds['vae']:.3f} | {fmt(zs.get('vae'), '.2f')} "
              f"| {v['diffusers_first_s']:.3f} | {dl:.2f} | {fmt(zl, '.1f')} |")
    if a.out:
        Path(a.out).write_text(json.dumps({"machine": machine(), "start": start, "load_start": load0,
                                           "load_end": load1, "zoo_skipped": why, "models": info,
                                           "results": results}, indent=1))


if __name__ == "__main__":
    main()
