#!/usr/bin/env python3
"""Reference CPU benchmark for `vkfinetune train --objective classification`: the same full
fine-tuning of a BERT classifier in PyTorch + transformers (BertForSequenceClassification,
AdamW lr 5e-5 / weight decay 0.01 / clip 1.0, linear schedule, batches padded to their longest
sentence, max_length 128, dropout set to 0 as vkfinetune trains), over the first
--steps × --batch sentences of a {"text", "label"} JSONL file in file order.

Prints one JSON document: the training loop's wall seconds (tokenisation excluded), steps,
sentences/s, tokens/s (padded tokens, as vkfinetune counts them), peak RSS and
foreign_cpu_frac (share of the machine's CPU used by other processes; keep it < ~0.05).

  $VKF_REF_VENV/bin/python tools/bench_bert_classifier.py --model models/all-MiniLM-L6-v2 \\
      --data data/sentiment/train.jsonl --steps 60 --batch 32 --threads 2
  head -1920 data/sentiment/train.jsonl > /tmp/b1920.jsonl
  vkfinetune train --cpu --objective classification --method full --model models/all-MiniLM-L6-v2 \\
      --data /tmp/b1920.jsonl --output /tmp/bench-cls --batch-size 32 --max-steps 60 \\
      --learning-rate 5e-5 --weight-decay 0.01 --max-seq-length 128 --overwrite
  (its metrics.jsonl's last elapsed_s and tokens_per_second are the loop's)
"""
import argparse
import json
import os
import resource
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_cpu import busy_cpu_s, own_cpu_s, reexec_with_tuned_malloc  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def main():
    reexec_with_tuned_malloc()  # see tools/bench_cpu.py
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    import torch
    from transformers import AutoTokenizer, BertForSequenceClassification, get_linear_schedule_with_warmup
    torch.set_num_threads(a.threads)
    torch.manual_seed(42)
    tok = AutoTokenizer.from_pretrained(a.model)
    model = BertForSequenceClassification.from_pretrained(
        a.model, num_labels=2, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0).train()
    records = [json.loads(l) for l in open(a.data, encoding="utf-8") if l.strip()][: a.steps * a.batch]
    batches = []
    for i in range(0, len(records), a.batch):
        chunk = records[i:i + a.batch]
        enc = tok([r["text"] for r in chunk], truncation=True, max_length=128, padding=True, return_tensors="pt")
        batches.append((enc, torch.tensor([int(r["label"]) for r in chunk])))
    decay = [p for n, p in model.named_parameters() if not (n.endswith("bias") or "LayerNorm" in n)]
    rest = [p for n, p in model.named_parameters() if n.endswith("bias") or "LayerNorm" in n]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.01}, {"params": rest, "weight_decay": 0.0}], lr=5e-5)
    sched = get_linear_schedule_with_warmup(opt, 0, len(batches))
    busy0, own0, t0 = busy_cpu_s(), own_cpu_s(), time.perf_counter()
    tokens = 0
    for enc, y in batches:
        loss = model(**enc, labels=y).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); sched.step(); opt.zero_grad(set_to_none=True)
        tokens += enc["input_ids"].numel()
    wall = time.perf_counter() - t0
    foreign = max(0.0, (busy_cpu_s() - busy0) - (own_cpu_s() - own0))
    print(json.dumps({
        "steps": len(batches), "wall_s": round(wall, 2), "sentences_per_s": round(len(records) / wall, 2),
        "tokens_per_s": round(tokens / wall, 1), "final_loss": round(loss.item(), 4),
        "peak_rss_gb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6, 2),
        "foreign_cpu_frac": round(foreign / (wall * os.cpu_count()), 3),
        "torch": torch.__version__}))


if __name__ == "__main__":
    main()
