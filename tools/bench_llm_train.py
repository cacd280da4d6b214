#!/usr/bin/env python3
"""Training throughput of `zoo llm train` side by side with a plain PyTorch loop.

    cargo build --release -p zoo-cli
    .venv/bin/python tools/bench_llm_train.py --data ../shared/data/tinyshakespeare/input.txt \
        [--steps 300] [--rounds 3] [--threads 1,2] [--full] [--out bench.json]

The model and recipe are nanoGPT's CPU recipe for shakespeare_char, which is zoo's
`shakespeare-char` preset: GPT-2 architecture (learned positions, pre-norm LayerNorm blocks,
fused QKV with biases, tanh-GELU MLP, tied head), 4 layers, 4 heads, 128 wide, context 64,
char-level vocabulary of the text; batch 12 x 64 tokens, AdamW (betas 0.9/0.99, weight decay
0.1 on matrices and embeddings only), warmup 100 steps then cosine from 1e-3 to 1e-4, gradient
norm clipped to 1.

The PyTorch side is written here as nanoGPT's train.py does it on CPU: a small nn.Module,
torch.randint windows of the token tensor, F.cross_entropy, torch.optim.AdamW with two groups,
clip_grad_norm_, the lr set on each group every step; no torch.compile (nanoGPT's CPU recipe
turns it off). Its init is GPT-2's (normal 0.02, residual projections 0.02/sqrt(2 n_layer)).

Each round runs, for each thread setting, one PyTorch process and one `zoo llm train` process
of `--steps` steps with no evaluation and no samples; tokens/s = steps x 12 x 64 / wall time
of the step loop (zoo: its summary's `tokens_per_second`). Rounds interleave the two sides, and
the table gives medians.

--full also runs the whole 2000-step recipe once on each side (2 threads) and reports the
validation loss, scored the same way on both sides: the mean loss over every non-overlapping
64-token window of the last 10% of the text.
"""
import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "target" / "release" / "zoo"
BATCH, BLOCK = 12, 64


def torch_side(data_path, steps, threads, evaluate):
    """Runs the PyTorch loop in this process; returns tokens/s (and val loss with evaluate)."""
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    text = Path(data_path).read_text(encoding="utf-8")
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    ids = torch.tensor([stoi[c] for c in text], dtype=torch.long)
    n = len(ids)
    split = round(n * 0.9)
    train, val = ids[:split], ids[split:]
    vocab, C, L, H = len(chars), 128, 4, 4

    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln_1 = nn.LayerNorm(C)
            self.c_attn = nn.Linear(C, 3 * C)
            self.c_proj = nn.Linear(C, C)
            self.ln_2 = nn.LayerNorm(C)
            self.c_fc = nn.Linear(C, 4 * C)
            self.mlp_proj = nn.Linear(4 * C, C)

        def forward(self, x):
            B, T, _ = x.shape
            q, k, v = self.c_attn(self.ln_1(x)).split(C, dim=2)
            q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            x = x + self.c_proj(y.transpose(1, 2).reshape(B, T, C))
            return x + self.mlp_proj(F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh"))

    class GPT(nn.Module):
        def __init__(self):
            super().__init__()
            self.wte = nn.Embedding(vocab, C)
            self.wpe = nn.Embedding(BLOCK, C)
            self.h = nn.ModuleList(Block() for _ in range(L))
            self.ln_f = nn.LayerNorm(C)
            for name, p in self.named_parameters():
                if p.dim() >= 2:
                    std = 0.02 / math.sqrt(2 * L) if name.endswith("proj.weight") else 0.02
                    nn.init.normal_(p, 0.0, std)
                elif name.endswith(".bias"):
                    nn.init.zeros_(p)

        def forward(self, idx, targets):
            x = self.wte(idx) + self.wpe(torch.arange(idx.shape[1]))
            for b in self.h:
                x = b(x)
            logits = F.linear(self.ln_f(x), self.wte.weight)
            return F.cross_entropy(logits.view(-1, vocab), targets.view(-1))

    model = GPT()
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-3, betas=(0.9, 0.99))
    total = 2000 if evaluate else steps

    def lr_at(it):  # nanoGPT's get_lr with warmup 100, decay over the run, min 1e-4
        if it < 100:
            return 1e-3 * (it + 1) / (100 + 1)
        ratio = (it - 100) / max(1, total - 100)
        return 1e-4 + 0.5 * (1.0 + math.cos(math.pi * min(ratio, 1.0))) * (1e-3 - 1e-4)

    t0 = time.perf_counter()
    for it in range(total):
        for g in opt.param_groups:
            g["lr"] = lr_at(it)
        ix = torch.randint(len(train) - BLOCK, (BATCH,))
        x = torch.stack([train[i:i + BLOCK] for i in ix])
        y = torch.stack([train[i + 1:i + 1 + BLOCK] for i in ix])
        loss = model(x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    seconds = time.perf_counter() - t0
    out = {"tokens_per_second": total * BATCH * BLOCK / seconds, "seconds": seconds}
    if evaluate:
        model.eval()
        with torch.no_grad():
            starts = list(range(0, len(val) - BLOCK - 1, BLOCK))
            losses = []
            for i in range(0, len(starts), 256):
                s = starts[i:i + 256]
                x = torch.stack([val[j:j + BLOCK] for j in s])
                y = torch.stack([val[j + 1:j + 1 + BLOCK] for j in s])
                losses.append(model(x, y).item() * len(s))
            out["val_loss"] = sum(losses) / len(starts)
    return out


def run_torch(data, steps, threads, evaluate=False):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--child", "--data", str(data), "--steps", str(steps),
           "--threads", str(threads)] + (["--full"] if evaluate else [])
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_zoo(data, steps, threads, evaluate=False):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(ZOO), "--threads", str(threads), "-q", "llm", "train", "--data", str(data),
               "--out", f"{tmp}/run", "--steps", str(2000 if evaluate else steps), "--json"]
        if evaluate:
            cmd += ["--eval-every", "2000", "--sample-chars", "0"]
        else:
            cmd += ["--eval-every", "0", "--sample-chars", "0"]
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
        summary = json.loads(r.stdout.strip().splitlines()[-1])
        return {k: summary[k] for k in ("tokens_per_second", "seconds", "val_loss")}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--full", action="store_true")
    ap.add_argument("--child", action="store_true")
    ap.add_argument("--out")
    a = ap.parse_args()
    if a.child:
        print(json.dumps(torch_side(a.data, a.steps, int(a.threads), a.full)))
        return
    threads = [int(t) for t in a.threads.split(",")]
    res = {t: {"zoo": [], "torch": []} for t in threads}
    for r in range(a.rounds):
        for t in threads:
            res[t]["torch"].append(run_torch(a.data, a.steps, t)["tokens_per_second"])
            res[t]["zoo"].append(run_zoo(a.data, a.steps, t)["tokens_per_second"])
            print(f"round {r + 1} threads {t}: torch {res[t]['torch'][-1]:.0f} tok/s, "
                  f"zoo {res[t]['zoo'][-1]:.0f} tok/s", file=sys.stderr)
    table = {}
    print(f"load average before the table: {os.getloadavg()[0]:.2f}")
    print("| threads | PyTorch loop tokens/s | zoo tokens/s | zoo / PyTorch |")
    print("|---|---|---|---|")
    for t in threads:
        z, p = statistics.median(res[t]["zoo"]), statistics.median(res[t]["torch"])
        table[t] = {"zoo": z, "torch": p, "ratio": z / p}
        print(f"| {t} | {p:.0f} | {z:.0f} | {z / p:.2f}x |")
    out = {"steps": a.steps, "rounds": a.rounds, "throughput": table}
    if a.full:
        p = run_torch(a.data, 2000, 2, evaluate=True)
        z = run_zoo(a.data, 2000, 2, evaluate=True)
        out["full"] = {"torch": p, "zoo": z}
        print("full recipe (2000 steps, 2 threads):")
        print(f"  PyTorch loop: val loss {p['val_loss']:.4f}, {p['seconds']:.0f} s")
        print(f"  zoo:          val loss {z['val_loss']:.4f}, {z['seconds']:.0f} s")
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
