#!/usr/bin/env python3
"""The PyTorch side of zoo-vae's MNIST comparison: the VAE recipe of the PyTorch examples repo
(github.com/pytorch/examples, vae/main.py), in plain PyTorch, on the same IDX files.

    .venv/bin/python tools/vae_reference.py --data ../shared/data/mnist [--model mlp|conv]
        [--epochs 10] [--seed 1] [--threads N] [--json]

The recipe: 784-400-20 MLP, Bernoulli decoder (sigmoid + binary_cross_entropy summed over
pixels), loss BCE + KL summed over the batch, Adam lr 1e-3, batch 128, shuffled each epoch.
After each epoch it prints the example's "Test set loss" (summed BCE + KL over the 10k test
images with one posterior sample each, divided by 10k) and the wall time; the last line is a JSON
summary with the training iterations per second. `--model conv` trains the same architecture as
zoo's conv-mnist preset (4x4 stride-2 convs 32, 64; fc 256; 20 latents) for the speed and loss
comparison. The data are read without torchvision: pixel / 255, as `transforms.ToTensor()`.
"""
import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def read_idx(path):
    with gzip.open(path, "rb") if str(path).endswith(".gz") else open(path, "rb") as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(root, prefix):
    for ext in (".gz", ""):
        p = Path(root) / f"{prefix}-images-idx3-ubyte{ext}"
        if p.exists():
            x = read_idx(p).astype(np.float32) / 255.0
            return torch.from_numpy(x).unsqueeze(1)  # (N, 1, 28, 28)
    raise SystemExit(f"{root}: no {prefix}-images-idx3-ubyte(.gz)")


class MlpVAE(nn.Module):
    """vae/main.py's model, unchanged."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(784, 400)
        self.fc21 = nn.Linear(400, 20)
        self.fc22 = nn.Linear(400, 20)
        self.fc3 = nn.Linear(20, 400)
        self.fc4 = nn.Linear(400, 784)

    def encode(self, x):
        h1 = F.relu(self.fc1(x.view(-1, 784)))
        return self.fc21(h1), self.fc22(h1)

    def decode(self, z):
        return torch.sigmoid(self.fc4(F.relu(self.fc3(z))))


class ConvVAE(nn.Module):
    """zoo's conv-mnist preset (crates/zoo-vae/src/conv.rs) in PyTorch."""

    def __init__(self):
        super().__init__()
        self.c1 = nn.Conv2d(1, 32, 4, 2, 1)
        self.c2 = nn.Conv2d(32, 64, 4, 2, 1)
        self.fc = nn.Linear(64 * 7 * 7, 256)
        self.fc_mu = nn.Linear(256, 20)
        self.fc_logvar = nn.Linear(256, 20)
        self.d1 = nn.Linear(20, 256)
        self.d2 = nn.Linear(256, 64 * 7 * 7)
        self.t1 = nn.ConvTranspose2d(64, 32, 4, 2, 1)
        self.t2 = nn.ConvTranspose2d(32, 1, 4, 2, 1)

    def encode(self, x):
        h = F.relu(self.c2(F.relu(self.c1(x))))
        h = F.relu(self.fc(h.flatten(1)))
        return self.fc_mu(h), self.fc_logvar(h)

    def decode(self, z):
        h = F.relu(self.d2(F.relu(self.d1(z)))).view(-1, 64, 7, 7)
        return torch.sigmoid(self.t2(F.relu(self.t1(h)))).view(-1, 784)


def forward(model, x):
    mu, logvar = model.encode(x)
    z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
    return model.decode(z), mu, logvar


def loss_function(recon_x, x, mu, logvar):
    bce = F.binary_cross_entropy(recon_x, x.view(-1, 784), reduction="sum")
    kld = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp())
    return bce + kld


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="folder with MNIST's IDX files")
    ap.add_argument("--model", choices=["mlp", "conv"], default="mlp")
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0: default)")
    ap.add_argument("--json", action="store_true", help="print JSON lines only")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    train = load_split(a.data, "train")
    test = load_split(a.data, "t10k")
    model = MlpVAE() if a.model == "mlp" else ConvVAE()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    n = train.shape[0]
    steps, train_s, t_start = 0, 0.0, time.time()
    test_loss = float("nan")
    for epoch in range(1, a.epochs + 1):
        model.train()
        perm = torch.randperm(n)
        t0 = time.time()
        train_sum = 0.0
        for i in range(0, n, a.batch_size):
            x = train[perm[i: i + a.batch_size]]
            opt.zero_grad()
            recon, mu, logvar = forward(model, x)
            loss = loss_function(recon, x, mu, logvar)
            loss.backward()
            train_sum += loss.item()
            opt.step()
            steps += 1
        train_s += time.time() - t0
        model.eval()
        total = 0.0
        with torch.no_grad():
            for i in range(0, test.shape[0], a.batch_size):
                x = test[i: i + a.batch_size]
                recon, mu, logvar = forward(model, x)
                total += loss_function(recon, x, mu, logvar).item()
        test_loss = total / test.shape[0]
        rec = {"epoch": epoch, "train_loss": train_sum / n, "test_loss": test_loss, "elapsed_s": time.time() - t_start}
        print(json.dumps(rec) if a.json else
              f"====> Epoch {epoch}: train loss {rec['train_loss']:.4f}, test set loss {test_loss:.4f} ({rec['elapsed_s']:.1f} s)")
    print(json.dumps({"model": a.model, "epochs": a.epochs, "steps": steps, "test_loss": test_loss,
                      "train_seconds": train_s, "iters_per_s": steps / train_s, "threads": torch.get_num_threads(),
                      "torch": torch.__version__}))


if __name__ == "__main__":
    main()
