#!/usr/bin/env python3
"""One-digit arithmetic prompts for GRPO with a verifiable answer (examples/grpo-arithmetic.yaml).

Every "a + b" and "a - b" with a, b in 0..9 (200 problems), shuffled with a fixed seed: the
first 160 for training, the other 40 held out. Each record is a conversational prompt (TRL's
format, rendered through the model's chat template) plus the answer, which the recipe's
numeric_match / exact_match reward functions read from the "answer" column:

    {"prompt": [{"role": "user", "content": "What is 3 + 4? Answer with the number only."}], "answer": "7"}

Usage: python3 tools/make_arithmetic_data.py [OUT_DIR]   (default data/arithmetic; no dependencies)
"""
import json
import os
import random
import sys


def record(a, b, op):
    question = f"What is {a} {op} {b}? Answer with the number only."
    return {"prompt": [{"role": "user", "content": question}], "answer": str(a + b if op == "+" else a - b)}


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join("data", "arithmetic")
    os.makedirs(out, exist_ok=True)
    problems = [(a, b, op) for a in range(10) for b in range(10) for op in "+-"]
    random.Random(7).shuffle(problems)
    for name, part in (("train.jsonl", problems[:160]), ("held_out.jsonl", problems[160:])):
        with open(os.path.join(out, name), "w") as f:
            for a, b, op in part:
                f.write(json.dumps(record(a, b, op)) + "\n")
        print(f"wrote {len(part)} prompts to {os.path.join(out, name)}")


if __name__ == "__main__":
    main()
