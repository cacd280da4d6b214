#!/usr/bin/env python3
"""How fast libtorch reads a weight matrix at batch 1, next to a plain streaming read.

    .venv/bin/python tools/bench_gemv.py [--threads 1]

Decoding one token runs every linear layer as a matrix-vector product, so its speed is the
speed at which the weights stream from memory. For the shapes of GPT-2-124M and a 100M Llama
this prints GB/s of weights read (best of 10) for:

- `sum`: torch.sum over the matrix, the streaming read a kernel can hope for;
- `linear (N, K)`: torch.nn.functional.linear, W stored (out, in) as nn.Linear does (MKL sgemv);
- `addmm (K, N)`: torch.addmm(b, x, W), W stored (in, out) as GPT-2's Conv1D does.

Each measurement cycles through enough copies of the matrix (>= 256 MB) that none is in cache.
zoo's own kernels (crates/zoo-core/csrc/gemv.cpp) are measured end to end by
`zoo -v llm generate` (docs/benchmarks.md).
"""
import argparse
import time

import torch

SHAPES = [  # (name, N out, K in)
    ("GPT-2 c_attn", 2304, 768),
    ("GPT-2 mlp c_fc", 3072, 768),
    ("GPT-2 mlp c_proj", 768, 3072),
    ("Llama gate/up", 2048, 768),
    ("Llama down", 768, 2048),
    ("GPT-2 LM head", 50257, 768),
]


def best(f, reps=10):
    f()
    t = float("inf")
    for _ in range(reps):
        s = time.perf_counter()
        f()
        t = min(t, time.perf_counter() - s)
    return t


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {a.threads} thread(s); GB/s of weights read")
    print(f"{'shape':<18} {'N x K':>12} {'sum':>6} {'linear (N, K)':>14} {'addmm (K, N)':>13}")
    for name, n, k in SHAPES:
        copies = max(1, (256 << 20) // (n * k * 4))
        w_nk = [torch.randn(n, k) for _ in range(copies)]
        w_kn = [w.t().contiguous() for w in w_nk]
        x, b = torch.randn(1, k), torch.randn(n)
        nbytes = copies * n * k * 4
        with torch.no_grad():
            t_sum = best(lambda: [w.sum() for w in w_nk])
            t_lin = best(lambda: [torch.nn.functional.linear(x, w, b) for w in w_nk])
            t_mm = best(lambda: [torch.addmm(b, x, w) for w in w_kn])
        gb = lambda t: nbytes / t / 1e9
        print(f"{name:<18} {f'{n} x {k}':>12} {gb(t_sum):>6.1f} {gb(t_lin):>14.1f} {gb(t_mm):>13.1f}", flush=True)
        del w_nk, w_kn


if __name__ == "__main__":
    main()
