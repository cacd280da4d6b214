#!/usr/bin/env python3
"""WaveGlow training speed of `zoo flow train` side by side with the same model in PyTorch.

    cargo build --release -p zoo-cli
    .venv/bin/python tools/bench_flow_train.py [--presets waveglow-8k-small,waveglow-8k]
        [--steps 60] [--rounds 2] [--threads 1,2]

Both sides train a preset's WaveGlow (tools/make_flow_fixtures.py's PyTorch port of NVIDIA's
glow.py, weight norm removed, as zoo's model has none) with the preset's batch size, segment
length, learning rate and gradient clipping, on the same synthetic clips (a few seconds of
random tones and noise written as WAVs; the content does not change the arithmetic). Each step:
random crops, an STFT log-mel of each crop, the WaveGlow loss, backward, clipping, Adam. zoo's
rate is the `elapsed_s` of its metrics between the first logged step and the last (its data
loading, final evaluation and model export are not counted); PyTorch's is timed over the same
steps after 3 warm-up steps. Rounds interleave the sides; the table gives medians and
zoo / PyTorch.
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
import wave
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "target" / "release" / "zoo"
sys.path.insert(0, str(ROOT / "tools"))


def write_clips(folder, rate, n=24, seconds=1.5):
    import numpy as np

    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    t = np.arange(int(rate * seconds)) / rate
    for i in range(n):
        f0 = rng.uniform(80, 300)
        x = sum(np.sin(2 * math.pi * f0 * k * t) / k for k in range(1, 6)) * 0.2
        x = x + rng.normal(0, 0.02, t.shape)
        pcm = (np.clip(x, -1, 1) * 32767).astype("<i2")
        with wave.open(str(folder / f"clip{i:02d}.wav"), "wb") as w:
            w.setnchannels(1)
            w.setsampwidth(2)
            w.setframerate(rate)
            w.writeframes(pcm.tobytes())


def torch_child(preset, clips, threads, steps):
    import numpy as np
    import torch
    from make_flow_fixtures import WaveGlow, loss_fn

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    cfg = json.loads((ROOT / "models" / "flow" / f"{preset}.json").read_text())
    wc, dc, tc = cfg["waveglow_config"], cfg["data_config"], cfg["train_config"]
    model = WaveGlow(**wc)
    for m in model.modules():
        if hasattr(m, "weight_g"):
            torch.nn.utils.remove_weight_norm(m)
    opt = torch.optim.Adam(model.parameters(), lr=tc["learning_rate"])
    audio = []
    for p in sorted(Path(clips).glob("*.wav")):
        with wave.open(str(p)) as w:
            audio.append(torch.from_numpy(np.frombuffer(w.readframes(w.getnframes()), "<i2").astype("float32") / 32768))
    seg, bs, sigma = dc["segment_length"], tc["batch_size"], tc["sigma"]
    n_fft, hop, win = dc["filter_length"], dc["hop_length"], dc["win_length"]
    window = torch.hann_window(win)
    # a mel filterbank's cost (its values do not change the timing)
    fb = torch.rand(wc["n_mel_channels"], n_fft // 2 + 1) / n_fft

    def step():
        idx = torch.randint(len(audio), (bs,))
        crops = []
        for i in idx.tolist():
            a = audio[i]
            s = torch.randint(0, max(1, a.numel() - seg), ()).item()
            crops.append(a[s:s + seg])
        x = torch.stack(crops)
        with torch.no_grad():
            spec = torch.stft(x, n_fft, hop, win, window, center=True, return_complex=True).abs()
            mel = torch.log(torch.clamp(fb @ spec, min=1e-5))
        z, log_s, log_det_w = model(mel, x)
        loss, _, _ = loss_fn(z, log_s, log_det_w, sigma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc["clip_grad"])
        opt.step()

    for _ in range(3):
        step()
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    return steps / (time.perf_counter() - t0)


def run_torch(preset, clips, threads, steps):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--child", preset, str(clips), str(threads), str(steps)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])["steps_per_s"]


def run_zoo(preset, clips, threads, steps, tmp):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    out = Path(tmp) / f"run-{preset}-{threads}"
    cmd = [str(ZOO), "--device", "cpu", "--threads", str(threads), "-q", "flow", "train", "--data", f"wav:{clips}",
           "--preset", preset, "--out", str(out), "--steps", str(steps + 10), "--eval-every", "100000",
           "--eval-clips", "1"]
    subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    recs = [json.loads(l) for l in (out / "metrics.jsonl").read_text().splitlines()]
    logged = [r for r in recs if "loss" in r and "elapsed_s" in r]
    first, last = logged[0], logged[-1]
    subprocess.run(["rm", "-rf", str(out)], check=True)
    return (last["step"] - first["step"]) / (last["elapsed_s"] - first["elapsed_s"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="waveglow-8k-small,waveglow-8k")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--child", nargs=4)
    a = ap.parse_args()
    if a.child:
        preset, clips, threads, steps = a.child
        print(json.dumps({"steps_per_s": torch_child(preset, clips, int(threads), int(steps))}))
        return
    table = {}
    with tempfile.TemporaryDirectory() as tmp:
        for preset in a.presets.split(","):
            cfg = json.loads((ROOT / "models" / "flow" / f"{preset}.json").read_text())
            clips = Path(tmp) / f"clips-{cfg['data_config']['sampling_rate']}"
            if not clips.exists():
                write_clips(clips, cfg["data_config"]["sampling_rate"])
            for t in [int(x) for x in a.threads.split(",")]:
                res = {"torch": [], "zoo": []}
                for r in range(a.rounds):
                    res["torch"].append(run_torch(preset, clips, t, a.steps))
                    res["zoo"].append(run_zoo(preset, clips, t, a.steps, tmp))
                    print(f"{preset} threads {t} round {r + 1}: torch {res['torch'][-1]:.2f} steps/s, "
                          f"zoo {res['zoo'][-1]:.2f} steps/s", file=sys.stderr)
                p, z = statistics.median(res["torch"]), statistics.median(res["zoo"])
                table[(preset, t)] = (p, z)
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print("| preset | threads | PyTorch steps/s | zoo steps/s | zoo / PyTorch |")
    print("|---|---|---|---|---|")
    for (preset, t), (p, z) in table.items():
        print(f"| {preset} | {t} | {p:.2f} | {z:.2f} | {z / p:.2f}x |")


if __name__ == "__main__":
    main()
