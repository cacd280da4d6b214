#!/usr/bin/env python3
"""The cdcgan-mnist recipe in plain PyTorch, to tell the recipe's behaviour from zoo's.

    .venv/bin/python tools/cdcgan_peer.py --data ../shared/data/mnist [--steps 1000] [--d-cond plane|onehot|branch]
        [--mode-seeking 1.0]

zoo's conditional DCGAN for MNIST (models/gan/cdcgan-mnist.json: nz 100, ngf = ndf = 32, 32x32
grey, Adam 2e-4 (0.5, 0.999), BCE on logits, batch 64, one D step then one G step on the same
fakes) written with torch.nn, with the recipe's N(0, 0.02) init. The generator concatenates a
learned 100-wide class embedding to z, as zoo's does. `--d-cond` picks how the discriminator sees
the class:

- `plane` (zoo's): a learned 32x32 plane per class as a second input channel;
- `onehot`: ten constant one-hot planes as extra input channels;
- `branch`: the image and the one-hot planes each through their own first conv, concatenated.

`--mode-seeking W` adds MSGAN's term (Mao et al. 2019), as zoo's `mode_seeking` setting does:
the fakes of a batch are two halves with the same classes and different latents, and the
generator also minimises W / (mean |G(z1) - G(z2)| / mean |z1 - z2| + 1e-5).

Every 250 steps it prints the within-class spread of the samples (the per-pixel standard
deviation over samples of one class, averaged over pixels and the ten classes, G in training
mode) next to the same number for real MNIST digits: a generator that draws one image per class
gives ~0 where real digits give ~0.24.
"""
import argparse
import gzip
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

NZ, NGF, NDF, NC = 100, 32, 32, 10


def load_mnist(root):
    with gzip.open(Path(root) / "train-images-idx3-ubyte.gz") as f:
        x = np.frombuffer(f.read(), np.uint8, offset=16).reshape(-1, 1, 28, 28)
    with gzip.open(Path(root) / "train-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    x = np.pad(x, ((0, 0), (0, 0), (2, 2), (2, 2)))
    return torch.from_numpy(x).float() / 127.5 - 1, torch.from_numpy(y)


class Generator(nn.Module):
    def __init__(self):
        super().__init__()
        self.label_emb = nn.Embedding(NC, NZ)
        self.main = nn.Sequential(
            nn.ConvTranspose2d(2 * NZ, NGF * 4, 4, 1, 0, bias=False), nn.BatchNorm2d(NGF * 4), nn.ReLU(True),
            nn.ConvTranspose2d(NGF * 4, NGF * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(NGF * 2), nn.ReLU(True),
            nn.ConvTranspose2d(NGF * 2, NGF, 4, 2, 1, bias=False), nn.BatchNorm2d(NGF), nn.ReLU(True),
            nn.ConvTranspose2d(NGF, 1, 4, 2, 1, bias=False), nn.Tanh())

    def forward(self, z, y):
        return self.main(torch.cat([z, self.label_emb(y).view(-1, NZ, 1, 1)], 1))


class Discriminator(nn.Module):
    def __init__(self, cond):
        super().__init__()
        self.cond = cond
        self.label_emb = nn.Embedding(NC, 32 * 32)
        if cond == "branch":
            self.image_in = nn.Conv2d(1, NDF // 2, 4, 2, 1, bias=False)
            self.label_in = nn.Conv2d(NC, NDF // 2, 4, 2, 1, bias=False)
            first = [nn.Identity()]
        else:
            first = [nn.Conv2d(1 + (NC if cond == "onehot" else 1), NDF, 4, 2, 1, bias=False)]
        self.main = nn.Sequential(
            *first, nn.LeakyReLU(0.2),
            nn.Conv2d(NDF, NDF * 2, 4, 2, 1, bias=False), nn.BatchNorm2d(NDF * 2), nn.LeakyReLU(0.2),
            nn.Conv2d(NDF * 2, NDF * 4, 4, 2, 1, bias=False), nn.BatchNorm2d(NDF * 4), nn.LeakyReLU(0.2),
            nn.Conv2d(NDF * 4, 1, 4, 1, 0, bias=False))

    def forward(self, img, y):
        planes = F.one_hot(y, NC).float().view(-1, NC, 1, 1).expand(-1, NC, 32, 32)
        if self.cond == "plane":
            x = torch.cat([img, self.label_emb(y).view(-1, 1, 32, 32)], 1)
        elif self.cond == "onehot":
            x = torch.cat([img, planes], 1)
        else:
            x = torch.cat([self.image_in(img), self.label_in(planes)], 1)
        return self.main(x).view(-1)


def init(m):
    name = m.__class__.__name__
    if "Conv" in name:
        nn.init.normal_(m.weight, 0.0, 0.02)
    elif "BatchNorm" in name:
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def within_class_std(images, labels):
    return torch.stack([images[labels == k].std(0).mean() for k in range(NC)]).mean().item()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the MNIST folder (IDX .gz files)")
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--d-cond", choices=["plane", "onehot", "branch"], default="plane")
    ap.add_argument("--mode-seeking", type=float, default=0.0, help="weight of the mode-seeking term (0: off)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    x, labels = load_mnist(a.data)
    real_spread = within_class_std(x[:2000], labels[:2000])
    g, d = Generator(), Discriminator(a.d_cond)
    g.apply(init)
    d.apply(init)
    opt_g = torch.optim.Adam(g.parameters(), 2e-4, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(d.parameters(), 2e-4, betas=(0.5, 0.999))
    bce = nn.BCEWithLogitsLoss()
    t0 = time.time()
    for step in range(1, a.steps + 1):
        i = torch.randint(0, len(x), (a.batch,))
        real, y = x[i], labels[i]
        if a.mode_seeking > 0:
            half = torch.randint(0, NC, (a.batch // 2,))
            y_fake = torch.cat([half, half])
        else:
            y_fake = torch.randint(0, NC, (a.batch,))
        z = torch.randn(a.batch, NZ, 1, 1)
        fake = g(z, y_fake)
        opt_d.zero_grad()
        out_real, out_fake = d(real, y), d(fake.detach(), y_fake)
        (bce(out_real, torch.ones_like(out_real)) + bce(out_fake, torch.zeros_like(out_fake))).backward()
        opt_d.step()
        opt_g.zero_grad()
        out = d(fake, y_fake)
        loss_g = bce(out, torch.ones_like(out))
        if a.mode_seeking > 0:
            h = a.batch // 2
            ratio = (fake[:h] - fake[h:]).abs().mean() / (z[:h] - z[h:]).abs().mean()
            loss_g = loss_g + a.mode_seeking / (ratio + 1e-5)
        loss_g.backward()
        opt_g.step()
        if step % 250 == 0:
            with torch.no_grad():
                lab = torch.arange(200) % NC
                spread = within_class_std(g(torch.randn(200, NZ, 1, 1), lab), lab)
            print(f"step {step} ({time.time() - t0:.0f} s): within-class spread {spread:.3f} "
                  f"(real digits {real_spread:.3f}), D(x) {torch.sigmoid(out_real).mean():.3f}, "
                  f"D(G(z)) {torch.sigmoid(out_fake).mean():.3f}", flush=True)


if __name__ == "__main__":
    main()
