#!/usr/bin/env python3
"""Makes the WaveGlow golden fixtures in tests/fixtures/flow/.

    .venv/bin/python tools/make_flow_fixtures.py

A small random WaveGlow written here from the paper and NVIDIA/waveglow's glow.py (same module
names and semantics: weight norm on start / cond_layer / in_layers / res_skip_layers, zero-init
`end`, ConvTranspose1d upsampler of kernel 1024 and stride 256, early outputs), with the
zero-initialised `end` layers randomised so the couplings are not the identity. Its weights go
through tools/convert_waveglow.py (weight norm folded), so the fixture also tests the converter.

Writes:
- waveglow-tiny/config.json, waveglow-tiny/model.safetensors: a zoo model folder;
- waveglow-tiny-io.safetensors: `mel` (1, 6, 5), `audio_sigma0` = infer(mel, sigma 0),
  `audio` (1, 1280) and its forward pass `z`, `log_s_total`, `log_det_w_total` (sums over the
  batch, as NVIDIA's WaveGlowLoss adds them) and `loss` (sigma 1), and `audio_sigma06` =
  infer(mel, sigma 0.6) right after torch.manual_seed(SEED).
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from convert_waveglow import convert_state_dict  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "flow")
SEED = 1234
wn_ = torch.nn.utils.weight_norm  # the old API: weight_g / weight_v, as NVIDIA's checkpoints


class Invertible1x1Conv(torch.nn.Module):
    def __init__(self, c):
        super().__init__()
        self.conv = torch.nn.Conv1d(c, c, kernel_size=1, bias=False)
        w = torch.linalg.qr(torch.randn(c, c))[0]
        if torch.det(w) < 0:
            w[:, 0] = -w[:, 0]
        self.conv.weight.data = w.view(c, c, 1)

    def forward(self, z, reverse=False):
        b, _, n = z.shape
        w = self.conv.weight.squeeze(2)
        if reverse:
            return F.conv1d(z, w.double().inverse().float()[..., None])
        return self.conv(z), b * n * torch.logdet(w)


class WN(torch.nn.Module):
    def __init__(self, n_in, n_cond, n_layers, n_channels, kernel_size):
        super().__init__()
        self.n_layers, self.n_channels = n_layers, n_channels
        self.in_layers = torch.nn.ModuleList()
        self.res_skip_layers = torch.nn.ModuleList()
        self.start = wn_(torch.nn.Conv1d(n_in, n_channels, 1), name="weight")
        self.end = torch.nn.Conv1d(n_channels, 2 * n_in, 1)
        self.end.weight.data.zero_()
        self.end.bias.data.zero_()
        self.cond_layer = wn_(torch.nn.Conv1d(n_cond, 2 * n_channels * n_layers, 1), name="weight")
        for i in range(n_layers):
            d = 2**i
            pad = (kernel_size * d - d) // 2
            self.in_layers.append(
                wn_(torch.nn.Conv1d(n_channels, 2 * n_channels, kernel_size, dilation=d, padding=pad), name="weight")
            )
            out = 2 * n_channels if i < n_layers - 1 else n_channels
            self.res_skip_layers.append(wn_(torch.nn.Conv1d(n_channels, out, 1), name="weight"))

    def forward(self, audio, spect):
        audio = self.start(audio)
        output = torch.zeros_like(audio)
        spect = self.cond_layer(spect)
        h = self.n_channels
        for i in range(self.n_layers):
            x = self.in_layers[i](audio) + spect[:, i * 2 * h : (i + 1) * 2 * h]
            acts = torch.tanh(x[:, :h]) * torch.sigmoid(x[:, h:])
            rs = self.res_skip_layers[i](acts)
            if i < self.n_layers - 1:
                audio = audio + rs[:, :h]
                output = output + rs[:, h:]
            else:
                output = output + rs
        return self.end(output)


class WaveGlow(torch.nn.Module):
    def __init__(self, n_mel_channels, n_flows, n_group, n_early_every, n_early_size, WN_config,
                 upsample_stride=256, upsample_kernel=1024):
        super().__init__()
        # NVIDIA hard-codes kernel 1024, stride 256; zoo's config may set others (models/flow/)
        self.upsample = torch.nn.ConvTranspose1d(n_mel_channels, n_mel_channels, upsample_kernel,
                                                 stride=upsample_stride)
        self.n_flows, self.n_group = n_flows, n_group
        self.n_early_every, self.n_early_size = n_early_every, n_early_size
        self.WN = torch.nn.ModuleList()
        self.convinv = torch.nn.ModuleList()
        n_half = n_group // 2
        n_rem = n_group
        for k in range(n_flows):
            if k % n_early_every == 0 and k > 0:
                n_half -= n_early_size // 2
                n_rem -= n_early_size
            self.convinv.append(Invertible1x1Conv(n_rem))
            self.WN.append(WN(n_half, n_mel_channels * n_group, **WN_config))
        self.n_remaining_channels = n_rem

    def group_spect(self, spect):
        spect = spect.unfold(2, self.n_group, self.n_group).permute(0, 2, 1, 3)
        return spect.contiguous().view(spect.size(0), spect.size(1), -1).permute(0, 2, 1)

    def forward(self, spect, audio):
        spect = self.upsample(spect)
        spect = spect[:, :, : audio.size(1)]
        spect = self.group_spect(spect)
        audio = audio.unfold(1, self.n_group, self.n_group).permute(0, 2, 1)
        outs, log_s_list, log_det_w_list = [], [], []
        for k in range(self.n_flows):
            if k % self.n_early_every == 0 and k > 0:
                outs.append(audio[:, : self.n_early_size])
                audio = audio[:, self.n_early_size :]
            audio, log_det_w = self.convinv[k](audio)
            log_det_w_list.append(log_det_w)
            n_half = audio.size(1) // 2
            a0, a1 = audio[:, :n_half], audio[:, n_half:]
            out = self.WN[k](a0, spect)
            log_s, b = out[:, n_half:], out[:, :n_half]
            a1 = torch.exp(log_s) * a1 + b
            log_s_list.append(log_s)
            audio = torch.cat([a0, a1], 1)
        outs.append(audio)
        return torch.cat(outs, 1), log_s_list, log_det_w_list

    def infer(self, spect, sigma=1.0):
        spect = self.upsample(spect)
        spect = spect[:, :, : -(self.upsample.kernel_size[0] - self.upsample.stride[0])]
        spect = self.group_spect(spect)
        audio = sigma * torch.randn(spect.size(0), self.n_remaining_channels, spect.size(2))
        for k in reversed(range(self.n_flows)):
            n_half = audio.size(1) // 2
            a0, a1 = audio[:, :n_half], audio[:, n_half:]
            out = self.WN[k](a0, spect)
            s, b = out[:, n_half:], out[:, :n_half]
            a1 = (a1 - b) / torch.exp(s)
            audio = self.convinv[k](torch.cat([a0, a1], 1), reverse=True)
            if k % self.n_early_every == 0 and k > 0:
                z = torch.randn(spect.size(0), self.n_early_size, spect.size(2))
                audio = torch.cat((sigma * z, audio), 1)
        return audio.permute(0, 2, 1).contiguous().view(audio.size(0), -1)


def loss_fn(z, log_s_list, log_det_w_list, sigma=1.0):
    log_s_total = sum(torch.sum(s) for s in log_s_list)
    log_det_w_total = sum(log_det_w_list)
    loss = torch.sum(z * z) / (2 * sigma * sigma) - log_s_total - log_det_w_total
    return loss / (z.size(0) * z.size(1) * z.size(2)), log_s_total, log_det_w_total


def main():
    torch.manual_seed(0)
    cfg = dict(
        n_mel_channels=6,
        n_flows=4,
        n_group=4,
        n_early_every=2,
        n_early_size=2,
        WN_config=dict(n_layers=3, n_channels=8, kernel_size=3),
    )
    model = WaveGlow(**cfg).eval()
    with torch.no_grad():
        for wn in model.WN:  # not the identity
            wn.end.weight.normal_(0, 0.1)
            wn.end.bias.normal_(0, 0.1)
        model.upsample.weight.mul_(4.0)  # a conditioning signal clearly above rounding noise
        for c in model.convinv:  # no longer orthonormal: log det W != 0 (and still > 0)
            c.conv.weight.add_(0.1 * torch.randn_like(c.conv.weight))
            assert torch.det(c.conv.weight.squeeze(2)) > 0
    mel = torch.randn(1, 6, 5)
    audio = 0.3 * torch.randn(1, 5 * 256)
    with torch.no_grad():
        z, log_s_list, log_det_w_list = model(mel, audio)
        loss, log_s_total, log_det_w_total = loss_fn(z, log_s_list, log_det_w_list)
        audio_sigma0 = model.infer(mel, sigma=0.0)
        torch.manual_seed(SEED)
        audio_sigma06 = model.infer(mel, sigma=0.6)

    os.makedirs(os.path.join(OUT, "waveglow-tiny"), exist_ok=True)
    state = model.state_dict()
    assert any(k.endswith("weight_g") for k in state), "the fixture should exercise weight-norm folding"
    save_file(convert_state_dict(state), os.path.join(OUT, "waveglow-tiny", "model.safetensors"))
    file = {
        "description": "tools/make_flow_fixtures.py: a tiny random WaveGlow (NVIDIA's layout), for the golden test",
        "waveglow_config": cfg,
        "data_config": {
            "segment_length": 1024, "sampling_rate": 8000, "filter_length": 1024, "hop_length": 256,
            "win_length": 1024, "mel_fmin": 0.0, "mel_fmax": 4000.0,
        },
        "train_config": {"sigma": 1.0, "learning_rate": 1e-4, "batch_size": 1},
    }
    with open(os.path.join(OUT, "waveglow-tiny", "config.json"), "w") as f:
        json.dump(file, f, indent=2)
    io = {
        "mel": mel,
        "audio": audio,
        "z": z,
        "log_s_total": log_s_total.reshape(1),
        "log_det_w_total": log_det_w_total.reshape(1),
        "loss": loss.reshape(1),
        "audio_sigma0": audio_sigma0,
        "audio_sigma06": audio_sigma06,
        "seed": torch.tensor([SEED], dtype=torch.int64),
    }
    save_file({k: v.contiguous() for k, v in io.items()}, os.path.join(OUT, "waveglow-tiny-io.safetensors"))
    print(f"wrote {OUT}: loss {loss.item():.5f}, |audio_sigma0| max {audio_sigma0.abs().max().item():.4f}")


if __name__ == "__main__":
    main()
