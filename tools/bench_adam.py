#!/usr/bin/env python3
"""How much of the MNIST VAE recipe's step is the optimiser, in PyTorch itself.

    .venv/bin/python tools/bench_adam.py [--threads 1] [--steps 500]

Times the PyTorch examples' MLP VAE (784-400-20, batch 128, BCE + KL summed) training step with
torch.optim.Adam as the recipe uses it (on the CPU PyTorch then runs its for-loop
implementation) and with fused=True (the kernel zoo's AdamW calls, at::_fused_adamw_), twice
each, alternating; prints the whole step and `opt.step()` alone in milliseconds. Random inputs:
only the time matters.
"""
import argparse
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


class VAE(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc21, self.fc22 = nn.Linear(784, 400), nn.Linear(400, 20), nn.Linear(400, 20)
        self.fc3, self.fc4 = nn.Linear(20, 400), nn.Linear(400, 784)

    def forward(self, x):
        h = F.relu(self.fc1(x))
        mu, logvar = self.fc21(h), self.fc22(h)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z)))), mu, logvar


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--steps", type=int, default=500)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    x = torch.rand(128, 784)
    for fused in [False, True, False, True]:
        model = VAE()
        opt = torch.optim.Adam(model.parameters(), 1e-3, fused=fused)

        def step():
            opt.zero_grad()
            recon, mu, logvar = model(x)
            kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
            (F.binary_cross_entropy(recon, x, reduction="sum") + kl).backward()
            opt.step()

        for _ in range(50):
            step()
        t = time.perf_counter()
        for _ in range(a.steps):
            step()
        per_step = (time.perf_counter() - t) / a.steps
        t = time.perf_counter()
        for _ in range(a.steps):
            opt.step()
        per_opt = (time.perf_counter() - t) / a.steps
        name = "fused=True" if fused else "default"
        print(f"{name}: step {per_step * 1e3:.2f} ms, opt.step() alone {per_opt * 1e3:.3f} ms")


if __name__ == "__main__":
    main()
