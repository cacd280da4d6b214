"""Golden fixtures for Stable Diffusion text-to-image (issue 21), made with diffusers and
transformers in the project's .venv. Nothing is downloaded: every model is a tiny random one
built from a config, and the CLIP tokenizer's vocabulary is made here.

    .venv/bin/python tools/make_sd_fixtures.py [part ...]      # parts: clip configs pipelines

Writes tests/fixtures/sd/:
- clip/: two CLIPTokenizer folders (tokenizer-sd1: pad "<|endoftext|>" as SD 1.x;
  tokenizer-sd2: pad "!" as SD 2.x, plus a tokenizer.json), two tiny CLIPTextModels
  (text_encoder-quick_gelu, SD1-like; text_encoder-gelu, SD2-like), cases.json (prompts and the
  exact input_ids SD's pipeline feeds the text encoder, with the truncation warning's text) and
  outputs.safetensors (last_hidden_state / pooler_output of each encoder on those ids).
- configs.json: the released SD 1.5 / SD 2.1 UNet, text encoder and VAE configs with their
  parameter counts (instantiated on the meta device; no weights).
- sd1-tiny/, sd2-tiny/, sd1-inpaint-tiny/: tiny pipelines in the on-disk layout of a diffusers
  Stable Diffusion repo, with cases.json (every argument of each pipeline call, its timesteps and
  the order of its random draws), the init image and mask PNGs, and expected.safetensors (the
  images, the latents prepare_latents returned, every tensor drawn from the generator, and
  single-module UNet / VAE reference outputs). The cases run on the pipeline loaded back from
  the folder.

The whole run takes well under a minute on one thread.

Running it twice gives identical files.
"""
import json
import os
import re
import shutil
import sys

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import warnings

import numpy as np
import PIL.Image
import torch
import diffusers
import transformers
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    EulerAncestralDiscreteScheduler,
    PNDMScheduler,
    StableDiffusionImg2ImgPipeline,
    StableDiffusionInpaintPipeline,
    StableDiffusionPipeline,
    UNet2DConditionModel,
)
from diffusers.utils import logging as dlogging
from safetensors.torch import save_file
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

torch.set_num_threads(1)
# img2img with num_images_per_prompt > 1 and one init image takes diffusers' deprecated
# "duplicate the image latents" path on purpose (that is how SD is called); no warning for it.
warnings.filterwarnings("ignore", category=FutureWarning, module="diffusers")
dlogging.disable_progress_bar()
dlogging.set_verbosity_error()
transformers.utils.logging.disable_progress_bar()
transformers.utils.logging.set_verbosity_error()

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
OUT = os.path.join(ROOT, "tests", "fixtures", "sd")
CLIP = os.path.join(OUT, "clip")
VERSIONS = {"torch": torch.__version__, "diffusers": diffusers.__version__, "transformers": transformers.__version__}

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
MAX_LEN = 77

# ---------------------------------------------------------------------------------------------
# CLIP tokenizer: CLIP's layout (256 byte characters, the same 256 with "</w>", one token per
# merge in merge order, then <|startoftext|> and <|endoftext|> as the last two ids), with merges
# learnt here by plain BPE on a small corpus so that common words become one or a few tokens.

CORPUS = """
a photo of a cat sitting on the sofa. a photo of an astronaut riding a horse on mars.
a painting by an artist in the style of van gogh, high quality, masterpiece, best quality,
highly detailed, sharp focus, trending on artstation, digital art, concept art, illustration.
a beautiful landscape with mountains and a lake at sunset, golden hour, dramatic lighting.
portrait of a young woman with red hair, studio lighting, bokeh, depth of field, 4k, 8k.
blurry, low quality, worst quality, ugly, deformed, bad anatomy, watermark, text, signature.
a dog running on the beach, a castle on a hill, a city at night with neon lights and rain.
the cat and the dog are friends. it is a small house in the forest near a river.
an oil painting of flowers in a vase, still life, soft colors, pastel, watercolor, sketch.
a futuristic robot standing in a street, cyberpunk, science fiction, cinematic, epic scene.
photograph of a red car parked in front of a building, realistic, photorealistic, detailed.
cute little kitten playing with a ball of yarn, fluffy fur, big eyes, warm light, cozy room.
a bowl of fruit on a wooden table, apples, oranges, bananas, grapes, morning sun.
a ship sailing on the ocean during a storm, waves, clouds, lightning, dark sky, moody.
the old man reading a book by the fire, candle light, library, shelves of books.
"""
NUM_MERGES = 486  # 512 byte tokens + merges + 2 specials = about 1000 ids


def bytes_to_unicode():
    """CLIP's (and GPT-2's) reversible map of the 256 bytes to printable characters."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def learn_merges(corpus, n_merges):
    """Plain BPE on the corpus' lowercase letter runs; ties go to the lexicographically
    smallest pair so that the result is deterministic."""
    freq = {}
    for w in re.findall(r"[a-z]+", corpus.lower()):
        freq[w] = freq.get(w, 0) + 1
    words = {tuple(w[:-1]) + (w[-1] + "</w>",): c for w, c in freq.items()}
    merges = []
    while len(merges) < n_merges:
        pairs = {}
        for sym, c in words.items():
            for a, b in zip(sym, sym[1:]):
                pairs[(a, b)] = pairs.get((a, b), 0) + c
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merges.append(best)
        new = {}
        for sym, c in words.items():
            out, i = [], 0
            while i < len(sym):
                if i + 1 < len(sym) and (sym[i], sym[i + 1]) == best:
                    out.append(sym[i] + sym[i + 1])
                    i += 2
                else:
                    out.append(sym[i])
                    i += 1
            new[tuple(out)] = c
        words = new
    return merges


def make_vocab():
    chars = list(bytes_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars]
    merges = learn_merges(CORPUS, NUM_MERGES)
    tokens += [a + b for a, b in merges]
    tokens += [BOS, EOS]
    assert len(set(tokens)) == len(tokens)
    return {t: i for i, t in enumerate(tokens)}, merges


def added_token(content):
    # The form SD 1.x / 2.x repos use for bos/eos/unk in their tokenizer files.
    return {"content": content, "lstrip": False, "normalized": True, "rstrip": False, "single_word": False}


def write_tokenizer(d, vocab, merges, pad):
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    special = {"bos_token": added_token(BOS), "eos_token": added_token(EOS), "pad_token": pad, "unk_token": added_token(EOS)}
    with open(os.path.join(d, "special_tokens_map.json"), "w") as f:
        json.dump(special, f, indent=2)
    cfg = {
        "add_prefix_space": False,
        "bos_token": {"__type": "AddedToken", **added_token(BOS)},
        "do_lower_case": True,
        "eos_token": {"__type": "AddedToken", **added_token(EOS)},
        "errors": "replace",
        "model_max_length": MAX_LEN,
        "pad_token": pad,
        "tokenizer_class": "CLIPTokenizer",
        "unk_token": {"__type": "AddedToken", **added_token(EOS)},
    }
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(cfg, f, indent=2)


def write_tokenizer_folder(d, which):
    """tokenizer-sd1: pad <|endoftext|>; tokenizer-sd2: pad "!" and also the tokenizer.json that
    CLIPTokenizer(Fast).save_pretrained writes (transformers 5 writes only that file and
    tokenizer_config.json, so vocab.json / merges.txt / special_tokens_map.json are written here
    in the layout of the released SD repos)."""
    vocab, merges = make_vocab()
    write_tokenizer(d, vocab, merges, pad=EOS if which == "tokenizer-sd1" else "!")
    if which == "tokenizer-sd2":
        CLIPTokenizer.from_pretrained(d).backend_tokenizer.save(os.path.join(d, "tokenizer.json"))


LONG_PROMPT = (
    "a highly detailed oil painting of an old castle on a hill above a small town at sunset, with golden "
    "light on the walls, dark clouds over the mountains, a river running through the forest, boats on the "
    "water, birds in the sky, people walking in the street near the market, a cat sleeping on a wooden "
    "bench, flowers in every window, by a famous artist, trending on artstation, masterpiece, best quality, "
    "sharp focus, dramatic lighting, and then some extra words that clip never sees"
)
PROMPTS = [
    "a photo of a cat",
    "A Photo Of An Astronaut Riding A Horse On MARS",
    "a painting, by an artist; high-quality!!! (masterpiece) [style] #art",
    "3 dogs and 12 cats in 2024, 4k 8k",
    "  a   dog \t on\nthe  beach  ",
    "it's a cat's toy, isn't it? they'll say we've won",
    "café crème in Zürich",
    "",
    LONG_PROMPT,
]
ENCODERS = {
    # name: (hidden_act, layers, tokenizer folder)
    "quick_gelu": ("quick_gelu", 3, "tokenizer-sd1"),
    "gelu": ("gelu", 4, "tokenizer-sd2"),
}


def perturb(m, seed, scale):
    """Random weights all over: adds noise to every parameter so that norms (weight 1, bias 0 at
    init) and zero-initialised biases are not trivial and a wrongly loaded tensor shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for _, p in sorted(m.named_parameters()):
            p.add_(torch.randn(p.shape, generator=g) * scale)


def text_encoder(name, vocab_size, pad_id):
    act, layers, _ = ENCODERS[name]
    cfg = CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=layers,
        max_position_embeddings=MAX_LEN,
        hidden_act=act,
        layer_norm_eps=1e-5,
        projection_dim=32,
        bos_token_id=vocab_size - 2,
        eos_token_id=vocab_size - 1,
        pad_token_id=pad_id,
    )
    torch.manual_seed(11 if name == "quick_gelu" else 12)
    m = CLIPTextModel(cfg).eval()
    perturb(m, 13 if name == "quick_gelu" else 14, 0.05)
    return m


def save_text_encoder(m, d):
    """save_pretrained, then the weights again under the names released SD repos use.
    transformers 5 saves a bare CLIPTextModel without the "text_model." prefix (and strips it
    when loading); every SD 1.x/2.x text_encoder/model.safetensors has it, so the fixture does too.
    (Released files also hold the int64 buffer text_model.embeddings.position_ids, which is not
    written here.)"""
    m.save_pretrained(d, safe_serialization=True)
    sd = {f"text_model.{k}": v.contiguous() for k, v in m.state_dict().items()}
    save_file(sd, os.path.join(d, "model.safetensors"), metadata={"format": "pt"})
    back = CLIPTextModel.from_pretrained(d).eval()
    ids = torch.arange(MAX_LEN).unsqueeze(0) % m.config.vocab_size
    with torch.no_grad():
        assert torch.equal(back(ids).last_hidden_state, m(ids).last_hidden_state), "prefixed weights did not load back"


def tokenize_like_sd(tok, prompts):
    """The ids StableDiffusionPipeline.encode_prompt feeds the text encoder."""
    return tok(prompts, padding="max_length", max_length=tok.model_max_length, truncation=True, return_tensors="pt").input_ids


def removed_text(tok, prompt):
    """What encode_prompt's truncation warning prints for one prompt (None if nothing is cut)."""
    ids = tokenize_like_sd(tok, [prompt])
    untruncated = tok([prompt], padding="longest", return_tensors="pt").input_ids
    if untruncated.shape[-1] >= ids.shape[-1] and not torch.equal(ids, untruncated):
        return tok.batch_decode(untruncated[:, tok.model_max_length - 1 : -1])[0]
    return None


def clip():
    shutil.rmtree(CLIP, ignore_errors=True)
    vocab, merges = make_vocab()
    V = len(vocab)
    for t in ["tokenizer-sd1", "tokenizer-sd2"]:
        write_tokenizer_folder(os.path.join(CLIP, t), t)
    toks = {t: CLIPTokenizer.from_pretrained(os.path.join(CLIP, t)) for t in ["tokenizer-sd1", "tokenizer-sd2"]}
    assert toks["tokenizer-sd1"].pad_token_id == V - 1 and toks["tokenizer-sd2"].pad_token_id == vocab["!"] == 0
    assert toks["tokenizer-sd1"].model_max_length == MAX_LEN

    cases = {
        "versions": VERSIONS,
        "vocab_size": V,
        "max_length": MAX_LEN,
        "notes": [
            "input_ids: tokenizer(prompts, padding='max_length', max_length=77, truncation=True), as "
            "StableDiffusionPipeline.encode_prompt calls it: bos, BPE ids, eos, then pad to 77; a long prompt keeps "
            "bos + 75 ids + eos.",
            "removed_text: encode_prompt's warning text, batch_decode(untruncated_ids[:, 76:-1]) of the prompt "
            "alone; null when nothing is cut. Decoding replaces '</w>' by a space, so punctuation reads ' , '.",
            "tokenizer-sd2's pad token '!' is a special added token: every '!' in a prompt is split out before "
            "BPE and becomes id 0 (sd1 encodes '!!!' as '!', '!', '!</w>').",
            "tokenizer.json (sd2) has padding and truncation null: padding/truncation come from the tokenizer "
            "config (pad token, model_max_length 77), not from tokenizer.json.",
            "outputs.safetensors: <encoder>.input_ids are the ids fed (sd1 ids for quick_gelu, sd2 ids for gelu); "
            "pooler_output takes the first eos position; pooler_output_legacy_eos2 is the argmax-of-ids pooling "
            "transformers uses when config.eos_token_id == 2, as in the released SD 1.x/2.x text encoder configs.",
        ],
        "prompts": PROMPTS,
        "tokenizers": {},
    }
    for tname, tok in toks.items():
        ids = tokenize_like_sd(tok, PROMPTS)
        cases["tokenizers"][tname] = {
            "bos_token_id": tok.bos_token_id,
            "eos_token_id": tok.eos_token_id,
            "pad_token_id": tok.pad_token_id,
            "unk_token_id": tok.unk_token_id,
            "input_ids": ids.tolist(),
            # the same prompts without padding/truncation (bos ... eos), to see the raw BPE
            "untruncated_ids": [tok(p).input_ids for p in PROMPTS],
            "tokens": [tok.convert_ids_to_tokens(tok(p).input_ids) for p in PROMPTS],
            "removed_text": [removed_text(tok, p) for p in PROMPTS],
        }

    out = {}
    for name, (_, _, tname) in ENCODERS.items():
        tok = toks[tname]
        m = text_encoder(name, V, tok.pad_token_id)
        save_text_encoder(m, os.path.join(CLIP, f"text_encoder-{name}"))
        ids = tokenize_like_sd(tok, PROMPTS)
        with torch.no_grad():
            o = m(ids)
            out[f"{name}.input_ids"] = ids
            out[f"{name}.last_hidden_state"] = o.last_hidden_state
            out[f"{name}.pooler_output"] = o.pooler_output
            # Released SD 1.x/2.x text encoder configs say eos_token_id 2, which switches
            # transformers to the legacy pooling (argmax of the ids). Same weights, that path:
            m.eos_token_id = 2
            out[f"{name}.pooler_output_legacy_eos2"] = m(ids).pooler_output
        cases[f"text_encoder-{name}"] = {"tokenizer": tname, "hidden_act": m.config.hidden_act, "layers": m.config.num_hidden_layers}
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(CLIP, "outputs.safetensors"))
    with open(os.path.join(CLIP, "cases.json"), "w", encoding="utf-8") as f:
        json.dump(cases, f, indent=1, ensure_ascii=False)
    print(f"clip: vocab {V}, {len(merges)} merges; removed_text {cases['tokenizers']['tokenizer-sd1']['removed_text'][-1]!r}")


# ---------------------------------------------------------------------------------------------
# Released configs (as in the public config.json files of runwayml/stable-diffusion-v1-5,
# runwayml/stable-diffusion-inpainting and stabilityai/stable-diffusion-2-1), with parameter counts.

SD_DOWN = ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"]
SD_UP = ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]
UNET_SD15 = {
    "_class_name": "UNet2DConditionModel",
    "act_fn": "silu",
    "attention_head_dim": 8,
    "block_out_channels": [320, 640, 1280, 1280],
    "center_input_sample": False,
    "cross_attention_dim": 768,
    "down_block_types": SD_DOWN,
    "downsample_padding": 1,
    "flip_sin_to_cos": True,
    "freq_shift": 0,
    "in_channels": 4,
    "layers_per_block": 2,
    "mid_block_scale_factor": 1,
    "norm_eps": 1e-05,
    "norm_num_groups": 32,
    "out_channels": 4,
    "sample_size": 64,
    "up_block_types": SD_UP,
}
UNET_SD21 = {
    **UNET_SD15,
    "attention_head_dim": [5, 10, 20, 20],
    "cross_attention_dim": 1024,
    "dual_cross_attention": False,
    "num_class_embeds": None,
    "only_cross_attention": False,
    "sample_size": 96,
    "upcast_attention": True,
    "use_linear_projection": True,
}
TEXT_SD15 = {
    "architectures": ["CLIPTextModel"],
    "attention_dropout": 0.0,
    "bos_token_id": 0,
    "dropout": 0.0,
    "eos_token_id": 2,
    "hidden_act": "quick_gelu",
    "hidden_size": 768,
    "initializer_factor": 1.0,
    "initializer_range": 0.02,
    "intermediate_size": 3072,
    "layer_norm_eps": 1e-05,
    "max_position_embeddings": 77,
    "model_type": "clip_text_model",
    "num_attention_heads": 12,
    "num_hidden_layers": 12,
    "pad_token_id": 1,
    "projection_dim": 768,
    "vocab_size": 49408,
}
# OpenCLIP ViT-H/14's text tower without its last layer (SD 2.x uses the penultimate layer's
# output, so the converted checkpoint simply has 23 layers).
TEXT_SD21 = {**TEXT_SD15, "hidden_act": "gelu", "hidden_size": 1024, "intermediate_size": 4096,
             "num_attention_heads": 16, "num_hidden_layers": 23, "projection_dim": 512}
VAE_SD = {
    "_class_name": "AutoencoderKL",
    "act_fn": "silu",
    "block_out_channels": [128, 256, 512, 512],
    "down_block_types": ["DownEncoderBlock2D"] * 4,
    "in_channels": 3,
    "latent_channels": 4,
    "layers_per_block": 2,
    "norm_num_groups": 32,
    "out_channels": 3,
    "sample_size": 512,
    "up_block_types": ["UpDecoderBlock2D"] * 4,
}
SCHED_SD15 = {
    "_class_name": "PNDMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}
SCHED_SD21 = {
    "_class_name": "DDIMScheduler",
    "beta_end": 0.012,
    "beta_schedule": "scaled_linear",
    "beta_start": 0.00085,
    "clip_sample": False,
    "num_train_timesteps": 1000,
    "prediction_type": "v_prediction",
    "set_alpha_to_one": False,
    "skip_prk_steps": True,
    "steps_offset": 1,
    "trained_betas": None,
}


def count(build):
    with torch.device("meta"):
        m = build()
    return {"parameters": sum(p.numel() for p in m.parameters()), "tensors": len(m.state_dict())}


def configs():
    def unet(c):
        return lambda: UNet2DConditionModel(**{k: v for k, v in c.items() if not k.startswith("_")})

    def text(c):
        return lambda: CLIPTextModel(CLIPTextConfig(**{k: v for k, v in c.items() if k not in ("architectures", "model_type")}))

    def vae(c):
        return lambda: AutoencoderKL(**{k: v for k, v in c.items() if not k.startswith("_")})

    models = {
        "sd15.unet": (UNET_SD15, unet(UNET_SD15)),
        "sd15-inpainting.unet": ({**UNET_SD15, "in_channels": 9}, unet({**UNET_SD15, "in_channels": 9})),
        "sd21.unet": (UNET_SD21, unet(UNET_SD21)),
        "sd15.text_encoder": (TEXT_SD15, text(TEXT_SD15)),
        "sd21.text_encoder": (TEXT_SD21, text(TEXT_SD21)),
        "sd15.vae": (VAE_SD, vae(VAE_SD)),
        "sd21.vae": ({**VAE_SD, "sample_size": 768}, vae({**VAE_SD, "sample_size": 768})),
    }
    out = {
        "versions": VERSIONS,
        "notes": [
            "parameters: sum of numel over module.parameters() when built from config (meta device); tensors: "
            "entries of the state_dict as torch builds it (the text encoder's position_ids buffer is not "
            "persistent in transformers 5, so not counted; released text_encoder files still hold "
            "text_model.embeddings.position_ids).",
            "The AutoencoderKL configs leave scaling_factor at its default, 0.18215.",
            "Released CLIPTextModel configs say bos 0 / eos 2 / pad 1 (not the vocab's 49406/49407): eos_token_id "
            "2 makes transformers pool at the argmax of the ids.",
        ],
        "models": {},
        "schedulers": {"sd15": SCHED_SD15, "sd21": SCHED_SD21},
    }
    for name, (cfg, build) in models.items():
        out["models"][name] = {"config": cfg, **count(build)}
        print(f"{name}: {out['models'][name]['parameters']} parameters, {out['models'][name]['tensors']} tensors")
    with open(os.path.join(OUT, "configs.json"), "w") as f:
        json.dump(out, f, indent=1)


# ---------------------------------------------------------------------------------------------
# Tiny pipelines. Smaller than diffusers' own test models (UNet block_out_channels (16, 32) with
# norm_num_groups 8 instead of (32, 64) / 32; VAE [8, 16] / 4 instead of [32, 64]) to keep the
# fixtures at a few MB; the structure (cross-attention blocks, linear projection, per-block head
# counts, 9-channel input, VAE mid-block attention, 2x VAE scale) is what is being tested.
# All three folders use the same VAE and sd1-tiny / sd1-inpaint-tiny the same text encoder
# (git stores identical files once).
#
# Draw order from the one CPU generator, diffusers 0.42.1 (read in pipeline_stable_diffusion*.py):
# - txt2img: prepare_latents draws the latents, randn(B*n, 4, H/f, W/f), and scales them by
#   scheduler.init_noise_sigma; then each scheduler.step may draw (EulerAncestral: randn of the
#   latents' shape every step; DDIM only with eta > 0; PNDM never). The VAE decode draws nothing.
# - img2img: VAE encode of the init image (batch 1) and latent_dist.sample: mean + std * randn(1,
#   4, h, w), times scaling_factor, then repeated to B*n; then noise randn(B*n, 4, h, w) and
#   latents = scheduler.add_noise(init_latents, noise, first timestep kept by `strength`) (no
#   init_noise_sigma); then the scheduler's per-step draws.
# - inpaint: prepare_latents first encodes the init image (posterior sample, batch 1) if the UNet
#   has 4 input channels (it needs the clean image latents for blending) or strength < 1; then
#   draws noise randn(B*n, 4, h, w): latents = noise * init_noise_sigma at strength 1, else
#   add_noise(image_latents, noise, t0). Then prepare_mask_latents encodes the masked image
#   init_image * (mask < 0.5) with another posterior sample (batch 1, drawn even for a 4-channel
#   UNet that never uses it). Then the scheduler's per-step draws. A 4-channel UNet blends after
#   every step: latents = (1 - mask) * add_noise(image_latents, noise, timesteps[i + 1]) + mask *
#   latents, with the noise of the second draw (the last step blends the clean image latents).

PIPE_SEED = {"sd1-tiny": 21, "sd2-tiny": 22, "sd1-inpaint-tiny": 23}
H = W = 32


def tiny_unet(kind):
    cfg = dict(
        sample_size=16,
        in_channels=9 if kind == "sd1-inpaint-tiny" else 4,
        out_channels=4,
        block_out_channels=(16, 32),
        layers_per_block=2,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=32,
        attention_head_dim=8,
        norm_num_groups=8,
    )
    if kind == "sd2-tiny":
        # attention_head_dim is, as in diffusers and SD 2.x, a number of heads per block
        # (4 heads of 4 channels at 16 channels, 8 of 4 at 32: the mid block takes the last).
        cfg.update(attention_head_dim=(4, 8), use_linear_projection=True, upcast_attention=True, layers_per_block=1)
    torch.manual_seed(PIPE_SEED[kind])
    m = UNet2DConditionModel(**cfg).eval()
    perturb(m, PIPE_SEED[kind] + 100, 0.05)
    return m


def tiny_vae():
    torch.manual_seed(31)
    m = AutoencoderKL(
        in_channels=3,
        out_channels=3,
        down_block_types=["DownEncoderBlock2D"] * 2,
        up_block_types=["UpDecoderBlock2D"] * 2,
        block_out_channels=[8, 16],
        layers_per_block=2,
        latent_channels=4,
        norm_num_groups=4,
        sample_size=H,
    ).eval()
    perturb(m, 131, 0.05)
    return m


def tiny_scheduler(kind):
    # from_config, as diffusers loads a scheduler_config.json: keys the class does not take
    # (PNDM's clip_sample, DDIM's skip_prk_steps) are ignored.
    if kind == "sd2-tiny":
        return DDIMScheduler.from_config(SCHED_SD21, timestep_spacing="leading")
    return PNDMScheduler.from_config(SCHED_SD15)


def init_image():
    """A 32x32 RGB test card: colour ramps and a disc."""
    y, x = np.mgrid[0:H, 0:W].astype(np.float32)
    r = x / (W - 1) * 255
    g = y / (H - 1) * 255
    b = np.where((x - 20) ** 2 + (y - 12) ** 2 < 64, 230, 40).astype(np.float32)
    return PIL.Image.fromarray(np.stack([r, g, b], -1).round().astype(np.uint8), "RGB")


def mask_image():
    """White (repaint) where 8 <= y < 24 and 4 <= x < 20, with grey edge pixels (binarised at 0.5)."""
    m = np.zeros((H, W), np.uint8)
    m[8:24, 4:20] = 255
    m[8:24, 20] = 140
    m[24, 4:20] = 100
    return PIL.Image.fromarray(m, "L")


SCHEDULERS = {"EulerAncestralDiscreteScheduler": EulerAncestralDiscreteScheduler}
PIPELINES = {
    "txt2img": StableDiffusionPipeline,
    "img2img": StableDiffusionImg2ImgPipeline,
    "inpaint": StableDiffusionInpaintPipeline,
}

CASES = {
    "sd1-tiny": [
        dict(name="txt2img_cfg", mode="txt2img", prompt="a photo of an astronaut riding a horse on mars",
             negative_prompt="blurry, low quality", seed=0, num_inference_steps=4, guidance_scale=7.5,
             num_images_per_prompt=2),
        dict(name="txt2img_euler_a", mode="txt2img", prompt="a painting of a castle on a hill",
             negative_prompt="ugly", seed=1, num_inference_steps=4, guidance_scale=7.5, num_images_per_prompt=2,
             scheduler="EulerAncestralDiscreteScheduler"),
        dict(name="txt2img_no_cfg", mode="txt2img", prompt="a cat sitting on the sofa", seed=2,
             num_inference_steps=3, guidance_scale=1.0, num_images_per_prompt=1),
        dict(name="txt2img_empty_prompt", mode="txt2img", prompt="", seed=3, num_inference_steps=3,
             guidance_scale=5.0, num_images_per_prompt=1),
        dict(name="img2img", mode="img2img", prompt="a watercolor of a dog", negative_prompt="dark", seed=4,
             num_inference_steps=5, guidance_scale=7.5, num_images_per_prompt=2, strength=0.6),
        dict(name="inpaint", mode="inpaint", prompt="a red flower", negative_prompt="blurry", seed=5,
             num_inference_steps=4, guidance_scale=7.5, num_images_per_prompt=1, strength=1.0),
        dict(name="inpaint_strength", mode="inpaint", prompt="a red flower", seed=6, num_inference_steps=5,
             guidance_scale=7.5, num_images_per_prompt=2, strength=0.7),
    ],
    "sd2-tiny": [
        dict(name="txt2img_cfg", mode="txt2img", prompt="a photo of an astronaut riding a horse on mars",
             negative_prompt="blurry, low quality", seed=0, num_inference_steps=4, guidance_scale=7.5,
             num_images_per_prompt=2),
        dict(name="txt2img_eta1", mode="txt2img", prompt="a ship sailing on the ocean during a storm!",
             seed=1, num_inference_steps=4, guidance_scale=7.5, num_images_per_prompt=1, eta=1.0),
        dict(name="txt2img_no_cfg", mode="txt2img", prompt="a cat sitting on the sofa", seed=2,
             num_inference_steps=3, guidance_scale=1.0, num_images_per_prompt=1),
        dict(name="txt2img_empty_prompt", mode="txt2img", prompt="", seed=3, num_inference_steps=3,
             guidance_scale=5.0, num_images_per_prompt=1),
        dict(name="img2img", mode="img2img", prompt="a watercolor of a dog", negative_prompt="dark", seed=4,
             num_inference_steps=5, guidance_scale=7.5, num_images_per_prompt=2, strength=0.6),
    ],
    "sd1-inpaint-tiny": [
        dict(name="inpaint", mode="inpaint", prompt="a red flower", negative_prompt="blurry", seed=0,
             num_inference_steps=4, guidance_scale=7.5, num_images_per_prompt=2, strength=1.0),
        dict(name="inpaint_strength", mode="inpaint", prompt="a red flower", seed=1, num_inference_steps=5,
             guidance_scale=7.5, num_images_per_prompt=1, strength=0.7),
        dict(name="inpaint_no_cfg", mode="inpaint", prompt="a blue bird", seed=2, num_inference_steps=3,
             guidance_scale=1.0, num_images_per_prompt=1, strength=1.0),
    ],
}


def draw_order(case, unet_channels, sched_draws):
    """The draws of one call, in order, as (what, shape) pairs; B = num_images_per_prompt."""
    n, lat = case["num_images_per_prompt"], (4, H // 2, W // 2)
    one, batch = [1, *lat], [n, *lat]
    if case["mode"] == "txt2img":
        draws = [("latents: randn, times init_noise_sigma", batch)]
    elif case["mode"] == "img2img":
        draws = [("init image VAE posterior sample (then times scaling_factor, repeated to B)", one),
                 ("noise for add_noise(init_latents, noise, first timestep)", batch)]
    else:
        draws = []
        if unet_channels == 4 or case["strength"] < 1.0:
            draws.append(("init image VAE posterior sample (image_latents, times scaling_factor, repeated to B)", one))
        draws.append(("noise: latents = noise * init_noise_sigma" if case["strength"] == 1.0
                      else "noise: latents = add_noise(image_latents, noise, first timestep)", batch))
        draws.append(("masked image VAE posterior sample (masked_image_latents)", one))
    steps = case["timesteps"]
    if sched_draws:
        draws += [(f"scheduler step {i} noise", batch) for i in range(len(steps))]
    return draws


_randn = diffusers.utils.torch_utils.randn_tensor
DRAWS = []


def recording_randn(*args, **kwargs):
    x = _randn(*args, **kwargs)
    DRAWS.append(x.detach().clone())
    return x


def record_draws():
    """Every diffusers module that imported randn_tensor gets the recording one."""
    for name, mod in list(sys.modules.items()):
        if name.startswith("diffusers") and getattr(mod, "randn_tensor", None) is _randn:
            mod.randn_tensor = recording_randn


def build_pipeline(kind, d):
    vocab, _ = make_vocab()
    tname = "tokenizer-sd2" if kind == "sd2-tiny" else "tokenizer-sd1"
    ename = "gelu" if kind == "sd2-tiny" else "quick_gelu"
    write_tokenizer_folder(os.path.join(d, "tokenizer-tmp"), tname)
    tok = CLIPTokenizer.from_pretrained(os.path.join(d, "tokenizer-tmp"))
    pipe = StableDiffusionPipeline(
        vae=tiny_vae(),
        text_encoder=text_encoder(ename, len(vocab), tok.pad_token_id),
        tokenizer=tok,
        unet=tiny_unet(kind),
        scheduler=tiny_scheduler(kind),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )
    pipe.save_pretrained(d, safe_serialization=True)
    # The released layout: text encoder weights under text_model.*, the SD tokenizer files.
    save_text_encoder(pipe.text_encoder, os.path.join(d, "text_encoder"))
    shutil.rmtree(os.path.join(d, "tokenizer"))
    os.rename(os.path.join(d, "tokenizer-tmp"), os.path.join(d, "tokenizer"))
    # The cases run on the pipeline as loaded back from the folder.
    return StableDiffusionPipeline.from_pretrained(d)


def run_case(base, case, d):
    components = dict(base.components)
    sched_name = case.get("scheduler", type(base.scheduler).__name__)
    sched_cls = SCHEDULERS.get(sched_name, type(base.scheduler))
    components["scheduler"] = sched_cls.from_config(base.scheduler.config)
    pipe = PIPELINES[case["mode"]](**components, requires_safety_checker=False)
    pipe.set_progress_bar_config(disable=True)

    captured, timesteps = {}, []
    prepare = pipe.prepare_latents

    def prepare_latents(*args, **kwargs):
        out = prepare(*args, **kwargs)
        captured["latents"] = (out[0] if isinstance(out, tuple) else out).detach().clone()
        return out

    pipe.prepare_latents = prepare_latents

    def on_step_end(_pipe, i, t, kw):
        timesteps.append(float(t))
        return {}

    kwargs = dict(
        prompt=case["prompt"],
        negative_prompt=case.get("negative_prompt"),
        num_inference_steps=case["num_inference_steps"],
        guidance_scale=case["guidance_scale"],
        num_images_per_prompt=case["num_images_per_prompt"],
        eta=case.get("eta", 0.0),
        output_type="np",
        callback_on_step_end=on_step_end,
    )
    if case["mode"] in ("txt2img", "inpaint"):
        kwargs.update(height=H, width=W)
    if case["mode"] in ("img2img", "inpaint"):
        kwargs.update(image=PIL.Image.open(os.path.join(d, "init.png")), strength=case["strength"])
    if case["mode"] == "inpaint":
        kwargs["mask_image"] = PIL.Image.open(os.path.join(d, "mask.png"))

    DRAWS.clear()
    gen = torch.Generator("cpu").manual_seed(case["seed"])
    with torch.no_grad():
        images = pipe(generator=gen, **kwargs).images
    draws = list(DRAWS)

    # The recorded draws are all the generator gave, in order: replaying them leaves a fresh
    # generator in the same state.
    replay = torch.Generator("cpu").manual_seed(case["seed"])
    for x in draws:
        assert torch.equal(torch.randn(x.shape, generator=replay), x)
    assert torch.equal(replay.get_state(), gen.get_state()), f"{case['name']}: a draw was not recorded"

    full = {
        "name": case["name"],
        "mode": case["mode"],
        "pipeline": type(pipe).__name__,
        "prompt": case["prompt"],
        "negative_prompt": case.get("negative_prompt"),
        "seed": case["seed"],
        "num_inference_steps": case["num_inference_steps"],
        "guidance_scale": case["guidance_scale"],
        "do_classifier_free_guidance": case["guidance_scale"] > 1.0,
        "eta": case.get("eta", 0.0),
        "height": H,
        "width": W,
        "num_images_per_prompt": case["num_images_per_prompt"],
        "strength": case.get("strength"),
        "image": "init.png" if case["mode"] != "txt2img" else None,
        "mask_image": "mask.png" if case["mode"] == "inpaint" else None,
        "output_type": "np",
        # the scheduler is <class>.from_config(the folder's scheduler_config.json), no overrides;
        # "config" is the resulting effective config
        "scheduler": {"class": type(pipe.scheduler).__name__, "from": "scheduler/scheduler_config.json",
                      "overrides": {}, "config": {k: v for k, v in pipe.scheduler.config.items() if not k.startswith("_")}},
        "timesteps": timesteps,
    }
    sched_draws = sched_cls is EulerAncestralDiscreteScheduler or full["eta"] > 0
    order = draw_order(full, pipe.unet.config.in_channels, sched_draws)
    assert [list(x.shape) for x in draws] == [s for _, s in order], (case["name"], [x.shape for x in draws], order)
    prefix = case["name"]
    tensors = {f"{prefix}.images": torch.from_numpy(images), f"{prefix}.latents": captured["latents"]}
    for i, x in enumerate(draws):
        tensors[f"{prefix}.draw{i}"] = x
    full["draw_order"] = [f"draw{i} {list(s)}: {what}" for i, (what, s) in enumerate(order)]
    full["expected"] = {
        "images": f"{prefix}.images",
        "latents": f"{prefix}.latents",
        "draws": [f"{prefix}.draw{i}" for i in range(len(draws))],
    }
    lo, hi = float(images.min()), float(images.max())
    clipped = float(((images == 0) | (images == 1)).mean())
    print(f"  {prefix}: images {images.shape} in [{lo:.3f}, {hi:.3f}], {clipped:.1%} clipped, {len(draws)} draws")
    return full, tensors


def module_refs(pipe, kind):
    """One UNet forward and the VAE's decode / encode, outside any pipeline."""
    unet, vae = pipe.unet, pipe.vae
    g = torch.Generator().manual_seed(PIPE_SEED[kind] + 200)
    sample = torch.randn(2, unet.config.in_channels, 16, 16, generator=g)
    ehs = torch.randn(2, MAX_LEN, 32, generator=g)
    t = torch.tensor([981, 37])
    latent = torch.randn(1, 4, 16, 16, generator=g)
    image = pipe.image_processor.preprocess(init_image())
    with torch.no_grad():
        post = vae.encode(image).latent_dist
        return {
            "unet.sample": sample,
            "unet.timestep": t,
            "unet.encoder_hidden_states": ehs,
            "unet.out": unet(sample, t, encoder_hidden_states=ehs).sample,
            "vae.latent": latent,
            "vae.decoded": vae.decode(latent).sample,
            "vae.image": image,
            "vae.latent_mean": post.mean,
            "vae.latent_std": post.std,
        }


def pipelines():
    record_draws()
    for kind, cases in CASES.items():
        d = os.path.join(OUT, kind)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        base = build_pipeline(kind, d)
        init_image().save(os.path.join(d, "init.png"))
        mask_image().save(os.path.join(d, "mask.png"))
        print(f"{kind}: unet {sum(p.numel() for p in base.unet.parameters())} parameters, "
              f"vae {sum(p.numel() for p in base.vae.parameters())}")
        tensors = module_refs(base, kind)
        out = []
        for case in cases:
            full, t = run_case(base, case, d)
            out.append(full)
            tensors.update(t)
        save_file({k: v.contiguous() for k, v in tensors.items()}, os.path.join(d, "expected.safetensors"))
        doc = {
            "versions": VERSIONS,
            "notes": [
                "Every case: generator = torch.Generator('cpu').manual_seed(seed) passed to the pipeline; "
                "output_type 'np': images (N, H, W, 3) f32 in [0, 1], N = num_images_per_prompt.",
                "<case>.latents: what prepare_latents returned (txt2img: the draw times init_noise_sigma; "
                "img2img / inpaint at strength < 1: already noised by add_noise).",
                "<case>.drawI: every tensor the generator gave, in order (see draw_order).",
                "timesteps: the t of every loop iteration (PNDM with skip_prk_steps runs one more iteration "
                "than num_inference_steps; img2img / inpaint keep the last int(steps * strength) of them).",
                "Module references (no pipeline): unet.out = unet(unet.sample, unet.timestep, "
                "encoder_hidden_states).sample; vae.decoded = vae.decode(vae.latent).sample (no scaling_factor); "
                "vae.latent_mean / vae.latent_std = vae.encode(vae.image).latent_dist, vae.image being init.png "
                "preprocessed to [-1, 1].",
            ],
            "cases": out,
        }
        with open(os.path.join(d, "cases.json"), "w") as f:
            json.dump(doc, f, indent=1)


if __name__ == "__main__":
    parts = sys.argv[1:] or ["clip", "configs", "pipelines"]
    os.makedirs(OUT, exist_ok=True)
    for part in parts:
        globals()[part]()
