"""Golden fixture for the mel front end (zoo_core::audio::mel), checked by tests/tests/mel_golden.rs.

Re-run from the repository root (only torch, numpy and safetensors are needed; the output is
deterministic, so an unchanged script rewrites identical files):

    .venv/bin/python tools/make_mel_fixture.py

For each config it writes to tests/fixtures/mel/:
  mel.safetensors  "<name>/signal"      (n,) f32       a fixed test signal, 0.5 s
                   "<name>/filterbank"  (n_mels, n_fft//2+1) f32
                   "<name>/mel"         (n_mels, frames) f32  log-mel of the signal
  configs.json     {"configs": {"<name>": MelConfig as JSON}, ...}

The filterbank is librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax) with its defaults
(htk=False, norm='slaney'), re-implemented below in numpy from librosa's formulas (librosa is not
a dependency of the project). The log-mel is NVIDIA's TacotronSTFT.mel_spectrogram (Tacotron 2 /
WaveGlow): torch.stft(center=True, pad_mode='reflect', periodic Hann window), magnitude,
filterbank @ magnitude, log(clamp(x, min=1e-5)).
"""

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "mel"

CONFIGS = {
    # MelConfig::waveglow_22k()
    "waveglow_22k": dict(sample_rate=22050, n_fft=1024, hop_length=256, win_length=1024,
                         n_mels=80, fmin=0.0, fmax=8000.0),
    # MelConfig::speech_8k()
    "speech_8k": dict(sample_rate=8000, n_fft=1024, hop_length=256, win_length=1024,
                      n_mels=80, fmin=0.0, fmax=4000.0),
    # Not a preset: covers win_length < n_fft (window centred in the frame), fmin > 0 and
    # fmax = None (the Nyquist frequency).
    "odd_16k": dict(sample_rate=16000, n_fft=512, hop_length=160, win_length=400,
                    n_mels=40, fmin=20.0, fmax=None),
}


# --- librosa.filters.mel, Slaney variant ---------------------------------------------------

F_SP = 200.0 / 3
MIN_LOG_HZ = 1000.0
MIN_LOG_MEL = MIN_LOG_HZ / F_SP
LOGSTEP = np.log(6.4) / 27.0


def hz_to_mel(hz):
    hz = np.asanyarray(hz, dtype=np.float64)
    lin = hz / F_SP
    log = MIN_LOG_MEL + np.log(np.maximum(hz, MIN_LOG_HZ) / MIN_LOG_HZ) / LOGSTEP
    return np.where(hz >= MIN_LOG_HZ, log, lin)


def mel_to_hz(mel):
    mel = np.asanyarray(mel, dtype=np.float64)
    lin = F_SP * mel
    log = MIN_LOG_HZ * np.exp(LOGSTEP * (mel - MIN_LOG_MEL))
    return np.where(mel >= MIN_LOG_MEL, log, lin)


def slaney_filterbank(sr, n_fft, n_mels, fmin, fmax):
    fft_hz = np.fft.rfftfreq(n=n_fft, d=1.0 / sr)
    mel_hz = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    widths = np.diff(mel_hz)
    # ramps[i, k] = mel_hz[i] - fft_hz[k]
    ramps = mel_hz[:, None] - fft_hz[None, :]
    # librosa fills an f32 array, then scales it in place (the product is computed in f64).
    weights = np.zeros((n_mels, len(fft_hz)), dtype=np.float32)
    for i in range(n_mels):
        rising = -ramps[i] / widths[i]
        falling = ramps[i + 2] / widths[i + 1]
        weights[i] = np.maximum(0, np.minimum(rising, falling))
    # Slaney norm: each triangle gets area 1 (in Hz).
    enorm = 2.0 / (mel_hz[2 : n_mels + 2] - mel_hz[:n_mels])
    weights *= enorm[:, None]
    return weights


# --- the test signal ----------------------------------------------------------------------


def test_signal(sr, secs=0.5, seed=1234):
    """Sines, a linear chirp to 0.45 sr, seeded noise; the first 50 ms are exact silence, so
    the log clamp is exercised."""
    n = int(sr * secs)
    t = np.arange(n) / sr
    x = 0.3 * np.sin(2 * np.pi * 220.0 * t)
    x += 0.2 * np.sin(2 * np.pi * 1234.5 * t + 0.3)
    x += 0.1 * np.sin(2 * np.pi * 0.3 * sr * t)
    f0, f1 = 50.0, 0.45 * sr
    x += 0.2 * np.sin(2 * np.pi * (f0 * t + 0.5 * (f1 - f0) * t * t / secs))
    x += 0.01 * np.random.default_rng(seed).standard_normal(n)
    x[: int(0.05 * sr)] = 0.0
    return torch.from_numpy(x.astype(np.float32))


def log_mel(x, fb, c):
    window = torch.hann_window(c["win_length"], periodic=True, dtype=torch.float32)
    spec = torch.stft(x, c["n_fft"], hop_length=c["hop_length"], win_length=c["win_length"],
                      window=window, center=True, pad_mode="reflect", normalized=False,
                      onesided=True, return_complex=True)
    mel = torch.matmul(fb, spec.abs())
    return torch.log(torch.clamp(mel, min=1e-5))


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    tensors = {}
    for name, c in CONFIGS.items():
        fmax = c["fmax"] if c["fmax"] is not None else c["sample_rate"] / 2
        fb = slaney_filterbank(c["sample_rate"], c["n_fft"], c["n_mels"], c["fmin"], fmax)
        fb = torch.from_numpy(fb)
        x = test_signal(c["sample_rate"])
        mel = log_mel(x, fb, c)
        tensors[f"{name}/signal"] = x.contiguous()
        tensors[f"{name}/filterbank"] = fb.contiguous()
        tensors[f"{name}/mel"] = mel.contiguous()
        print(f"{name}: signal {tuple(x.shape)}, filterbank {tuple(fb.shape)}, mel {tuple(mel.shape)}")
    save_file(tensors, str(OUT / "mel.safetensors"))
    meta = {
        "made_by": "tools/make_mel_fixture.py",
        "torch": torch.__version__,
        "numpy": np.__version__,
        "configs": CONFIGS,
    }
    (OUT / "configs.json").write_text(json.dumps(meta, indent=2) + "\n")
    size = (OUT / "mel.safetensors").stat().st_size
    print(f"wrote {OUT}/mel.safetensors ({size / 1e3:.0f} kB) and configs.json")


if __name__ == "__main__":
    main()
