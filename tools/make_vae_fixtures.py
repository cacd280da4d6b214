#!/usr/bin/env python3
"""Golden fixtures for zoo-vae, computed with diffusers and PyTorch in the project's .venv.

    .venv/bin/python tools/make_vae_fixtures.py

Writes tests/fixtures/vae/:
- tiny-kl/ and tiny-kl-plain/: tiny random diffusers AutoencoderKL models saved with
  `save_pretrained` (config.json + diffusion_pytorch_model.safetensors), so they load exactly as a
  real `vae/` folder does. tiny-kl has mid-block attention and quant convs; tiny-kl-plain has three
  blocks, two layers per block, no attention and no quant convs.
- tiny-kl-expected.safetensors, tiny-kl-plain-expected.safetensors: a fixed input `x`, the
  posterior `mean` and `logvar`, `kl`, the decode of the posterior mean `decode_mode`, and the
  decode `decode_sample` of mean + std * `noise` for a fixed `noise`.
- wide-kl-formula/config.json and wide-kl-formula-expected.safetensors: an AutoencoderKL of 64
  channels, wide enough that zoo's 3x3 convolutions run as Winograd, with every weight and the
  input made by a formula that the Rust test repeats (`formula` below), so the fixture holds
  only the config and the outputs (the names of the parameters are in its metadata).
- mlp.safetensors: a small MLP VAE of the PyTorch examples repo (fc1, fc21, fc22, fc3, fc4) with
  784 -> 32 -> 4 (small, to keep the fixture small), an input `x` in [0, 1], a fixed `eps`, and
  the expected `mu`, `logvar`, `logits`, per-image `bce` (summed, nats) and `kl`.

Every parameter is drawn at random (norm gains too), so a weight that loads into the wrong place
changes the outputs.
"""
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from diffusers import AutoencoderKL
from safetensors.torch import save_file

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "vae"


def randomise(model, gen, scale=0.2):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + scale * torch.randn(p.shape, generator=gen))
            else:
                p.add_(scale * torch.randn(p.shape, generator=gen))


def kl_case(name, config, seed):
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    model = AutoencoderKL(**config).eval()
    randomise(model, gen)
    folder = OUT / name
    model.save_pretrained(folder, safe_serialization=True)
    c = config.get("in_channels", 3)
    s = config["sample_size"]
    x = torch.rand(2, c, s, s, generator=gen) * 2 - 1
    with torch.no_grad():
        post = model.encode(x).latent_dist
        noise = torch.randn(post.mean.shape, generator=gen)
        z = post.mean + post.std * noise
        out = {
            "x": x,
            "mean": post.mean,
            "logvar": post.logvar,
            "kl": post.kl(),
            "noise": noise,
            "decode_mode": model.decode(post.mode()).sample,
            "decode_sample": model.decode(z).sample,
        }
    save_file({k: v.contiguous() for k, v in out.items()}, OUT / f"{name}-expected.safetensors")


PHI = 0.6180339887498949
PLASTIC = 0.7548776662466927


def formula(n, k):
    """n numbers in [-1, 1): element j of stream k is frac((j + 1) * PHI + k * PLASTIC) * 2 - 1,
    in float64 (tests/tests/vae_golden.rs computes the same)."""
    j = torch.arange(1, n + 1, dtype=torch.float64)
    x = j * PHI + k * PLASTIC
    return (x - torch.floor(x)) * 2 - 1


def formula_case(name, config):
    """Parameters in sorted-name order k: weights of 2+ dims sqrt(3 / fan_in) * u, norm gains
    1 + 0.2 u, other vectors 0.1 u; the input is stream 10000."""
    model = AutoencoderKL(**config).eval()
    params = dict(model.named_parameters())
    names = sorted(params)
    with torch.no_grad():
        for k, n in enumerate(names):
            p = params[n]
            u = formula(p.numel(), k).reshape(p.shape)
            if p.dim() >= 2:
                v = (3.0 / (p.numel() // p.shape[0])) ** 0.5 * u
            elif "norm" in n and n.endswith("weight"):
                v = 1.0 + 0.2 * u
            else:
                v = 0.1 * u
            p.copy_(v.to(torch.float32))
    folder = OUT / name
    folder.mkdir(parents=True, exist_ok=True)
    model.save_config(folder)
    s = config["sample_size"]
    x = formula(2 * 3 * s * s, 10000).reshape(2, 3, s, s).to(torch.float32)
    with torch.no_grad():
        post = model.encode(x).latent_dist
        out = {"mean": post.mean, "logvar": post.logvar, "decode_mode": model.decode(post.mode()).sample}
    save_file(
        {k: v.contiguous() for k, v in out.items()},
        OUT / f"{name}-expected.safetensors",
        metadata={"names": json.dumps(names)},
    )


class MlpVae(torch.nn.Module):
    """The VAE of github.com/pytorch/examples/blob/main/vae/main.py, with sizes as arguments."""

    def __init__(self, d, h, z):
        super().__init__()
        self.fc1 = torch.nn.Linear(d, h)
        self.fc21 = torch.nn.Linear(h, z)
        self.fc22 = torch.nn.Linear(h, z)
        self.fc3 = torch.nn.Linear(z, h)
        self.fc4 = torch.nn.Linear(h, d)

    def encode(self, x):
        h1 = F.relu(self.fc1(x))
        return self.fc21(h1), self.fc22(h1)

    def decode_logits(self, z):
        return self.fc4(F.relu(self.fc3(z)))


def mlp_case():
    torch.manual_seed(7)
    gen = torch.Generator().manual_seed(7)
    m = MlpVae(784, 32, 4)
    x = torch.rand(3, 784, generator=gen)
    eps = torch.randn(3, 4, generator=gen)
    with torch.no_grad():
        mu, logvar = m.encode(x)
        z = mu + eps * torch.exp(0.5 * logvar)
        logits = m.decode_logits(z)
        # The example's loss: binary_cross_entropy on sigmoid outputs, summed over pixels.
        bce = F.binary_cross_entropy(torch.sigmoid(logits), x, reduction="none").sum(1)
        kl = -0.5 * torch.sum(1 + logvar - mu.pow(2) - logvar.exp(), dim=1)
    tensors = {k: v.contiguous() for k, v in m.state_dict().items()}
    tensors.update({"x": x, "eps": eps, "mu": mu, "logvar": logvar, "logits": logits, "bce": bce, "kl": kl})
    save_file(tensors, OUT / "mlp.safetensors")


def main():
    OUT.mkdir(parents=True, exist_ok=True)
    kl_case(
        "tiny-kl",
        dict(
            block_out_channels=(8, 16),
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            layers_per_block=1,
            norm_num_groups=4,
            latent_channels=4,
            sample_size=16,
            scaling_factor=0.3,
        ),
        seed=0,
    )
    kl_case(
        "tiny-kl-plain",
        dict(
            in_channels=1,
            out_channels=1,
            block_out_channels=(4, 8, 8),
            down_block_types=("DownEncoderBlock2D",) * 3,
            up_block_types=("UpDecoderBlock2D",) * 3,
            layers_per_block=2,
            norm_num_groups=2,
            latent_channels=2,
            sample_size=16,
            mid_block_add_attention=False,
            use_quant_conv=False,
            use_post_quant_conv=False,
            shift_factor=0.1,
        ),
        seed=1,
    )
    # 64 channels at 16x16: zoo's 3x3 convolutions run as Winograd inside a golden comparison.
    formula_case(
        "wide-kl-formula",
        dict(
            block_out_channels=(64,),
            down_block_types=("DownEncoderBlock2D",),
            up_block_types=("UpDecoderBlock2D",),
            layers_per_block=1,
            norm_num_groups=32,
            latent_channels=4,
            sample_size=16,
        ),
    )
    mlp_case()
    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            print(f"{p.relative_to(OUT.parent.parent.parent)}: {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
