#!/usr/bin/env python3
"""Convert a PyTorch pickle checkpoint (.pt/.pth/.bin/.ckpt) to safetensors.

zoo never unpickles files (unpickling can run arbitrary code). Run this once, in the
project's .venv, on a checkpoint you trust:

    .venv/bin/python tools/convert_to_safetensors.py model.pt [-o model.safetensors] [--key state_dict]

It loads with torch.load(weights_only=True) where possible, finds the state dict (the top
level, or under "state_dict", "model", "module", "generator"... or the --key given), keeps the
tensors, un-shares tensors that share memory (safetensors stores each once), and writes the
result. Nested dicts are flattened with "." between names, as PyTorch's state_dict() does.
"""
import argparse
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

COMMON_KEYS = ("state_dict", "model", "module", "model_state_dict", "generator", "net", "params")


def flatten(obj, prefix=""):
    out = {}
    if isinstance(obj, torch.Tensor):
        out[prefix.rstrip(".")] = obj
    elif isinstance(obj, dict):
        for k, v in obj.items():
            out.update(flatten(v, f"{prefix}{k}."))
    return out


def find_state_dict(ckpt, key):
    if key:
        for part in key.split("."):
            if not isinstance(ckpt, dict) or part not in ckpt:
                sys.exit(f"error: the checkpoint has no key {key!r}")
            ckpt = ckpt[part]
        return ckpt
    if isinstance(ckpt, dict) and not any(isinstance(v, torch.Tensor) for v in ckpt.values()):
        for k in COMMON_KEYS:
            if isinstance(ckpt.get(k), dict):
                return ckpt[k]
    if hasattr(ckpt, "state_dict"):  # a whole pickled nn.Module
        return ckpt.state_dict()
    return ckpt


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoint", type=Path)
    ap.add_argument("-o", "--out", type=Path, help="output file (default: same name, .safetensors)")
    ap.add_argument("--key", help="dotted path of the state dict inside the checkpoint")
    ap.add_argument("--unsafe", action="store_true",
                    help="allow full unpickling (only for files you trust, e.g. ones holding whole modules)")
    args = ap.parse_args()

    try:
        ckpt = torch.load(args.checkpoint, map_location="cpu", weights_only=not args.unsafe)
    except Exception as e:  # noqa: BLE001 - report any load failure in one line
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        sys.exit(f"error: {args.checkpoint}: cannot load ({msg}); if you trust the file, retry with --unsafe")

    tensors = flatten(find_state_dict(ckpt, args.key))
    if not tensors:
        sys.exit(f"error: {args.checkpoint}: no tensors found (try --key)")
    # safetensors refuses shared storage: give each tensor its own contiguous copy.
    tensors = {k: v.detach().clone().contiguous() for k, v in tensors.items()}
    out = args.out or args.checkpoint.with_suffix(".safetensors")
    save_file(tensors, str(out), metadata={"format": "pt", "converted_from": args.checkpoint.name})
    n = sum(t.numel() for t in tensors.values())
    print(f"{out}: {len(tensors)} tensors, {n} parameters")


if __name__ == "__main__":
    main()
