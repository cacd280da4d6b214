#!/usr/bin/env python3
"""Training speed of `zoo vae train` side by side with plain PyTorch (tools/vae_reference.py).

    cargo build --release -p zoo-cli
    .venv/bin/python tools/bench_vae.py --data ../shared/data/mnist [--models mlp,conv]
        [--rounds 3] [--threads 1,2] [--out bench.json]

Both sides train the same architecture on the MNIST training set at batch 128 for one epoch
(469 iterations): PyTorch with tools/vae_reference.py (the PyTorch examples' VAE recipe; its
`iters_per_s` counts the training loop only), zoo with `zoo vae train --preset mlp-mnist |
conv-mnist --steps 469`, whose rate is taken from the `elapsed_s` of its metrics between the
first logged step and the last (data loading, the final evaluation and checkpoints are not
counted). Rounds interleave the sides; the table gives medians and zoo / PyTorch.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "target" / "release" / "zoo"
PRESET = {"mlp": "mlp-mnist", "conv": "conv-mnist"}


def run_torch(data, model, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, str(ROOT / "tools" / "vae_reference.py"), "--data", data, "--model", model,
           "--epochs", "1", "--threads", str(threads), "--json"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])["iters_per_s"]


def run_zoo(data, model, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(ZOO), "--device", "cpu", "--threads", str(threads), "-q", "vae", "train",
               "--data", f"mnist:{data}", "--preset", PRESET[model], "--out", f"{tmp}/run",
               "--steps", "469", "--iw-samples", "0", "--eval-images", "500"]
        subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        recs = [json.loads(l) for l in Path(f"{tmp}/run/metrics.jsonl").read_text().splitlines()]
        steps = [r for r in recs if "loss" in r and "elapsed_s" in r]
        first, last = steps[0], steps[-1]
        return (last["step"] - first["step"]) / (last["elapsed_s"] - first["elapsed_s"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--models", default="mlp,conv")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--out")
    a = ap.parse_args()
    table = {}
    for model in a.models.split(","):
        for t in [int(x) for x in a.threads.split(",")]:
            res = {"torch": [], "zoo": []}
            for r in range(a.rounds):
                res["torch"].append(run_torch(a.data, model, t))
                res["zoo"].append(run_zoo(a.data, model, t))
                print(f"{model} threads {t} round {r + 1}: torch {res['torch'][-1]:.1f} it/s, "
                      f"zoo {res['zoo'][-1]:.1f} it/s", file=sys.stderr)
            p, z = statistics.median(res["torch"]), statistics.median(res["zoo"])
            table[f"{model}/{t}"] = {"torch": p, "zoo": z, "ratio": z / p}
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print("| model | threads | PyTorch it/s | zoo it/s | zoo / PyTorch |")
    print("|---|---|---|---|---|")
    for k, v in table.items():
        m, t = k.split("/")
        print(f"| {PRESET[m]} | {t} | {v['torch']:.1f} | {v['zoo']:.1f} | {v['ratio']:.2f}x |")
    if a.out:
        Path(a.out).write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
