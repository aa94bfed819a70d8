#!/usr/bin/env python3
"""Pairs of two policies' answers to the same prompts, for `vkfinetune score`: each line of
`after.jsonl` and `before.jsonl` (outputs of `vkfinetune generate --prompts … --output …`, same
prompts file, same --num-return-sequences, so line i of both answers the same prompt) becomes
{"prompt": <its prompt>, "chosen": <after's completion>, "rejected": <before's completion>}.
`vkfinetune score --adapter <reward model> --data pairs.jsonl` then reports the reward model's
mean score of each side and the share of prompts where the trained policy's answer scores
higher (its "accuracy"). Used for the PPO example's before/after numbers in the README.

  python3 tools/make_policy_pairs.py after.jsonl before.jsonl pairs.jsonl
"""
import json
import sys


def main():
    if len(sys.argv) != 4:
        raise SystemExit(__doc__)
    after_path, before_path, out_path = sys.argv[1:]
    with open(after_path, encoding="utf-8") as f:
        after = [json.loads(line) for line in f if line.strip()]
    with open(before_path, encoding="utf-8") as f:
        before = [json.loads(line) for line in f if line.strip()]
    if len(after) != len(before):
        raise SystemExit(f"{after_path} has {len(after)} answers, {before_path} {len(before)}: use the same prompts")
    with open(out_path, "w", encoding="utf-8") as f:
        for i, (a, b) in enumerate(zip(after, before)):
            if a["prompt"] != b["prompt"]:
                raise SystemExit(f"line {i + 1}: the two files answer different prompts")
            f.write(json.dumps({"prompt": a["prompt"], "chosen": a["completion"], "rejected": b["completion"]}) + "\n")
    print(f"{out_path}: {len(after)} pairs (chosen = {after_path}, rejected = {before_path})")


if __name__ == "__main__":
    main()
