#!/usr/bin/env python3
"""Trains the PyTorch reference WaveGlow on ONE clip, vocodes it, and measures voicing.

    .venv/bin/python tools/waveglow_overfit_peer.py --clip ../shared/data/fsdd/3_jackson_20.wav \
        [--preset waveglow-8k] [--steps 1500] [--out /tmp/wg-peer]
    .venv/bin/python tools/waveglow_overfit_peer.py --clip CLIP.wav --measure a.wav b.wav ...

The check behind docs/flow.md's "does it voice?" question: `zoo flow train` on a folder holding
one clip, against the same recipe in PyTorch. The model is tools/make_flow_fixtures.py's port of
NVIDIA's glow.py with NVIDIA's weight norm kept (NVIDIA trains with it; zoo's model folds it),
the mel is tools/make_mel_fixture.py's reference of zoo's front end, and the loop is NVIDIA's
train.py + mel2samp as zoo runs it: each step `batch_size` random crops of `segment_length`
samples plus one 16-bit step of uniform dequantisation noise, the WaveGlow loss at the
preset's sigma, gradient-norm clipping, Adam. Afterwards the whole clip is vocoded at sigma 0.6
and 0 (`infer`), written as 16-bit WAVs into --out, and measured.

Voicing measure: in the loudest 0.15 s of the real clip, the peak of the normalised
autocorrelation over lags of 80-400 Hz pitch, for the real clip and each vocoded WAV (the same
window). Voiced speech gives a peak near 0.9 at its pitch period; noise stays below ~0.2. A
peak at exactly the mel hop is the frame rate, not a voice. `--measure` prints this for any
WAVs (e.g. zoo's vocoded output) without training.
"""
import argparse
import json
import sys
import time
import wave
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))


def read_wav(path):
    with wave.open(str(path)) as w:
        rate = w.getframerate()
        return np.frombuffer(w.readframes(w.getnframes()), "<i2").astype("float32") / 32768, rate


def write_wav(path, audio, rate):
    pcm = (np.clip(audio, -1.0, 32767 / 32768) * 32768).astype("<i2")
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())


def autocorrelation_peak(x, rate, fmin=80.0, fmax=400.0):
    """(peak, lag) of the normalised autocorrelation over pitch lags fmin..fmax."""
    x = x - x.mean()
    best = (-1.0, 0)
    for lag in range(int(rate / fmax), int(rate / fmin) + 1):
        a, b = x[:-lag], x[lag:]
        den = np.sqrt(np.dot(a, a) * np.dot(b, b))
        r = float(np.dot(a, b) / den) if den > 0 else 0.0
        best = max(best, (r, lag))
    return best


def measure(clip, rate, wavs):
    n = int(0.15 * rate)
    energy = np.convolve(clip**2, np.ones(n), "valid")
    start = int(np.argmax(energy))
    print(f"window: samples {start}-{start + n} of the real clip (its loudest 0.15 s)")
    for name, x in [("real", clip)] + [(str(p), read_wav(p)[0]) for p in wavs]:
        seg = x[start:start + n]
        if len(seg) < n:
            print(f"{name}: shorter than the window")
            continue
        peak, lag = autocorrelation_peak(seg, rate)
        rms = float(np.sqrt((seg**2).mean()))
        print(f"{name}: peak {peak:.3f} at lag {lag} ({rate / lag:.0f} Hz), rms {rms:.4f}")


def train(a, clip, rate):
    import torch
    from make_flow_fixtures import WaveGlow, loss_fn
    from make_mel_fixture import log_mel, slaney_filterbank

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    cfg = json.loads((ROOT / "models" / "flow" / f"{a.preset}.json").read_text())
    wc, dc, tc = cfg["waveglow_config"], cfg["data_config"], cfg["train_config"]
    if dc["sampling_rate"] != rate:
        sys.exit(f"{a.clip}: {rate} Hz, the preset wants {dc['sampling_rate']}")
    model = WaveGlow(**wc)
    c = dict(sample_rate=rate, n_fft=dc["filter_length"], hop_length=dc["hop_length"],
             win_length=dc["win_length"], n_mels=wc["n_mel_channels"], fmin=dc["mel_fmin"],
             fmax=dc["mel_fmax"])
    fb = torch.from_numpy(slaney_filterbank(rate, c["n_fft"], c["n_mels"], c["fmin"], c["fmax"]))
    audio = torch.from_numpy(clip)
    seg, batch, sigma = dc["segment_length"], tc["batch_size"], tc["sigma"]
    if audio.numel() < seg:
        sys.exit(f"{a.clip}: shorter than a segment ({seg} samples)")
    opt = torch.optim.Adam(model.parameters(), lr=tc["learning_rate"])
    t0, recent = time.time(), []
    for step in range(1, a.steps + 1):
        starts = torch.randint(0, audio.numel() - seg + 1, (batch,)).tolist()
        x = torch.stack([audio[s:s + seg] for s in starts])
        x = x + torch.rand_like(x) / 32768
        with torch.no_grad():
            mel = torch.stack([log_mel(xi, fb, c) for xi in x])
        z, log_s, log_det_w = model(mel, x)
        loss, _, _ = loss_fn(z, log_s, log_det_w, sigma)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), tc["clip_grad"])
        opt.step()
        recent.append(loss.item())
        if step % 100 == 0 or step == a.steps:
            print(f"step {step} loss {np.mean(recent[-50:]):.4f} (mean of the last 50), "
                  f"{(time.time() - t0) / step:.3f} s/step", flush=True)
    model.eval()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    wavs = []
    with torch.no_grad():
        mel = log_mel(audio, fb, c)[None]
        for s in (0.6, 0.0):
            torch.manual_seed(a.seed)
            path = out / f"vocoded-sigma{s}.wav"
            write_wav(path, model.infer(mel, sigma=s)[0].numpy(), rate)
            wavs.append(path)
    return wavs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--clip", required=True)
    ap.add_argument("--preset", default="waveglow-8k")
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default="/tmp/wg-peer")
    ap.add_argument("--measure", nargs="+", help="only measure these WAVs against --clip")
    a = ap.parse_args()
    clip, rate = read_wav(a.clip)
    wavs = a.measure if a.measure else train(a, clip, rate)
    measure(clip, rate, wavs)


if __name__ == "__main__":
    main()
