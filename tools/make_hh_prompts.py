#!/usr/bin/env python3
"""Prompts for the PPO example (examples/ppo-hh-rlhf.yaml) from the shared hh-rlhf pairs: the
first Human turn of each single-turn transcript ({"prompt": [{"role": "user", ...}]} records,
which `train --objective ppo` renders through the model's chat template, as the reward model
saw its pairs). Short prompts only (≤ MAX_CHARS), de-duplicated, in file order; the held-out
prompts come from the end of the file and never repeat a training prompt.

  python3 tools/make_hh_prompts.py data/hh-prompts [--train 128] [--held-out 32]
writes <dir>/train.jsonl and <dir>/held_out.jsonl.
"""
import argparse
import json
import os

HERE = os.path.dirname(os.path.abspath(__file__))
PAIRS = os.path.join(HERE, "..", "..", "shared", "data", "hh-rlhf", "harmless_pairs.jsonl")
MAX_CHARS = 160


def first_turns(path):
    """The Human turn of every transcript with exactly one, in file order, de-duplicated."""
    seen, out = set(), []
    with open(path, encoding="utf-8") as f:
        for line in f:
            chosen = json.loads(line)["chosen"]
            if chosen.count("\n\nHuman:") != 1 or chosen.count("\n\nAssistant:") != 1:
                continue
            text = chosen.split("\n\nHuman:", 1)[1].split("\n\nAssistant:", 1)[0].strip()
            if not text or len(text) > MAX_CHARS or text in seen:
                continue
            seen.add(text)
            out.append(text)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out_dir")
    ap.add_argument("--pairs", default=PAIRS)
    ap.add_argument("--train", type=int, default=128)
    ap.add_argument("--held-out", type=int, default=32)
    a = ap.parse_args()
    prompts = first_turns(a.pairs)
    if len(prompts) < a.train + a.held_out:
        raise SystemExit(f"{a.pairs}: only {len(prompts)} single-turn prompts; ask for fewer")
    os.makedirs(a.out_dir, exist_ok=True)
    for name, rows in (("train.jsonl", prompts[:a.train]), ("held_out.jsonl", prompts[-a.held_out:])):
        with open(os.path.join(a.out_dir, name), "w", encoding="utf-8") as f:
            for text in rows:
                f.write(json.dumps({"prompt": [{"role": "user", "content": text}]}) + "\n")
    print(f"{a.out_dir}: {a.train} training and {a.held_out} held-out prompts of ≤ {MAX_CHARS} characters")


if __name__ == "__main__":
    main()
