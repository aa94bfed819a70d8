#!/usr/bin/env python3
"""CI fixture for reward-model (SEQ_CLS) adapters: peft writes one, transformers scores with it.

Writes Tests/VKFPEFTTests/Fixtures/reward/:
  adapter/                 peft 0.21.2 `save_pretrained` of a LoRA SEQ_CLS adapter (r 4, alpha 8,
                           all-linear, seeded random A/B and score head) on the tiny base of
                           Tests/VKFPEFTTests/Fixtures/peftio/base (untied, hidden 32, vocab 61)
  expected.safetensors     ids I32 (B, T): right-padded rows with pad id PAD;
                           scores F32 (B): transformers' LlamaForSequenceClassification logits
                           (PeftModel over the base, pad_token_id = PAD, last non-pad token)
  README.md                versions

The Swift test (RewardAdapterInteropTests) loads the adapter with PEFTAdapterFiles.loadAdapter
and must reproduce `scores`. Run with the reference venv:
  $VKF_REF_VENV/bin/python tools/make_reward_fixtures.py
"""
import os

import peft
import torch
import transformers
from peft import LoraConfig, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForSequenceClassification

HERE = os.path.dirname(os.path.abspath(__file__))
BASE = os.path.join(HERE, "..", "Tests", "VKFPEFTTests", "Fixtures", "peftio", "base")
OUT = os.path.join(HERE, "..", "Tests", "VKFPEFTTests", "Fixtures", "reward")
PAD = 0  # not 2 (the base's eos): rows end with eos, so the head must read the eos position
ROWS = [[1, 17, 5, 42, 9, 33, 60, 2], [1, 8, 3, 2], [1, 50, 2, 44, 12, 2]]


def main():
    torch.manual_seed(1234)
    base = AutoModelForSequenceClassification.from_pretrained(BASE, num_labels=1, pad_token_id=PAD,
                                                              dtype=torch.float32)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", task_type="SEQ_CLS")
    model = get_peft_model(base, cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_" in name or "modules_to_save" in name:
                p.copy_(torch.randn_like(p) * 0.2)
    model.eval()
    os.makedirs(OUT, exist_ok=True)
    model.save_pretrained(os.path.join(OUT, "adapter"))
    width = max(len(r) for r in ROWS)
    ids = torch.tensor([r + [PAD] * (width - len(r)) for r in ROWS], dtype=torch.int32)
    mask = (ids != PAD).long()
    with torch.no_grad():
        scores = model(input_ids=ids.long(), attention_mask=mask).logits[:, 0].float()
    save_file({"ids": ids.contiguous(), "scores": scores.contiguous(),
               "pad": torch.tensor([PAD], dtype=torch.int32)}, os.path.join(OUT, "expected.safetensors"))
    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write(f"Made by tools/make_reward_fixtures.py (peft {peft.__version__}, transformers "
                f"{transformers.__version__}, torch {torch.__version__}). Do not edit by hand.\n")
    print("scores", scores.tolist())


if __name__ == "__main__":
    main()
