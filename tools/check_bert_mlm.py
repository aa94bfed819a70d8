#!/usr/bin/env python3
"""Reads a vkfinetune `--objective mlm` output with transformers, unmodified, and measures it:

  $VKF_REF_VENV/bin/python tools/check_bert_mlm.py OUTPUT_DIR TEXT.jsonl [--base BASE_DIR]

Loads OUTPUT_DIR as BertForMaskedLM (fails when a weight is missing or unexpected: the head
and the tied decoder must come from the file), then computes the masked-LM loss over the
{"text"} records with transformers' own DataCollatorForLanguageModeling (15 %, 80/10/10,
seeded) — and with --base, the same for the base encoder with transformers' freshly
initialised head, the "before". Prints both and two fill-mask predictions.
"""
import argparse
import json
import sys

import torch
from transformers import AutoTokenizer, BertForMaskedLM, DataCollatorForLanguageModeling


def mlm_loss(model, tok, texts, seed=0, batch=32):
    torch.manual_seed(seed)
    collator = DataCollatorForLanguageModeling(tok, mlm_probability=0.15)
    total, count = 0.0, 0
    with torch.no_grad():
        for i in range(0, len(texts), batch):
            enc = [tok(t, truncation=True, max_length=128) for t in texts[i:i + batch]]
            b = collator(enc)
            logits = model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits
            mask = b["labels"] != -100
            total += torch.nn.functional.cross_entropy(logits[mask], b["labels"][mask], reduction="sum").item()
            count += int(mask.sum())
    return total / count


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("output")
    ap.add_argument("text")
    ap.add_argument("--base")
    a = ap.parse_args()
    tok = AutoTokenizer.from_pretrained(a.output)
    model, info = BertForMaskedLM.from_pretrained(a.output, output_loading_info=True)
    bad = {k: v for k, v in info.items() if v and k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if bad:
        print("loading problems:", bad)
        return 1
    model.eval()
    texts = [json.loads(l)["text"] for l in open(a.text, encoding="utf-8") if l.strip()]
    after = mlm_loss(model, tok, texts)
    print(f"transformers, {len(texts)} texts: masked-LM loss {after:.4f} (perplexity {torch.tensor(after).exp():.1f})")
    if a.base:
        torch.manual_seed(0)
        base = BertForMaskedLM.from_pretrained(a.base).eval()
        before = mlm_loss(base, tok, texts)
        print(f"base encoder with transformers' new head: masked-LM loss {before:.4f} (perplexity {torch.tensor(before).exp():.1f})")
    for s in ["this movie is [MASK] .", "the acting was [MASK] and the story dull ."]:
        enc = tok(s, return_tensors="pt")
        pos = (enc["input_ids"][0] == tok.mask_token_id).nonzero()[0].item()
        with torch.no_grad():
            top = model(**enc).logits[0, pos].topk(5).indices.tolist()
        print(f"{s!r} → {tok.convert_ids_to_tokens(top)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
