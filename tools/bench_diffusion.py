#!/usr/bin/env python3
"""UNet speed and memory of zoo side by side with diffusers, on google/ddpm-cifar10-32's
architecture with random weights.

    cargo build --release -p zoo-examples --example bench_unet
    .venv/bin/python tools/bench_diffusion.py [--repeats 3] [--threads 2] [--out bench.json]

The model: models/diffusion/ddpm-cifar10-32.json's UNet2DModel config (35.7M parameters),
random weights from diffusers (seed 0) saved with save_pretrained to a temporary folder, with
the preset's DDPM scheduler config for DDIM. Both sides load that folder and time, as medians
of `--repeats` runs after one warm-up (see examples/bench_unet.rs for zoo's side):
  forward_b1 / forward_b16   one UNet forward at batch 1 / 16, no gradients, t = 500
  ddim50_b4                  50 DDIM steps at batch 4: noise, UNet, scheduler step (the loop of
                             diffusers' DDIMPipeline, written out so no image conversion is timed)
  train_step_b16             noise at random timesteps, epsilon MSE, backward, AdamW step
Each side runs in its own process (diffusers first, then zoo) with the same thread count;
peak RSS is the child's ru_maxrss. Speed-up = diffusers seconds / zoo seconds.
"""
import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCH = ROOT / "target" / "release" / "examples" / "bench_unet"
TASKS = ["forward_b1", "forward_b16", "ddim50_b4", "train_step_b16"]


def make_model(folder):
    import torch
    from diffusers import UNet2DModel

    preset = json.loads((ROOT / "models" / "diffusion" / "ddpm-cifar10-32.json").read_text())
    cfg = {k: v for k, v in preset["model"].items() if not k.startswith("_")}
    torch.manual_seed(0)
    UNet2DModel(**cfg).save_pretrained(folder, safe_serialization=True)
    sched = dict(preset.get("scheduler", {}))
    sched.setdefault("_class_name", "DDPMScheduler")
    (Path(folder) / "scheduler_config.json").write_text(json.dumps(sched))


def median(v):
    v = sorted(v)
    return v[len(v) // 2]


def diffusers_child(folder, repeats, threads):
    import torch
    from diffusers import DDIMScheduler, UNet2DModel

    torch.set_num_threads(threads)
    unet = UNet2DModel.from_pretrained(folder)
    sched_cfg = json.loads((Path(folder) / "scheduler_config.json").read_text())
    c, s = unet.config.in_channels, unet.config.sample_size

    def timed(f):
        f()
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            f()
            out.append(time.perf_counter() - t0)
        return median(out)

    res = {}
    unet.eval()
    for b in (1, 16):
        x = torch.randn(b, c, s, s)
        t = torch.full((b,), 500)
        with torch.no_grad():
            res[f"forward_b{b}"] = timed(lambda: unet(x, t).sample)

    def ddim():
        sched = DDIMScheduler.from_config(sched_cfg)
        sched.set_timesteps(50)
        x = torch.randn(4, c, s, s) * sched.init_noise_sigma
        with torch.no_grad():
            for t in sched.timesteps:
                eps = unet(sched.scale_model_input(x, t), t).sample
                x = sched.step(eps, t, x).prev_sample
        return x

    res["ddim50_b4"] = timed(ddim)
    from diffusers import DDPMScheduler

    noise_sched = DDPMScheduler.from_config(sched_cfg)
    unet.train()
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, weight_decay=0.0)
    x0 = torch.randn(16, c, s, s)

    def step():
        noise = torch.randn_like(x0)
        t = torch.randint(0, 1000, (16,))
        xt = noise_sched.add_noise(x0, noise, t)
        loss = torch.nn.functional.mse_loss(unet(xt, t).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    res["train_step_b16"] = timed(step)
    return res


def child_run(cmd, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(p.pid, 0)
    out = p.stdout.read()
    if status != 0:
        raise RuntimeError(f"{cmd[0]} failed: {p.stderr.read()}")
    res = json.loads(out.strip().splitlines()[-1])
    res["peak_rss_mb"] = usage.ru_maxrss / 1024
    return res


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out")
    ap.add_argument("--child", nargs=3)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(diffusers_child(a.child[0], int(a.child[1]), int(a.child[2]))))
        return
    with tempfile.TemporaryDirectory() as tmp:
        folder = str(Path(tmp) / "unet")
        make_model(folder)
        d = child_run([sys.executable, __file__, "--child", folder, str(a.repeats), str(a.threads)], a.threads)
        z = child_run([str(BENCH), folder, str(a.repeats)], a.threads)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}; threads {a.threads}, repeats {a.repeats}")
    print("| task | diffusers s | zoo s | zoo speed-up |")
    print("|---|---|---|---|")
    for k in TASKS:
        print(f"| {k} | {d[k]:.3f} | {z[k]:.3f} | {d[k] / z[k]:.2f}x |")
    print(f"| peak RSS (MB) | {d['peak_rss_mb']:.0f} | {z['peak_rss_mb']:.0f} | |")
    if a.out:
        Path(a.out).write_text(json.dumps({"diffusers": d, "zoo": z, "threads": a.threads}, indent=2))


if __name__ == "__main__":
    main()
