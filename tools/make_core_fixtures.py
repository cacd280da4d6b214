#!/usr/bin/env python3
"""Golden fixtures for zoo-core, computed with PyTorch in the project's .venv.

    .venv/bin/python tools/make_core_fixtures.py

Writes tests/fixtures/core/:
- seed_draws.json: after torch.manual_seed(s), the first draws of randn / rand / randint,
  which zoo's seeding must reproduce (pipelines rely on it for parity with PyTorch);
- adamw.safetensors: a small problem (inputs, targets, initial weights) and the weights after
  each of 5 steps of torch.optim.AdamW with a decay and a no-decay group.
"""
import json
from pathlib import Path

import torch
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


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "seed_draws.json").write_text(json.dumps(
        {"torch": torch.__version__, "cases": seed_draws()}, indent=1) + "\n")
    save_file(adamw(), str(OUT / "adamw.safetensors"), metadata={"torch": torch.__version__})
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
