#!/usr/bin/env python3
"""Checks that transformers / PEFT load vkfinetune's reward models unmodified and give our scores.

    vkfinetune score --cpu --model BASE --adapter ADAPTER --data pairs.jsonl --json ours.json --include-ids
    $VKF_REF_VENV/bin/python tools/check_reward_model.py --scores ours.json --adapter ADAPTER --base BASE_HF_F32
    vkfinetune score --cpu --model MERGED --data pairs.jsonl --json ours.json --include-ids
    $VKF_REF_VENV/bin/python tools/check_reward_model.py --scores ours.json --model MERGED

--adapter: AutoModelForSequenceClassification.from_pretrained(BASE, num_labels=1) then
PeftModel.from_pretrained(base, ADAPTER) (peft's SEQ_CLS path: LoRA + the `score` head from
modules_to_save). --model: AutoModelForSequenceClassification.from_pretrained(MERGED) as is.
The token ids come from our --json (--include-ids), so only the model is compared. The
sequences are scored in one right-padded batch with the config's pad_token_id, so
transformers' "last non-pad token" pooling is exercised too. Prints the largest difference
and exits 1 when it exceeds --tolerance.
"""
import argparse
import json
import sys

import torch
from transformers import AutoModelForSequenceClassification


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--scores", required=True, help="vkfinetune score --json output (with --include-ids)")
    ap.add_argument("--adapter", help="reward adapter directory (needs --base)")
    ap.add_argument("--base", help="HF f32 base model directory for --adapter")
    ap.add_argument("--model", help="merged reward model directory")
    # f32 on both sides; 30 layers of different summation orders (OpenBLAS vs MKL) move a
    # score of magnitude ~1 by ~1e-5, so 1e-3 separates rounding from a wrong head or position.
    ap.add_argument("--tolerance", type=float, default=1e-3)
    args = ap.parse_args()
    ours = json.load(open(args.scores))
    torch.manual_seed(0)
    if args.adapter:
        if not args.base:
            sys.exit("--adapter needs --base")
        from peft import PeftModel
        base = AutoModelForSequenceClassification.from_pretrained(args.base, num_labels=1, dtype=torch.float32)
        model = PeftModel.from_pretrained(base, args.adapter)
        pad = base.config.pad_token_id
    elif args.model:
        model = AutoModelForSequenceClassification.from_pretrained(args.model, dtype=torch.float32)
        pad = model.config.pad_token_id
        arch = model.config.architectures
        print(f"loaded {type(model).__name__} (architectures {arch}, num_labels {model.config.num_labels}, pad {pad})")
    else:
        sys.exit("pass --adapter (with --base) or --model")
    if pad != ours["pad_token_id"]:
        sys.exit(f"pad_token_id differs: transformers {pad}, vkfinetune {ours['pad_token_id']}")
    model.eval()
    seqs, expected = [], []
    for p in ours["rewards"]:
        if p.get("chosen_ids") is None:
            sys.exit("the scores file has no token ids; run vkfinetune score with --include-ids")
        seqs += [p["chosen_ids"], p["rejected_ids"]]
        expected += [p["chosen"], p["rejected"]]
    width = max(len(s) for s in seqs)
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    with torch.no_grad():
        got = model(input_ids=ids, attention_mask=mask).logits[:, 0].tolist()
    diff = max(abs(a - b) for a, b in zip(got, expected))
    agree = sum((got[i] > got[i + 1]) == (expected[i] > expected[i + 1]) for i in range(0, len(got), 2))
    print(f"{len(seqs)} sequences: max |transformers − vkfinetune| = {diff:.3g} "
          f"(tolerance {args.tolerance}); pair preferences agree on {agree}/{len(got) // 2}")
    for i in range(min(4, len(got))):
        print(f"  seq {i}: transformers {got[i]:+.5f}  vkfinetune {expected[i]:+.5f}")
    sys.exit(0 if diff <= args.tolerance else 1)


if __name__ == "__main__":
    main()
