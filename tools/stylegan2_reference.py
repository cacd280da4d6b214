#!/usr/bin/env python3
"""Golden fixture for zoo-gan's StyleGAN2 (crates/zoo-gan/src/stylegan2.rs), from a minimal
PyTorch implementation of the same networks, written for this purpose.

    .venv/bin/python tools/stylegan2_reference.py

The semantics are those of NVIDIA's stylegan2-ada-pytorch `training/networks.py` (generator
"skip", discriminator "resnet", no conditioning, f32, no conv_clamp) and the state-dict names
are its names, minus its `resample_filter` buffers. To check the Rust code against something
other than itself, this file computes resampling the slow, literal way:

- every FIR step is NVIDIA's definition of upfirdn2d (insert zeros, pad, convolve each channel
  with the flipped filter as a grouped conv, keep every n-th pixel);
- an upsampling modulated conv is upfirdn2d(up=2, gain 4) followed by a *convolution* with the
  per-sample kernels (correlation with the flipped kernel), as in the generic branch of
  NVIDIA's conv2d_resample, where the Rust code uses a strided transposed conv and then the
  filter;
- modulation is always the fused, grouped-conv form, with per-sample demodulated weights.

Determinism: the synthesis layers' noise is the stored `noise_const` buffers times a non-zero
`noise_strength` (NVIDIA's noise_mode='const'), so the noise path is covered and the output
is a function of z and the weights alone. `w_avg` is random (not zero) so truncation is tested.

Writes tests/fixtures/gan/stylegan2-tiny/:
- config.json: the zoo model config ({"arch": "stylegan2", ...}): 16x16 RGB, z = w = 16,
  2 mapping layers (lr multiplier 0.01), channel_base 128 / channel_max 16 (16, 16, 8 channels).
- generator.safetensors, discriminator.safetensors: the weights (random, with magnitudes
  away from NVIDIA's init where the init is a constant, so a misplaced tensor shows).
- expected.safetensors: z, z2 (4, 16); img (psi 1), img_psi (psi 0.6), img_mix (ws 3.. from z2),
  img_nonoise (noise off), all (4, 3, 16, 16); d_in = cat(img, img_mix) (8, 3, 16, 16) and
  d_out (8) = D(d_in) (logits, two minibatch-stddev groups of 4); cutoff, psi.
"""
import json
import math
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "gan" / "stylegan2-tiny"

CONFIG = {
    "arch": "stylegan2",
    "z_dim": 16,
    "w_dim": 16,
    "img_resolution": 16,
    "img_channels": 3,
    "channel_base": 128,
    "channel_max": 16,
    "mapping_layers": 2,
    "mapping_lr_multiplier": 0.01,
    "w_avg_beta": 0.995,
    "mbstd_group_size": 4,
    "mbstd_num_channels": 1,
    "resample_filter": [1.0, 3.0, 3.0, 1.0],
}
SQRT2 = math.sqrt(2.0)


def fir(taps):
    t = torch.tensor(taps, dtype=torch.float32)
    f = torch.outer(t, t)
    return f / f.sum()


def upfirdn2d(x, f, up=1, down=1, pad=(0, 0), gain=1.0):
    """NVIDIA's upfirdn2d, same padding on both axes, written out step by step."""
    n, c, h, w = x.shape
    if up > 1:
        y = torch.zeros(n, c, h * up, w * up, dtype=x.dtype)
        y[:, :, ::up, ::up] = x
        x = y
    x = F.pad(x, [pad[0], pad[1], pad[0], pad[1]])
    k = (f * gain).flip([0, 1])[None, None].repeat(c, 1, 1, 1)
    x = F.conv2d(x, k, groups=c)
    return x[:, :, ::down, ::down]


def lrelu(x, gain=SQRT2):
    return F.leaky_relu(x, 0.2) * gain


def channels(res):
    return min(CONFIG["channel_base"] // res, CONFIG["channel_max"])


def resolutions():
    r, out = 4, []
    while r <= CONFIG["img_resolution"]:
        out.append(r)
        r *= 2
    return out


class Weights:
    """Draws the state dict, by name, from one seeded generator."""

    def __init__(self, seed):
        self.gen = torch.Generator().manual_seed(seed)
        self.sd = {}

    def randn(self, name, shape, std=1.0, mean=0.0):
        self.sd[name] = mean + std * torch.randn(shape, generator=self.gen)
        return self.sd[name]


def make_generator(wt):
    c = CONFIG
    lr = c["mapping_lr_multiplier"]
    for i in range(c["mapping_layers"]):
        cin = c["z_dim"] if i == 0 else c["w_dim"]
        wt.randn(f"mapping.fc{i}.weight", [c["w_dim"], cin], std=1.0 / lr)
        wt.randn(f"mapping.fc{i}.bias", [c["w_dim"]], std=0.1 / lr)
    wt.randn("mapping.w_avg", [c["w_dim"]], std=0.3)

    def layer(prefix, cin, cout, res, k=3, noise=True):
        wt.randn(f"{prefix}.affine.weight", [cin, c["w_dim"]])
        wt.randn(f"{prefix}.affine.bias", [cin], std=0.1, mean=1.0)
        wt.randn(f"{prefix}.weight", [cout, cin, k, k])
        wt.randn(f"{prefix}.bias", [cout], std=0.1)
        if noise:
            wt.randn(f"{prefix}.noise_const", [res, res])
            wt.sd[f"{prefix}.noise_strength"] = torch.rand([], generator=wt.gen) * 0.4 + 0.1

    for res in resolutions():
        cout = channels(res)
        if res == 4:
            wt.randn("synthesis.b4.const", [cout, 4, 4])
        else:
            layer(f"synthesis.b{res}.conv0", channels(res // 2), cout, res)
        layer(f"synthesis.b{res}.conv1", cout, cout, res)
        layer(f"synthesis.b{res}.torgb", cout, c["img_channels"], res, k=1, noise=False)


def make_discriminator(wt):
    c = CONFIG
    for res in reversed([r for r in resolutions() if r > 4]):
        tmp, out = channels(res), channels(res // 2)
        if res == c["img_resolution"]:
            wt.randn(f"b{res}.fromrgb.weight", [tmp, c["img_channels"], 1, 1])
            wt.randn(f"b{res}.fromrgb.bias", [tmp], std=0.1)
        wt.randn(f"b{res}.conv0.weight", [tmp, tmp, 3, 3])
        wt.randn(f"b{res}.conv0.bias", [tmp], std=0.1)
        wt.randn(f"b{res}.conv1.weight", [out, tmp, 3, 3])
        wt.randn(f"b{res}.conv1.bias", [out], std=0.1)
        wt.randn(f"b{res}.skip.weight", [out, tmp, 1, 1])
    c4 = channels(4)
    mb = c["mbstd_num_channels"]
    wt.randn("b4.conv.weight", [c4, c4 + mb, 3, 3])
    wt.randn("b4.conv.bias", [c4], std=0.1)
    wt.randn("b4.fc.weight", [c4, c4 * 16])
    wt.randn("b4.fc.bias", [c4], std=0.1)
    wt.randn("b4.out.weight", [1, c4])
    wt.randn("b4.out.bias", [1], std=0.1)


def fc(sd, prefix, x, lr=1.0, act=False):
    w = sd[f"{prefix}.weight"]
    y = x @ (w * (lr / math.sqrt(w.shape[1]))).t() + sd[f"{prefix}.bias"] * lr
    return lrelu(y) if act else y


def modconv(x, weight, styles, demodulate, up, f):
    """Fused modulated conv: per-sample weights in one grouped conv."""
    b, cin, h, w = x.shape
    cout, _, k, _ = weight.shape
    wb = weight[None] * styles[:, None, :, None, None]
    if demodulate:
        wb = wb * (wb.square().sum([2, 3, 4], keepdim=True) + 1e-8).rsqrt()
    wb = wb.reshape(b * cout, cin, k, k)
    x = x.reshape(1, b * cin, h, w)
    if up:
        fw = f.shape[1]
        p = k // 2
        x = upfirdn2d(x, f, up=2, pad=(p + (fw + 1) // 2, p + (fw - 2) // 2), gain=4.0)
        y = F.conv2d(x, wb.flip([2, 3]), groups=b)
    else:
        y = F.conv2d(x, wb, padding=k // 2, groups=b)
    return y.reshape(b, cout, *y.shape[2:])


def generator(sd, z, psi=1.0, mix=None, noise=True):
    c = CONFIG
    f = fir(c["resample_filter"])
    num_ws = 2 * len(resolutions())

    def mapping(z):
        x = z * (z.square().mean(1, keepdim=True) + 1e-8).rsqrt()
        for i in range(c["mapping_layers"]):
            x = fc(sd, f"mapping.fc{i}", x, lr=c["mapping_lr_multiplier"], act=True)
        ws = x[:, None, :].repeat(1, num_ws, 1)
        w_avg = sd["mapping.w_avg"]
        return w_avg + psi * (ws - w_avg)

    ws = mapping(z)
    if mix is not None:
        z2, cutoff = mix
        ws = torch.cat([ws[:, :cutoff], mapping(z2)[:, cutoff:]], 1)

    def layer(prefix, x, w, up):
        styles = fc(sd, f"{prefix}.affine", w)
        y = modconv(x, sd[f"{prefix}.weight"], styles, True, up, f)
        if noise:
            y = y + sd[f"{prefix}.noise_const"] * sd[f"{prefix}.noise_strength"]
        return lrelu(y + sd[f"{prefix}.bias"][None, :, None, None])

    def torgb(prefix, x, w):
        styles = fc(sd, f"{prefix}.affine", w) / math.sqrt(x.shape[1])
        y = modconv(x, sd[f"{prefix}.weight"], styles, False, False, f)
        return y + sd[f"{prefix}.bias"][None, :, None, None]

    x = img = None
    i = 0
    for res in resolutions():
        p = f"synthesis.b{res}"
        if res == 4:
            x = sd[f"{p}.const"][None].repeat(z.shape[0], 1, 1, 1)
            x = layer(f"{p}.conv1", x, ws[:, i], False)
            i += 1
        else:
            x = layer(f"{p}.conv0", x, ws[:, i], True)
            x = layer(f"{p}.conv1", x, ws[:, i + 1], False)
            i += 2
        y = torgb(f"{p}.torgb", x, ws[:, i])
        if img is not None:
            fw = f.shape[1]
            img = upfirdn2d(img, f, up=2, pad=((fw + 1) // 2, (fw - 2) // 2), gain=4.0) + y
        else:
            img = y
    return img


def conv(sd, prefix, x, f, down=False, act=True, gain=1.0):
    w = sd[f"{prefix}.weight"]
    k = w.shape[2]
    w = w / math.sqrt(w.shape[1] * k * k)
    p = k // 2
    if down:
        fw = f.shape[1]
        pads = (p + (fw - 1) // 2, p + (fw - 2) // 2)
        if k == 1:
            y = F.conv2d(upfirdn2d(x, f, down=2, pad=pads), w)
        else:
            y = F.conv2d(upfirdn2d(x, f, pad=pads), w, stride=2)
    else:
        y = F.conv2d(x, w, padding=p)
    b = sd.get(f"{prefix}.bias")
    if b is not None:
        y = y + b[None, :, None, None]
    return lrelu(y, SQRT2 * gain) if act else y * gain


def mbstd(x, group, nc):
    n, c, h, w = x.shape
    g = min(group, n)
    y = x.reshape(g, -1, nc, c // nc, h, w)
    y = (y - y.mean(0)).square().mean(0).add(1e-8).sqrt().mean([2, 3, 4])
    y = y.reshape(-1, nc, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], 1)


def discriminator(sd, img):
    c = CONFIG
    f = fir(c["resample_filter"])
    g = math.sqrt(0.5)
    x = img
    for res in reversed([r for r in resolutions() if r > 4]):
        p = f"b{res}"
        if res == c["img_resolution"]:
            x = conv(sd, f"{p}.fromrgb", x, f)
        y = conv(sd, f"{p}.skip", x, f, down=True, act=False, gain=g)
        x = conv(sd, f"{p}.conv0", x, f)
        x = conv(sd, f"{p}.conv1", x, f, down=True, gain=g)
        x = x + y
    x = mbstd(x, c["mbstd_group_size"], c["mbstd_num_channels"])
    x = conv(sd, "b4.conv", x, f)
    x = fc(sd, "b4.fc", x.flatten(1), act=True)
    return fc(sd, "b4.out", x).reshape(-1)


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    g, d = Weights(0), Weights(1)
    make_generator(g)
    make_discriminator(d)
    gen = torch.Generator().manual_seed(2)
    z = torch.randn(4, CONFIG["z_dim"], generator=gen)
    z2 = torch.randn(4, CONFIG["z_dim"], generator=gen)
    psi, cutoff = 0.6, 3
    with torch.no_grad():
        img = generator(g.sd, z)
        img_psi = generator(g.sd, z, psi=psi)
        img_mix = generator(g.sd, z, mix=(z2, cutoff))
        img_nonoise = generator(g.sd, z, noise=False)
        d_in = torch.cat([img, img_mix])
        d_out = discriminator(d.sd, d_in)
    (OUT / "config.json").write_text(json.dumps(CONFIG, indent=2) + "\n")
    save_file({k: v.contiguous() for k, v in g.sd.items()}, OUT / "generator.safetensors")
    save_file({k: v.contiguous() for k, v in d.sd.items()}, OUT / "discriminator.safetensors")
    save_file({"z": z, "z2": z2, "img": img, "img_psi": img_psi, "img_mix": img_mix, "img_nonoise": img_nonoise,
               "d_in": d_in, "d_out": d_out, "cutoff": torch.tensor([cutoff]), "psi": torch.tensor([psi])},
              OUT / "expected.safetensors")
    print(f"img std {img.std():.3f}, |d_out| mean {d_out.abs().mean():.3f}")
    for p in sorted(OUT.iterdir()):
        print(f"{p.relative_to(ROOT)}  {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
