#!/usr/bin/env python3
"""Speed and memory of `zoo llm generate` side by side with transformers' generate().

    cargo build --release -p zoo-cli
    .venv/bin/python tools/bench_llm.py [--rounds 3] [--threads 1,auto] [--out bench.json]

Two random models, made here with fixed seeds and saved Hugging Face-style to a temporary
folder (config.json, model.safetensors, tokenizer.json):
  gpt2-124m    GPT2Config() as released: 12 layers, 768 wide, vocabulary 50257, tied head
  llama-100m   Llama: 8 layers, 768 wide, 12 heads / 4 KV heads, MLP 2048, vocabulary 32000,
               untied head (99.5M parameters)
Their tokenizer is a word-level one with one word `t<id>` per id, so the 16-token prompt is
exactly 16 tokens on both sides, and zoo's output text gives back its token ids.

The task: batch 1, 16-token prompt, 128 new tokens, greedy, f32, CPU, EOS off on both sides.
Each round runs, for each model, one transformers process (load, a warm-up generate of 8
tokens, then one timed generate) and one `target/release/zoo llm generate` process (one
generation, no warm-up: its tokens/s line on stderr times the generate call, as the Python side
does). Rounds interleave the two sides, so background load hits both alike; the table gives
medians over rounds. Peak RSS is each child process's ru_maxrss (os.wait4), the largest over
rounds. (Linux carries ru_maxrss across fork + exec, so the parent stays small: the models are
made and the bandwidth measured in child processes.) --threads lists the thread settings to run, each in every round: a number gives both
sides that many intra-op threads; `auto` leaves each side its default (torch: one per core;
zoo: `--threads 0`, which for decoding takes the cores the load average leaves idle).

The bandwidth bound: a decoding step reads every weight once (not the embedding table of an
untied model, nor GPT-2's position table: one row each), so tokens/s <= copy bandwidth /
weight bytes per token. Copy bandwidth is the best of numpy's single-threaded copy and torch's
multi-threaded copy of a 1 GiB float32 array, counted as STREAM does (bytes read + written).
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "target" / "release" / "zoo"
PROMPT_LEN = 16
NEW_TOKENS = 128


def make_models(tmp):
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, decoders
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    out = {}
    specs = {
        "gpt2-124m": (GPT2LMHeadModel, GPT2Config(bos_token_id=None, eos_token_id=None)),
        "llama-100m": (LlamaForCausalLM, LlamaConfig(
            vocab_size=32000, hidden_size=768, intermediate_size=2048, num_hidden_layers=8,
            num_attention_heads=12, num_key_value_heads=4, max_position_embeddings=2048,
            tie_word_embeddings=False, bos_token_id=None, eos_token_id=None, pad_token_id=None)),
    }
    for seed, (name, (cls, cfg)) in enumerate(specs.items()):
        folder = Path(tmp) / name
        torch.manual_seed(seed)
        model = cls(cfg).eval()
        model.save_pretrained(folder)
        (folder / "generation_config.json").unlink(missing_ok=True)
        vocab = {f"t{i}": i for i in range(cfg.vocab_size)}
        tok = Tokenizer(models.WordLevel(vocab, unk_token="t0"))
        tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
        tok.save(str(folder / "tokenizer.json"))
        g = torch.Generator().manual_seed(100 + seed)
        prompt = torch.randint(0, cfg.vocab_size, (PROMPT_LEN,), generator=g).tolist()
        params = sum(p.numel() for p in model.parameters())
        skip = model.get_input_embeddings().weight.numel() if not cfg.tie_word_embeddings else 0
        if name.startswith("gpt2"):
            skip += model.transformer.wpe.weight.numel()
        out[name] = {
            "dir": str(folder), "prompt": prompt, "params": params,
            "weight_bytes": params * 4, "bytes_per_token": (params - skip) * 4,
        }
    return out


HF_CHILD = r"""
import json, sys, time, torch
from transformers import AutoModelForCausalLM
folder, prompt, threads, new = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3], int(sys.argv[4])
if threads != "auto":
    torch.set_num_threads(int(threads))
model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
ids = torch.tensor([prompt])
kw = dict(attention_mask=torch.ones_like(ids), do_sample=False, pad_token_id=0, eos_token_id=None)
with torch.inference_mode():
    model.generate(ids, max_new_tokens=8, min_new_tokens=8, **kw)  # warm-up
    t0 = time.perf_counter()
    out = model.generate(ids, max_new_tokens=new, min_new_tokens=new, **kw)
    secs = time.perf_counter() - t0
print(json.dumps({"secs": secs, "tokens": out[0, len(prompt):].tolist()}))
"""


def run_child(cmd):
    """Runs cmd; returns (stdout, stderr, peak RSS in MB)."""
    with tempfile.TemporaryFile() as o, tempfile.TemporaryFile() as e:
        p = subprocess.Popen(cmd, stdout=o, stderr=e)
        _, status, ru = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        o.seek(0)
        e.seek(0)
        out, err = o.read().decode(), e.read().decode()
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed ({p.returncode}): {err[-2000:]}")
    return out, err, ru.ru_maxrss / 1024  # ru_maxrss is in KiB on Linux


def run_hf(m, threads):
    out, _, rss = run_child([sys.executable, "-c", HF_CHILD, m["dir"], json.dumps(m["prompt"]),
                             str(threads), str(NEW_TOKENS)])
    r = json.loads(out.strip().splitlines()[-1])
    assert len(r["tokens"]) == NEW_TOKENS
    return NEW_TOKENS / r["secs"], r["tokens"], rss


def run_zoo(m, threads):
    prompt = " ".join(f"t{i}" for i in m["prompt"])
    n = "0" if threads == "auto" else str(threads)
    out, err, rss = run_child([str(ZOO), "--device", "cpu", "--threads", n, "llm", "generate",
                               "--model", m["dir"], "--prompt", prompt, "--temperature", "0",
                               "--max-new-tokens", str(NEW_TOKENS)])
    hit = re.search(r"(\d+) tokens in [\d.]+ s: ([\d.]+) tokens/s", err)
    if not hit or int(hit.group(1)) != NEW_TOKENS:
        sys.exit(f"zoo did not report {NEW_TOKENS} tokens: {err}")
    # stdout is the prompt, then the new tokens' text ("t<id> t<id> ...").
    if not out.startswith(prompt):
        sys.exit(f"zoo's output does not start with the prompt: {out[:200]}")
    words = out[len(prompt):].split()
    return float(hit.group(2)), [int(w[1:]) for w in words], rss


def copy_bandwidth():
    """GB/s of the best 1 GiB float32 copy (numpy 1 thread, torch all threads), read + write."""
    import numpy as np
    import torch
    n = 1 << 28
    a = np.ones(n, dtype=np.float32)
    b = np.empty_like(a)
    best = {}
    for name, copy in [("numpy", lambda: np.copyto(b, a)),
                       ("torch", lambda: torch.from_numpy(b).copy_(torch.from_numpy(a)))]:
        times = []
        for _ in range(5):
            t0 = time.perf_counter()
            copy()
            times.append(time.perf_counter() - t0)
        best[name] = 2 * a.nbytes / min(times) / 1e9
    return max(best.values()), best


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="1,auto", help="comma-separated thread settings (numbers or auto)")
    ap.add_argument("--out", type=Path, help="also write the results as JSON here")
    ap.add_argument("--make-models", metavar="DIR", help="only write the two models to DIR (and print their facts)")
    ap.add_argument("--bandwidth", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.make_models:  # child process: models to DIR, their facts to stdout
        print(json.dumps(make_models(args.make_models)))
        return
    if args.bandwidth:  # child process
        print(json.dumps(copy_bandwidth()))
        return
    settings = args.threads.split(",")
    if not ZOO.is_file():
        sys.exit(f"{ZOO} is missing: cargo build --release -p zoo-cli")
    loads = [os.getloadavg()[0]]
    with tempfile.TemporaryDirectory() as tmp:
        me = [sys.executable, __file__]
        models = json.loads(subprocess.run(me + ["--make-models", tmp], check=True, capture_output=True,
                                           text=True).stdout)
        bandwidth = lambda: json.loads(subprocess.run(me + ["--bandwidth"], check=True, capture_output=True,
                                                      text=True).stdout)
        bw, bws = bandwidth()
        keys = [(th, name) for th in settings for name in models]
        res = {k: {"hf": [], "zoo": [], "hf_rss": 0.0, "zoo_rss": 0.0, "same": None} for k in keys}
        for r in range(args.rounds):
            for th, name in keys:
                m = models[name]
                hf_tps, hf_tok, hf_rss = run_hf(m, th)
                zoo_tps, zoo_tok, zoo_rss = run_zoo(m, th)
                x = res[(th, name)]
                x["hf"].append(hf_tps)
                x["zoo"].append(zoo_tps)
                x["hf_rss"] = max(x["hf_rss"], hf_rss)
                x["zoo_rss"] = max(x["zoo_rss"], zoo_rss)
                same = next((i for i, (a, b) in enumerate(zip(hf_tok, zoo_tok)) if a != b), len(hf_tok))
                x["same"] = same if x["same"] is None else min(x["same"], same)
                loads.append(os.getloadavg()[0])
                print(f"round {r + 1}, threads {th}, {name}: transformers {hf_tps:.1f} tok/s, zoo {zoo_tps:.1f} "
                      f"tok/s, load {loads[-1]:.2f}", file=sys.stderr, flush=True)
        bw2, bws2 = bandwidth()
    if bw2 > bw:
        bw, bws = bw2, bws2
    print(f"\nmachine: {os.cpu_count()} CPUs; copy bandwidth {bw:.1f} GB/s (best of before and after the "
          f"runs; numpy 1 thread {bws['numpy']:.1f}, torch {bws['torch']:.1f}); 1-min load average "
          f"{min(loads):.2f}..{max(loads):.2f} during the run; {args.rounds} rounds\n")
    head = ("| threads | model | params | weights MB | read/token MB | bound tok/s | transformers tok/s "
            "| zoo tok/s | zoo / transformers | zoo / bound | RSS transformers MB | RSS zoo MB | same greedy tokens |")
    print(head)
    print("|" + " --- |" * (head.count("|") - 1))
    rows = {}
    for (th, name) in keys:
        m, x = models[name], res[(th, name)]
        hf, zoo = statistics.median(x["hf"]), statistics.median(x["zoo"])
        bound = bw * 1e9 / m["bytes_per_token"]
        r = dict(threads=th, model=name, params=m["params"], weight_mb=m["weight_bytes"] / 1e6,
                 read_mb=m["bytes_per_token"] / 1e6, bound=bound, hf=hf, zoo=zoo, ratio=zoo / hf,
                 of_bound=zoo / bound, hf_rss=x["hf_rss"], zoo_rss=x["zoo_rss"], same=x["same"],
                 hf_runs=x["hf"], zoo_runs=x["zoo"])
        rows[f"{th}/{name}"] = r
        print(f"| {th} | {name} | {r['params'] / 1e6:.1f}M | {r['weight_mb']:.0f} | {r['read_mb']:.0f} | {bound:.1f} "
              f"| {hf:.1f} | {zoo:.1f} | {r['ratio']:.2f}x | {r['of_bound']:.2f} | {r['hf_rss']:.0f} "
              f"| {r['zoo_rss']:.0f} | {x['same']}/{NEW_TOKENS} |")
    if args.out:
        args.out.write_text(json.dumps({"bandwidth_gbs": bw, "bandwidths": bws, "load": loads,
                                        "rounds": args.rounds, "rows": rows}, indent=1) + "\n")

if __name__ == "__main__":
    main()
