#!/usr/bin/env python3
"""Golden fixtures for zoo-core, computed with PyTorch in the project's .venv.

    .venv/bin/python tools/make_core_fixtures.py

Writes tests/fixtures/core/:
- seed_draws.json: after torch.manual_seed(s), the first draws of randn / rand / randint,
  which zoo's seeding must reproduce (pipelines rely on it for parity with PyTorch);
- adamw.safetensors: a small problem (inputs, targets, initial weights) and the weights after
  each of 5 steps of torch.optim.AdamW with a decay and a no-decay group;
- prdc.safetensors + prdc.json: feature sets (real, fake) of a few cases, and the precision,
  recall, density and coverage the authors' `prdc` package (Naeem et al. 2020) gives them for
  k = 3 and k = 5, which zoo_core::eval::prdc must reproduce.
"""
import json
from pathlib import Path

import contextlib
import io

import numpy as np
import torch
from prdc import compute_prdc
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "core"


def seed_draws():
    cases = []
    for seed in (0, 42, 1234, 2**40 + 7):
        torch.manual_seed(seed)
        a = torch.randn(8)
        b = torch.rand(4)
        c = torch.randn(2, 3)
        cases.append({
            "seed": seed,
            "randn_8": a.tolist(),
            "then_rand_4": b.tolist(),
            "then_randn_2x3": c.flatten().tolist(),
        })
    return cases


def adamw():
    g = torch.Generator().manual_seed(3)
    x = torch.randn(16, 3, generator=g)
    y = torch.randn(16, 2, generator=g)
    w0 = torch.randn(3, 2, generator=g)
    b0 = torch.randn(2, generator=g)
    w = w0.clone().requires_grad_()
    b = b0.clone().requires_grad_()
    opt = torch.optim.AdamW(
        [{"params": [w], "weight_decay": 0.1}, {"params": [b], "weight_decay": 0.0}],
        lr=0.05, betas=(0.9, 0.95), eps=1e-8,
    )
    out = {"x": x, "y": y, "w0": w0, "b0": b0}
    for step in range(5):
        opt.zero_grad()
        loss = ((x @ w + b - y) ** 2).mean()
        loss.backward()
        opt.step()
        out[f"w{step + 1}"] = w.detach().clone()
        out[f"b{step + 1}"] = b.detach().clone()
    return out


def prdc_cases():
    """Feature sets whose scores differ in telling ways: shifted Gaussians; a real set with
    outliers and a pile of identical samples near one of them (precision is fooled, density and
    coverage are not); uniform noise; a fake set that drops one of two modes."""
    rng = np.random.default_rng(7)
    d = 8
    real = rng.normal(size=(300, d))
    cases = {
        "shifted": (real, rng.normal(size=(250, d)) + 0.5),
        "outlier_pile": (
            np.concatenate([real, rng.normal(size=(5, d)) * 15.0]),
            np.tile(real[:1] * 0.0 + 12.0, (120, 1)) + rng.normal(size=(120, d)) * 0.01,
        ),
        "uniform": (real, rng.uniform(-3.0, 3.0, size=(200, d))),
        "mode_drop": (
            np.concatenate([real, rng.normal(size=(300, d)) + 6.0]),
            rng.normal(size=(280, d)),
        ),
    }
    tensors, numbers = {}, {}
    for name, (r, f) in cases.items():
        tensors[f"{name}.real"] = torch.from_numpy(r.copy())
        tensors[f"{name}.fake"] = torch.from_numpy(f.copy())
        for k in (3, 5):
            with contextlib.redirect_stdout(io.StringIO()):  # compute_prdc prints the sizes
                m = compute_prdc(real_features=r, fake_features=f, nearest_k=k)
            numbers[f"{name}.k{k}"] = {key: float(v) for key, v in m.items()}
    return tensors, numbers


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "seed_draws.json").write_text(json.dumps(
        {"torch": torch.__version__, "cases": seed_draws()}, indent=1) + "\n")
    save_file(adamw(), str(OUT / "adamw.safetensors"), metadata={"torch": torch.__version__})
    tensors, numbers = prdc_cases()
    save_file(tensors, str(OUT / "prdc.safetensors"))
    (OUT / "prdc.json").write_text(json.dumps(numbers, indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
