#!/usr/bin/env python3
"""Reads a vkfinetune classification output with transformers (a BertForSequenceClassification
directory) or PEFT (a SEQ_CLS adapter over its base model), unmodified, and scores a labelled
file: what `pipeline("text-classification")` / `PeftModel.from_pretrained` users get.

  $VKF_REF_VENV/bin/python tools/check_bert_classifier.py OUTPUT_DIR EVAL.jsonl [--max-length 128]

Prints loss, accuracy and F1 (binary: of label 1; more labels: macro) computed by transformers'
BertForSequenceClassification over the file, and the last evaluation vkfinetune logged in
OUTPUT_DIR/metrics.jsonl, so the two can be compared (equal to rounding when the eval file is
the one the run evaluated on). Exits 1 when they differ by more than 1e-3 in loss or at all in
accuracy.
"""
import argparse
import json
import os
import sys

import torch
from transformers import AutoModelForSequenceClassification, AutoTokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("output")
    ap.add_argument("eval")
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    a = ap.parse_args()
    adapter = os.path.join(a.output, "adapter_config.json")
    if os.path.exists(adapter):
        from peft import PeftModel
        from safetensors import safe_open
        base = json.load(open(adapter))["base_model_name_or_path"]
        with safe_open(os.path.join(a.output, "adapter_model.safetensors"), "pt") as f:
            labels_n = f.get_tensor("base_model.model.classifier.weight").shape[0]
        tok = AutoTokenizer.from_pretrained(base)
        model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=labels_n)
        model = PeftModel.from_pretrained(model, a.output).eval()
        print(f"PEFT adapter over {base}: {labels_n} labels")
    else:
        tok = AutoTokenizer.from_pretrained(a.output)
        model = AutoModelForSequenceClassification.from_pretrained(a.output).eval()
    label2id = model.config.label2id
    records = [json.loads(line) for line in open(a.eval, encoding="utf-8") if line.strip()]
    texts = [r.get("text", r.get("sentence")) for r in records]
    labels = [r["label"] if isinstance(r["label"], int) else label2id[r["label"]] for r in records]
    loss_sum, preds = 0.0, []
    with torch.no_grad():
        for i in range(0, len(texts), a.batch):
            enc = tok(texts[i:i + a.batch], truncation=True, max_length=a.max_length, padding=True, return_tensors="pt")
            y = torch.tensor(labels[i:i + a.batch])
            logits = model(**enc).logits
            loss_sum += torch.nn.functional.cross_entropy(logits, y, reduction="sum").item()
            preds += logits.argmax(-1).tolist()
    n, k = len(labels), model.config.num_labels
    acc = sum(p == t for p, t in zip(preds, labels)) / n

    def f1(c):
        tp = sum(p == c and t == c for p, t in zip(preds, labels))
        denom = sum(p == c for p in preds) + sum(t == c for t in labels)
        return 0.0 if denom == 0 else 2 * tp / denom
    f = f1(1) if k == 2 else sum(f1(c) for c in range(k)) / k
    print(f"transformers: {n} sentences, loss {loss_sum / n:.5f}, accuracy {acc:.4f}, f1 {f:.4f}")
    evals = [json.loads(l) for l in open(f"{a.output}/metrics.jsonl") if '"eval' in l]
    if not evals:
        return 0
    last = evals[-1]
    print("vkfinetune (last evaluation):", json.dumps(last))
    loss = last.get("eval_loss")
    ours_acc = last.get("eval_accuracy", last.get("accuracy"))
    bad = (loss is not None and abs(loss - loss_sum / n) > 1e-3) or (ours_acc is not None and abs(ours_acc - acc) > 1e-9)
    print("agree" if not bad else "DISAGREE")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
