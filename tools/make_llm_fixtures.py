#!/usr/bin/env python3
"""Golden fixtures for zoo-llm, computed with transformers in the project's .venv.

    .venv/bin/python tools/make_llm_fixtures.py

Writes tests/fixtures/llm/ (about 1 MB), read by tests/tests/llm_golden.rs:
- tokenizer.json: a byte-level BPE tokenizer (vocab 320) trained here on TEXT below, as
  GPT-2's is; llama-style folders get a copy that also adds a BOS token to every input;
- one Hugging Face-style folder per model (config.json, model.safetensors, tokenizer.json):
    gpt2/          GPT2LMHeadModel as save_pretrained writes it (`transformer.` keys, tied head)
    gpt2-bare/     the same weights as the bare GPT2Model, keys without `transformer.` plus the
                   `attn.bias` / `attn.masked_bias` buffers, like the `gpt2` files on the Hub
    llama-gqa/     Llama, 4 heads / 2 KV heads, rope_scaling llama3, untied head; its
                   config.json is rewritten in transformers-4 style (rope_theta + rope_scaling)
    llama-tied/    Llama with attention_bias and mlp_bias, linear RoPE scaling, tied head
    qwen2/         Qwen2 (q/k/v biases), GQA, tied head
    mistral/       Mistral, GQA, sliding_window 4 (shorter than the prompts)
  and reference.safetensors / reference.json in each: the prompts' token ids, logits of each
  prompt alone, logits of the left-padded batch (with its mask), and greedy continuations from
  model.generate(do_sample=False).
- chat_templates.json: four real chat templates (ChatML as Qwen2 ships it, Llama-3, Zephyr,
  Llama-2 with raise_exception), conversations, and what transformers' apply_chat_template
  renders (or the error it raises), read by tests/tests/llm_chat.rs;
- llama-gqa/tokenizer_config.json with a short chat template (the real ones above spend most
  of the 128-token context of these models on headers), and llama-gqa/chat_reference.json: a
  conversation of user turns and transformers' greedy replies, each reply appended to the
  history before the next turn (read by crates/zoo-cli/tests/llm.rs, which drives `zoo llm chat`).

`--only chat` remakes just those two steps (the models' files stay as they are).

Weights are random but larger than transformers' init (std 0.02 gives near-uniform logits,
whose argmax would hinge on rounding): every tensor is redrawn with a std that makes the
logits spread over several units, so greedy tokens are decided by clear margins.
"""
import argparse
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    Qwen2Config,
    PreTrainedTokenizerFast,
    Qwen2ForCausalLM,
)

OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "llm"

# A short text of our own to train the tokenizer on (with some multi-byte characters, so
# that the byte-level tokens of the test prompts split some characters across tokens).
TEXT = """The old lighthouse keeper climbed the stairs every evening at dusk.
He counted the steps, one hundred and twelve, and lit the lamp with a steady hand.
Ships passed in the night, their sailors grateful for the beam that swept the sea.
In the morning he wrote in his log: wind from the west, waves high, all ships safe.
The café by the harbour served bread, cheese and strong coffee; the baker's crème brûlée
was famous along the coast. Travellers from far away said "naïve" and "déjà vu" and
laughed. Some wrote postcards in Japanese: 日本語のはがき, or in Greek: καλημέρα.
Hello, world! said the child who ran along the pier. Hello, lighthouse! Hello, sea!
"""

PROMPTS = [
    "Hello, world! The lighthouse",
    "The café served crème",
    "Ships passed in the night, their sailors grateful for the",
]
NEW_TOKENS = 12
VOCAB = 320
BOS = "<s>"


def train_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=True)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB - 1,
        min_frequency=2,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([TEXT] * 3, trainer)
    tok.add_special_tokens([BOS])
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    return tok


def with_bos(tok):
    """A copy that puts <s> before every input, as Llama's tokenizers do."""
    t = Tokenizer.from_str(tok.to_str())
    bos = t.token_to_id(BOS)
    t.post_processor = processors.Sequence([
        processors.ByteLevel(trim_offsets=True),
        processors.TemplateProcessing(single=f"{BOS} $A", pair=f"{BOS} $A {BOS} $B", special_tokens=[(BOS, bos)]),
    ])
    return t


def spread_weights(model, seed):
    """Redraws every parameter: norms' gains near 1, biases small, matrices with std
    1/sqrt(fan_in), embeddings with std 1, so that logits differ by several units."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() == 1 and ("norm" in name or "ln_" in name):
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "wte" in name or "wpe" in name or "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                # GPT-2's Conv1D stores (in, out); nn.Linear (out, in).
                fan_in = p.shape[0] if "transformer.h." in name else p.shape[1]
                p.copy_(torch.randn(p.shape, generator=g) / fan_in**0.5)


def reference(model, tok, folder):
    model.eval()
    ids = [tok.encode(p).ids for p in PROMPTS]
    tensors, meta = {}, {"prompts": PROMPTS, "input_ids": ids, "greedy": []}
    with torch.no_grad():
        for i, x in enumerate(ids):
            t = torch.tensor([x])
            tensors[f"logits.{i}"] = model(t).logits[0].float().contiguous()
            out = model.generate(
                t, attention_mask=torch.ones_like(t), do_sample=False, max_new_tokens=NEW_TOKENS,
                min_new_tokens=NEW_TOKENS, pad_token_id=0, eos_token_id=None,
            )
            meta["greedy"].append(out[0, len(x):].tolist())
        # The left-padded batch, positions from the mask as generate() computes them.
        T = max(len(x) for x in ids)
        batch = torch.tensor([[0] * (T - len(x)) + x for x in ids])
        mask = torch.tensor([[0] * (T - len(x)) + [1] * len(x) for x in ids])
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        tensors["batch.input_ids"] = batch
        tensors["batch.attention_mask"] = mask
        tensors["batch.logits"] = model(batch, attention_mask=mask, position_ids=pos).logits.float().contiguous()
    save_file(tensors, str(folder / "reference.safetensors"))
    (folder / "reference.json").write_text(json.dumps(meta, indent=1) + "\n")


def save_model(model, tok, folder):
    if folder.exists():
        shutil.rmtree(folder)
    model.save_pretrained(folder)
    for extra in ["generation_config.json"]:
        (folder / extra).unlink(missing_ok=True)
    tok.save(str(folder / "tokenizer.json"))


def gpt2(tok):
    cfg = GPT2Config(
        vocab_size=VOCAB, n_positions=64, n_embd=32, n_layer=2, n_head=4,
        bos_token_id=0, eos_token_id=0, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )
    torch.manual_seed(0)
    model = GPT2LMHeadModel(cfg)
    spread_weights(model, 1)
    save_model(model, tok, OUT / "gpt2")
    reference(model, tok, OUT / "gpt2")

    # The same weights as the bare transformer, with the causal-mask buffers old files carry.
    bare = OUT / "gpt2-bare"
    shutil.copytree(OUT / "gpt2", bare, dirs_exist_ok=True)
    sd = {k: v.contiguous() for k, v in model.transformer.state_dict().items()}
    n = cfg.n_positions
    for i in range(cfg.n_layer):
        sd[f"h.{i}.attn.bias"] = torch.tril(torch.ones(n, n, dtype=torch.uint8)).view(1, 1, n, n)
        sd[f"h.{i}.attn.masked_bias"] = torch.tensor(-1e4)
    save_file(sd, str(bare / "model.safetensors"), metadata={"format": "pt"})


def llama(tok):
    bos = tok.token_to_id(BOS)
    common = dict(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                  max_position_embeddings=128, bos_token_id=bos, eos_token_id=0)

    # GQA + llama3 RoPE scaling (original context 16, so the short, medium and long wavelengths
    # of head_dim 8 each take their branch), untied head.
    cfg = LlamaConfig(**common, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                      rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 16},
                      rope_theta=10000.0)
    torch.manual_seed(0)
    m = LlamaForCausalLM(cfg)
    spread_weights(m, 2)
    folder = OUT / "llama-gqa"
    save_model(m, tok, folder)
    # Rewrite config.json as transformers 4 wrote it, the layout of released Llama 3 files,
    # and check that transformers reads it back to the same model.
    c = json.loads((folder / "config.json").read_text())
    rp = c.pop("rope_parameters")
    c["rope_theta"] = rp.pop("rope_theta")
    c["rope_scaling"] = rp
    (folder / "config.json").write_text(json.dumps(c, indent=2) + "\n")
    again = LlamaForCausalLM.from_pretrained(folder)
    x = torch.tensor([tok.encode(PROMPTS[2]).ids])
    with torch.no_grad():
        assert torch.equal(again(x).logits, m(x).logits), "v4-style config changes the model"
    reference(m, tok, folder)

    # attention_bias + mlp_bias, linear RoPE scaling, tied head, no GQA.
    cfg = LlamaConfig(**common, num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True,
                      attention_bias=True, mlp_bias=True,
                      rope_scaling={"rope_type": "linear", "factor": 2.0}, rope_theta=500.0)
    torch.manual_seed(0)
    m = LlamaForCausalLM(cfg)
    spread_weights(m, 3)
    save_model(m, tok, OUT / "llama-tied")
    reference(m, tok, OUT / "llama-tied")

    cfg = Qwen2Config(**common, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True,
                      rope_theta=10000.0)
    torch.manual_seed(0)
    m = Qwen2ForCausalLM(cfg)
    spread_weights(m, 4)
    save_model(m, tok, OUT / "qwen2")
    reference(m, tok, OUT / "qwen2")

    cfg = MistralConfig(**common, num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False,
                        sliding_window=4, rope_theta=10000.0)
    torch.manual_seed(0)
    m = MistralForCausalLM(cfg)
    spread_weights(m, 5)
    save_model(m, tok, OUT / "mistral")
    reference(m, tok, OUT / "mistral")


# Chat templates as the models ship them in tokenizer_config.json (raw strings: the `\n` inside
# Jinja string literals is Jinja's escape, not Python's).
CHAT_TEMPLATES = {
    "chatml-qwen2": r"""{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}""",
    "llama-3": r"""{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}""",
    "zephyr": """{% for message in messages %}
{% if message['role'] == 'user' %}
{{ '<|user|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'system' %}
{{ '<|system|>
' + message['content'] + eos_token }}
{% elif message['role'] == 'assistant' %}
{{ '<|assistant|>
'  + message['content'] + eos_token }}
{% endif %}
{% if loop.last and add_generation_prompt %}
{{ '<|assistant|>' }}
{% endif %}
{% endfor %}""",
    "llama-2": r"""{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\n' + system_message + '\n<</SYS>>\n\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}""",
}
SPECIAL = {"bos_token": "<s>", "eos_token": "</s>"}
CONVERSATIONS = [
    [{"role": "user", "content": "Hello, lighthouse!"}],
    [
        {"role": "system", "content": "You answer like a sailor."},
        {"role": "user", "content": "  Where is the café? "},
        {"role": "assistant", "content": "By the harbour.\n"},
        {"role": "user", "content": "And the crème brûlée?"},
    ],
    # Two user turns in a row: Llama-2's template raises.
    [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}],
]
# Short, so that three turns fit the fixtures' context; the BOS token comes from the config.
FIXTURE_TEMPLATE = ("{{ bos_token }}{% for message in messages %}{{ '<|' + message['role'] + '|>' + "
                    "message['content'] }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>' }}{% endif %}")
CHAT_TURNS = ["Hello, world!", "The café", "Ships passed"]
CHAT_NEW_TOKENS = 8


def chat_templates(tok):
    """Renders each template with transformers' apply_chat_template."""
    out = []
    for name, template in CHAT_TEMPLATES.items():
        t = PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(tok.to_str()), **SPECIAL)
        t.chat_template = template
        cases = []
        for msgs in CONVERSATIONS:
            for gen in (False, True):
                case = {"messages": msgs, "add_generation_prompt": gen}
                try:
                    case["rendered"] = t.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen)
                except Exception as e:  # the template's raise_exception
                    case["error"] = str(e)
                cases.append(case)
        out.append({"name": name, "template": template, **SPECIAL, "cases": cases})
    (OUT / "chat_templates.json").write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n")


def chat_model():
    """Gives the llama-gqa fixture a chat template and records a greedy conversation."""
    folder = OUT / "llama-gqa"
    cfg = {"tokenizer_class": "PreTrainedTokenizerFast", "bos_token": BOS, "eos_token": "<|endoftext|>",
           "chat_template": FIXTURE_TEMPLATE}
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2) + "\n")
    tok = AutoTokenizer.from_pretrained(folder)
    model = LlamaForCausalLM.from_pretrained(folder).eval()
    history, replies = [], []
    for turn in CHAT_TURNS:
        history.append({"role": "user", "content": turn})
        text = tok.apply_chat_template(history, tokenize=False, add_generation_prompt=True)
        ids = torch.tensor([tok(text, add_special_tokens=False).input_ids])
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False,
                                 max_new_tokens=CHAT_NEW_TOKENS, pad_token_id=0, eos_token_id=0)
        reply = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        replies.append(reply)
        history.append({"role": "assistant", "content": reply})
    ref = {"turns": CHAT_TURNS, "max_new_tokens": CHAT_NEW_TOKENS, "replies": replies}
    (folder / "chat_reference.json").write_text(json.dumps(ref, indent=1, ensure_ascii=False) + "\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["chat"], help="remake only these fixtures")
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer()
    if args.only is None:
        tok.save(str(OUT / "tokenizer.json"))
        gpt2(tok)
        llama(with_bos(tok))
    chat_templates(tok)
    chat_model()
    total = sum(p.stat().st_size for p in OUT.rglob("*") if p.is_file())
    print(f"wrote {OUT} ({total / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
