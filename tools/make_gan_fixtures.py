#!/usr/bin/env python3
"""Golden fixtures for zoo-gan, computed with plain PyTorch in the project's .venv.

    .venv/bin/python tools/make_gan_fixtures.py

Writes tests/fixtures/gan/:
- dcgan-config.json: the zoo model config of the nets below (64x64, nz 8, ngf = ndf = 4, nc 3).
- dcgan-g.safetensors: the state dict of the PyTorch examples repo's DCGAN `Generator`
  (`examples/dcgan/main.py`, its `main` nn.Sequential copied verbatim, with nz/ngf/nc small so
  the file stays small), saved through tools/convert_to_safetensors.py's path: torch.save, then
  conversion, so the test covers what a user does with a real netG.pth.
- dcgan-d.safetensors: the recipe's `Discriminator` likewise.
- dcgan-expected.safetensors: a fixed latent `z` (N, nz, 1, 1), `g_out` = netG(z) in eval mode,
  `d_out` = netD(g_out) in eval mode (after the recipe's Sigmoid, so the test takes sigmoid of
  our logits), and the seeded draws: for SEED, `seed_z` = torch.manual_seed(SEED);
  torch.randn(N, nz, 1, 1) and `seed_g_out` = netG(seed_z).
- sn-d.safetensors, sn-expected.safetensors: a discriminator with torch.nn.utils.spectral_norm on
  every conv and no BatchNorm (zoo's d_norm "spectral", 32x32), its state dict before one
  training-mode forward (weight_orig, weight_u, weight_v), the input `x`, the output `d_out`
  (logits, no Sigmoid) of that forward, and `u_after.N`/`v_after.N` of each conv after it.

Weights are the recipe's init scaled up (N(0, 0.1) for convs) and BatchNorm running statistics
and counters are random, so a buffer that loads into the wrong place changes the outputs.
"""
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
import torch.nn as nn
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "gan"
NZ, NGF, NDF, NC = 8, 4, 4, 3
SEED, N = 1234, 4


class Generator(nn.Module):
    """The recipe's netG (ngpu handling dropped)."""

    def __init__(self, nz, ngf, nc):
        super().__init__()
        self.main = nn.Sequential(
            nn.ConvTranspose2d(nz, ngf * 8, 4, 1, 0, bias=False),
            nn.BatchNorm2d(ngf * 8),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 8, ngf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 4),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 4, ngf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf * 2),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf * 2, ngf, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ngf),
            nn.ReLU(True),
            nn.ConvTranspose2d(ngf, nc, 4, 2, 1, bias=False),
            nn.Tanh(),
        )

    def forward(self, x):
        return self.main(x)


class Discriminator(nn.Module):
    """The recipe's netD."""

    def __init__(self, ndf, nc):
        super().__init__()
        self.main = nn.Sequential(
            nn.Conv2d(nc, ndf, 4, 2, 1, bias=False),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 2),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 4),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 4, ndf * 8, 4, 2, 1, bias=False),
            nn.BatchNorm2d(ndf * 8),
            nn.LeakyReLU(0.2, inplace=True),
            nn.Conv2d(ndf * 8, 1, 4, 1, 0, bias=False),
            nn.Sigmoid(),
        )

    def forward(self, x):
        return self.main(x).view(-1, 1).squeeze(1)


def weights_init(m, gen):
    """The recipe's weights_init, with a larger std so the outputs are far from 0."""
    with torch.no_grad():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            m.weight.copy_(0.1 * torch.randn(m.weight.shape, generator=gen))
        elif isinstance(m, nn.BatchNorm2d):
            m.weight.copy_(1.0 + 0.2 * torch.randn(m.weight.shape, generator=gen))
            m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))
            m.running_mean.copy_(0.3 * torch.randn(m.running_mean.shape, generator=gen))
            m.running_var.copy_(0.5 + torch.rand(m.running_var.shape, generator=gen))
            m.num_batches_tracked.fill_(int(torch.randint(1, 1000, (1,), generator=gen)))


def convert(state_dict, out):
    """torch.save, then tools/convert_to_safetensors.py, as a user converts a netG.pth."""
    with tempfile.TemporaryDirectory() as tmp:
        pth = Path(tmp) / "net.pth"
        torch.save(state_dict, pth)
        subprocess.run([sys.executable, str(ROOT / "tools" / "convert_to_safetensors.py"), str(pth), "-o", str(out)],
                       check=True, stdout=subprocess.DEVNULL)


def sn_case(gen):
    sn = nn.utils.spectral_norm
    ndf, nc = 4, 3
    d = nn.Sequential()
    d.main = nn.Sequential(
        sn(nn.Conv2d(nc, ndf, 4, 2, 1, bias=False)),
        nn.LeakyReLU(0.2),
        sn(nn.Conv2d(ndf, ndf * 2, 4, 2, 1, bias=False)),
        nn.LeakyReLU(0.2),
        sn(nn.Conv2d(ndf * 2, ndf * 4, 4, 2, 1, bias=False)),
        nn.LeakyReLU(0.2),
        sn(nn.Conv2d(ndf * 4, 1, 4, 1, 0, bias=False)),
    )
    with torch.no_grad():
        for m in d.modules():
            if isinstance(m, nn.Conv2d):
                m.weight_orig.copy_(0.1 * torch.randn(m.weight_orig.shape, generator=gen))
    state = {k: v.clone() for k, v in d.state_dict().items()}
    save_file(state, OUT / "sn-d.safetensors")
    x = torch.randn(N, nc, 32, 32, generator=gen)
    d.train()
    with torch.no_grad():
        out = d.main(x).view(-1)
    expected = {"x": x, "d_out": out}
    for i, m in enumerate(d.main):
        if isinstance(m, nn.Conv2d):
            expected[f"u_after.{i}"] = m.weight_u.clone()
            expected[f"v_after.{i}"] = m.weight_v.clone()
    save_file(expected, OUT / "sn-expected.safetensors")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(0)
    net_g, net_d = Generator(NZ, NGF, NC), Discriminator(NDF, NC)
    for net in (net_g, net_d):
        net.apply(lambda m: weights_init(m, gen))
        net.eval()
    convert(net_g.state_dict(), OUT / "dcgan-g.safetensors")
    convert(net_d.state_dict(), OUT / "dcgan-d.safetensors")
    config = {"arch": "dcgan", "nz": NZ, "ngf": NGF, "ndf": NDF, "nc": NC, "image_size": 64}
    (OUT / "dcgan-config.json").write_text(json.dumps(config, indent=2) + "\n")

    z = torch.randn(N, NZ, 1, 1, generator=gen)
    with torch.no_grad():
        g_out = net_g(z)
        d_out = net_d(g_out)
        torch.manual_seed(SEED)
        seed_z = torch.randn(N, NZ, 1, 1)
        seed_g_out = net_g(seed_z)
    save_file({"z": z, "g_out": g_out, "d_out": d_out, "seed_z": seed_z, "seed_g_out": seed_g_out,
               "seed": torch.tensor([SEED])}, OUT / "dcgan-expected.safetensors")
    sn_case(gen)
    for p in sorted(OUT.iterdir()):
        print(f"{p.relative_to(ROOT)}  {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
