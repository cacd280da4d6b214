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
- mlp.safetensors: a small MLP VAE of the PyTorch examples repo (fc1, fc21, fc22, fc3, fc4) with
  784 -> 32 -> 4 (small, to keep the fixture small), an input `x` in [0, 1], a fixed `eps`, and
  the expected `mu`, `logvar`, `logits`, per-image `bce` (summed, nats) and `kl`.

Every parameter is drawn at random (norm gains too), so a weight that loads into the wrong place
changes the outputs.
"""
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
    mlp_case()
    for p in sorted(OUT.rglob("*")):
        if p.is_file():
            print(f"{p.relative_to(OUT.parent.parent.parent)}: {p.stat().st_size} bytes")


if __name__ == "__main__":
    main()
