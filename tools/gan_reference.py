#!/usr/bin/env python3
"""Training speed of the DCGAN recipe, zoo against plain PyTorch, in one run.

    .venv/bin/python tools/gan_reference.py [--steps 30] [--warmup 5] [--batch 64] [--zoo target/release/zoo]

Both sides run the PyTorch examples repo's DCGAN at 64x64 (nz 100, ngf = ndf = 64, BatchNorm,
Adam 2e-4 (0.5, 0.999), BCE) at batch 64 on the CPU with the same thread count, one iteration
being one D step (real and fake batch) and one G step, as in `examples/dcgan/main.py`.
zoo runs `zoo gan train --preset dcgan-64 --data shapes` and its rate is read from the
`elapsed_s` of metrics.jsonl between the end of the warm-up and the last step (so data set-up
and the final checkpoint are not counted); PyTorch trains on random images of the same shape.
Prints both rates and the ratio zoo / PyTorch.
"""
import argparse
import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parent.parent


def generator(nz=100, ngf=64, nc=3):
    return nn.Sequential(
        nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False), nn.BatchNorm2d(ngf * 8), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 4), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf * 2), nn.ReLU(True),
        nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False), nn.BatchNorm2d(ngf), nn.ReLU(True),
        nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False), nn.Tanh())


def discriminator(ndf=64, nc=3):
    return nn.Sequential(
        nn.Conv2d(nc, ndf, 4, 2, 1, bias=False), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 2), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 4), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False), nn.BatchNorm2d(ndf * 8), nn.LeakyReLU(0.2, inplace=True),
        nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False), nn.Sigmoid())


def pytorch_rate(steps, warmup, batch):
    torch.manual_seed(0)
    net_g, net_d = generator(), discriminator()
    opt_g = torch.optim.Adam(net_g.parameters(), lr=2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(net_d.parameters(), lr=2e-4, betas=(0.5, 0.999))
    bce = nn.BCELoss()
    t0 = None
    for i in range(warmup + steps):
        if i == warmup:
            t0 = time.perf_counter()
        real = torch.rand(batch, 3, 64, 64) * 2 - 1
        net_d.zero_grad()
        out = net_d(real).view(-1)
        err_real = bce(out, torch.ones_like(out))
        err_real.backward()
        fake = net_g(torch.randn(batch, 100, 1, 1))
        out = net_d(fake.detach()).view(-1)
        err_fake = bce(out, torch.zeros_like(out))
        err_fake.backward()
        opt_d.step()
        net_g.zero_grad()
        out = net_d(fake).view(-1)
        err_g = bce(out, torch.ones_like(out))
        err_g.backward()
        opt_g.step()
    return steps / (time.perf_counter() - t0)


def zoo_rate(zoo, steps, warmup, batch):
    with tempfile.TemporaryDirectory() as tmp:
        run = Path(tmp) / "run"
        total = warmup + steps
        subprocess.run([zoo, "--device", "cpu", "--threads", str(torch.get_num_threads()), "-q", "gan", "train",
                        "--data", "shapes", "--preset", "dcgan-64", "--out", str(run), "--steps", str(total),
                        "--batch-size", str(batch), "--sample-every", str(total)], check=True, stdout=subprocess.DEVNULL)
        # log_every is 50 in the preset: rates come from the records at warmup and at the end,
        # so re-run logging every step is not needed when warmup and steps are multiples of it.
        recs = [json.loads(l) for l in (run / "metrics.jsonl").read_text().splitlines()]
        by_step = {r["step"]: r["elapsed_s"] for r in recs if "elapsed_s" in r}
        if warmup not in by_step:
            raise SystemExit(f"no metrics record at step {warmup}: use a --warmup that is a multiple of 50 or pass --log-every")
        return steps / (by_step[total] - by_step[warmup])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--warmup", type=int, default=50)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--zoo", default=str(ROOT / "target" / "release" / "zoo"))
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("THREADS", torch.get_num_threads())))
    z = zoo_rate(a.zoo, a.steps, a.warmup, a.batch)
    p = pytorch_rate(a.steps, a.warmup, a.batch)
    print(json.dumps({"zoo_it_per_s": z, "pytorch_it_per_s": p, "ratio": z / p, "batch": a.batch,
                      "steps": a.steps, "threads": torch.get_num_threads(), "torch": torch.__version__}))


if __name__ == "__main__":
    main()
