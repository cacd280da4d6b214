#!/usr/bin/env python3
"""WaveGlow inference speed of `zoo flow vocode` side by side with the same model in PyTorch.

    cargo build --release -p zoo-cli
    .venv/bin/python tools/bench_flow.py [--presets waveglow-8k-small,waveglow-22k] [--seconds 4]
        [--rounds 3] [--threads 1,2] [--out bench.json]

For each preset of models/flow/, a random WaveGlow is built with the PyTorch port of
NVIDIA's glow.py in tools/make_flow_fixtures.py (weight norm on, as NVIDIA trains it),
converted to a zoo model folder with tools/convert_waveglow.py (weight norm folded), and the
PyTorch side gets the same folded weights (weight norm removed: what NVIDIA's inference
does too). Input: a random log-mel of `--seconds` of audio at the preset's rate, saved to a
safetensors file for zoo. Task: infer at sigma 0.6, batch 1, f32, CPU.

Each round runs one PyTorch process (load, one warm-up infer, then a timed infer) and one
`target/release/zoo flow vocode --input mel.safetensors` process, whose note reports the
time of its infer call (no warm-up). Real-time factor = compute seconds / audio seconds (lower
is faster); the table gives medians over rounds and the ratio PyTorch RTF / zoo RTF (above 1:
zoo is faster).
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
sys.path.insert(0, str(ROOT / "tools"))


def make_model(preset, folder):
    import torch
    from safetensors.torch import save_file
    from convert_waveglow import convert_state_dict
    from make_flow_fixtures import WaveGlow

    cfg = json.loads((ROOT / "models" / "flow" / f"{preset}.json").read_text())
    torch.manual_seed(0)
    model = WaveGlow(**cfg["waveglow_config"]).eval()
    with torch.no_grad():
        for wn in model.WN:  # not the identity
            wn.end.weight.normal_(0, 0.02)
    folder.mkdir(parents=True, exist_ok=True)
    save_file(convert_state_dict(model.state_dict()), str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(cfg, indent=2))
    return cfg


def torch_child(folder, mel_path, threads):
    import torch
    from safetensors.torch import load_file
    from make_flow_fixtures import WaveGlow

    torch.set_num_threads(threads)
    cfg = json.loads((Path(folder) / "config.json").read_text())
    model = WaveGlow(**cfg["waveglow_config"]).eval()
    for m in model.modules():  # fold weight norm, as NVIDIA's inference does
        if hasattr(m, "weight_g"):
            torch.nn.utils.remove_weight_norm(m)
    model.load_state_dict(load_file(str(Path(folder) / "model.safetensors")), strict=True)
    mel = load_file(mel_path)["mel"]
    with torch.no_grad():
        model.infer(mel[:, :, :8], sigma=0.6)  # warm-up
        torch.manual_seed(0)
        t0 = time.perf_counter()
        audio = model.infer(mel, sigma=0.6)
        secs = time.perf_counter() - t0
    sr = cfg["data_config"]["sampling_rate"]
    return {"seconds": secs, "audio_seconds": audio.shape[1] / sr}


def run_torch(folder, mel, threads):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, __file__, "--child", str(folder), str(mel), str(threads)]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    out = json.loads(r.stdout.strip().splitlines()[-1])
    return out["seconds"] / out["audio_seconds"]


def run_zoo(folder, mel, threads, tmp):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [str(ZOO), "--device", "cpu", "--threads", str(threads), "flow", "vocode", "--model", str(folder),
           "--input", str(mel), "--sigma", "0.6", "--out", f"{tmp}/out.wav"]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    m = re.search(r"real-time factor ([0-9.]+)", r.stderr)
    if not m:
        raise RuntimeError(f"no real-time factor in: {r.stderr}")
    return float(m.group(1))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="waveglow-8k-small,waveglow-22k")
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--out")
    ap.add_argument("--child", nargs=3)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(torch_child(a.child[0], a.child[1], int(a.child[2]))))
        return
    import torch
    from safetensors.torch import save_file

    threads = [int(t) for t in a.threads.split(",")]
    table = {}
    with tempfile.TemporaryDirectory() as tmp:
        for preset in a.presets.split(","):
            folder = Path(tmp) / preset
            cfg = make_model(preset, folder)
            dc = cfg["data_config"]
            frames = int(a.seconds * dc["sampling_rate"] / dc["hop_length"])
            mel = Path(tmp) / f"{preset}-mel.safetensors"
            torch.manual_seed(1)
            save_file({"mel": torch.randn(1, cfg["waveglow_config"]["n_mel_channels"], frames) - 5.0}, str(mel))
            for t in threads:
                res = {"torch": [], "zoo": []}
                for r in range(a.rounds):
                    res["torch"].append(run_torch(folder, mel, t))
                    res["zoo"].append(run_zoo(folder, mel, t, tmp))
                    print(f"{preset} threads {t} round {r + 1}: torch RTF {res['torch'][-1]:.3f}, "
                          f"zoo RTF {res['zoo'][-1]:.3f}", file=sys.stderr)
                p, z = statistics.median(res["torch"]), statistics.median(res["zoo"])
                table[f"{preset}/{t}"] = {"torch_rtf": p, "zoo_rtf": z, "speedup": p / z}
    print(f"load average at the end: {os.getloadavg()[0]:.2f}")
    print(f"| model | threads | PyTorch RTF | zoo RTF | zoo speed-up |")
    print("|---|---|---|---|---|")
    for k, v in table.items():
        preset, t = k.split("/")
        print(f"| {preset} | {t} | {v['torch_rtf']:.3f} | {v['zoo_rtf']:.3f} | {v['speedup']:.2f}x |")
    if a.out:
        Path(a.out).write_text(json.dumps(table, indent=2))


if __name__ == "__main__":
    main()
