#!/usr/bin/env python3
"""Converts an NVIDIA/waveglow checkpoint into a zoo model folder (config.json + model.safetensors).

    PYTHONPATH=/path/to/NVIDIA/waveglow .venv/bin/python tools/convert_waveglow.py \
        waveglow_256channels_universe_v5.pt out/waveglow-22k [--config config.json]

The published checkpoints are pickles of the whole model object (`{'model': WaveGlow}`), so
unpickling needs NVIDIA's `glow.py` on PYTHONPATH and runs code from the file: convert only files
you trust. A plain state dict (`torch.save(model.state_dict())`) needs no code.

What the conversion does:
- weight norm folded in: every `X.weight_g` / `X.weight_v` pair becomes
  `X.weight = g * v / ||v||` (norm over all dims but the first, as torch.nn.utils.weight_norm);
- old checkpoints (before NVIDIA's `convert_model.py` upgrade) with per-layer
  `WN.k.cond_layers.i` and separate `res_layers.i` / `skip_layers.i` are merged into
  `cond_layer` and `res_skip_layers.i`, as that script does;
- everything else keeps its name (`upsample`, `convinv.k.conv.weight`, `WN.k.*`), f32.

The config.json written is the published one (models/flow/waveglow-22k.json) unless --config
names another (NVIDIA's config.json parses as is).
"""
import argparse
import json
import os
import re
import sys

import torch
from safetensors.torch import save_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def fold_weight_norm(sd):
    """{..., 'X.weight_g', 'X.weight_v'} -> {..., 'X.weight'} with weight = g v / ||v||."""
    out = {}
    for k, v in sd.items():
        if k.endswith(".weight_g"):
            continue
        if k.endswith(".weight_v"):
            base = k[: -len(".weight_v")]
            g = sd[base + ".weight_g"].double()
            v = v.double()
            norm = v.reshape(v.shape[0], -1).norm(dim=1).reshape([-1] + [1] * (v.dim() - 1))
            out[base + ".weight"] = (g * v / norm).float()
        else:
            out[k] = v
    return out


def merge_old_layers(sd):
    """Per-layer cond_layers / res_layers / skip_layers (old glow.py) -> cond_layer / res_skip_layers."""
    wns = sorted({int(m.group(1)) for k in sd for m in [re.match(r"WN\.(\d+)\.cond_layers\.", k)] if m})
    for k in wns:
        p = f"WN.{k}."
        n = len({int(m.group(1)) for key in sd for m in [re.match(re.escape(p) + r"cond_layers\.(\d+)\.", key)] if m})
        for t in ("weight", "bias"):
            sd[p + "cond_layer." + t] = torch.cat([sd.pop(f"{p}cond_layers.{i}.{t}") for i in range(n)], 0)
        for i in range(n):
            for t in ("weight", "bias"):
                skip = sd.pop(f"{p}skip_layers.{i}.{t}")
                res_key = f"{p}res_layers.{i}.{t}"
                if i < n - 1 and res_key in sd:
                    sd[f"{p}res_skip_layers.{i}.{t}"] = torch.cat([sd.pop(res_key), skip], 0)
                else:
                    sd[f"{p}res_skip_layers.{i}.{t}"] = skip
    return sd


def convert_state_dict(sd):
    """A WaveGlow state dict (weight norm or not, old or new layout) -> zoo's tensors (f32)."""
    sd = {k: v.detach().cpu() for k, v in sd.items() if isinstance(v, torch.Tensor)}
    # weight norm first: the old layout's layers are weight-normed too
    sd = fold_weight_norm(sd)
    sd = merge_old_layers(sd)
    return {k: v.float().contiguous() for k, v in sorted(sd.items())}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint", help="NVIDIA's .pt (trusted: it is unpickled)")
    ap.add_argument("out", help="the model folder to write")
    ap.add_argument("--config", help="NVIDIA's config.json (default: models/flow/waveglow-22k.json)")
    a = ap.parse_args()
    ckpt = torch.load(a.checkpoint, map_location="cpu", weights_only=False)
    if isinstance(ckpt, dict) and "model" in ckpt:
        ckpt = ckpt["model"]
    if hasattr(ckpt, "state_dict"):
        ckpt = ckpt.state_dict()
    if not isinstance(ckpt, dict):
        sys.exit(f"error: {a.checkpoint}: neither a WaveGlow model nor a state dict")
    tensors = convert_state_dict(ckpt)
    cfg_path = a.config or os.path.join(ROOT, "models/flow/waveglow-22k.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    # keep only the sections zoo reads; NVIDIA's dist_config etc. are not needed
    cfg = {k: cfg[k] for k in ("description", "waveglow_config", "data_config", "train_config") if k in cfg}
    cfg.setdefault("description", f"converted from {os.path.basename(a.checkpoint)}")
    cfg["train_config"] = {
        "sigma": cfg.get("train_config", {}).get("sigma", 1.0),
        "learning_rate": cfg.get("train_config", {}).get("learning_rate", 1e-4),
        "batch_size": cfg.get("train_config", {}).get("batch_size", 12),
    }
    os.makedirs(a.out, exist_ok=True)
    save_file(tensors, os.path.join(a.out, "model.safetensors"))
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2)
    print(f"{len(tensors)} tensors -> {a.out}/model.safetensors, config.json")


if __name__ == "__main__":
    main()
