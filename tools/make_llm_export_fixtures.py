#!/usr/bin/env python3
"""Fixtures showing that the model folders `zoo llm train` writes load in transformers.

    cargo build --release -p zoo-cli
    .venv/bin/python tools/make_llm_export_fixtures.py

For each of the presets tiny-gpt2 and tiny-llama, runs `target/release/zoo llm train` for 30
steps on the demo's nursery rhymes (crates/zoo-llm/assets/rhymes.txt, char tokenizer) and keeps
its `final/` folder as tests/fixtures/llm/zoo-export-<preset>/ (config.json, model.safetensors,
tokenizer.json). Then transformers loads each folder as it is (AutoModelForCausalLM and
PreTrainedTokenizerFast, no conversion) and records, in reference.safetensors, the ids its
tokenizer gives TEXT and the logits its model gives them. tests/tests/llm_train.rs loads the
same folders with zoo and checks ids and logits against these.
"""
import json
import shutil
import subprocess
import tempfile
from pathlib import Path

import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

ROOT = Path(__file__).resolve().parent.parent
ZOO = ROOT / "target" / "release" / "zoo"
OUT = ROOT / "tests" / "fixtures" / "llm"
RHYMES = ROOT / "crates" / "zoo-llm" / "assets" / "rhymes.txt"
TEXT = "Twinkle, twinkle, little star,\nHow I wonder"


def main():
    for preset in ["tiny-gpt2", "tiny-llama"]:
        folder = OUT / f"zoo-export-{preset}"
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run(
                [str(ZOO), "-q", "--threads", "1", "llm", "train", "--data", str(RHYMES), "--model", preset,
                 "--out", f"{tmp}/run", "--steps", "30", "--block-size", "32", "--lr", "3e-3",
                 "--warmup-steps", "5", "--eval-every", "0", "--sample-chars", "0"],
                check=True, stdout=subprocess.DEVNULL)
            if folder.exists():
                shutil.rmtree(folder)
            shutil.copytree(f"{tmp}/run/final", folder)
        tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"))
        model = AutoModelForCausalLM.from_pretrained(folder).eval()
        ids = tok(TEXT, return_tensors="pt").input_ids
        assert tok.decode(ids[0]) == TEXT, "the char tokenizer must round-trip"
        with torch.no_grad():
            logits = model(ids).logits
        save_file({"input_ids": ids.contiguous(), "logits": logits.contiguous()},
                  str(folder / "reference.safetensors"))
        (folder / "reference.json").write_text(json.dumps({"text": TEXT, "class": type(model).__name__}) + "\n")
        print(f"{folder.relative_to(ROOT)}: {type(model).__name__}, {sum(p.numel() for p in model.parameters())} parameters")


if __name__ == "__main__":
    main()
