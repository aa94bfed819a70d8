#!/usr/bin/env python3
"""Reference CPU benchmark for `vkfinetune bench train --objective dpo`: TRL's DPOTrainer steps
on SmolLM2-135M-Instruct (fp32), LoRA r=16 alpha=32 dropout 0 on the 7 projections (as
../shared/tools/bench_lora.py), reference = the same model with the adapter disabled
(precompute_ref_log_probs False, TRL's default with PEFT), sigmoid loss, beta 0.1.

Shapes match ours: --batch pairs per step, every sequence exactly --seq tokens (a
--prompt-length prompt shared by chosen and rejected, answers of seq − prompt tokens), seeded
random token ids handed to the trainer already tokenized (its text pipeline is bypassed, so
no tokenisation cost and no length drift), one optimizer step per batch (no accumulation).
Each step = reference forward (no grad) + policy forward of chosen and rejected together +
backward + AdamW, as ours.

Prints one JSON document: steady-state s/step (steps after --warmup), pairs/s, tokens/s
(2 · batch · seq per step), peak RSS, foreign_cpu_frac (share of the machine's CPU used by
other processes during the timed steps; keep it < ~0.05 for a fair comparison).

  $VKF_REF_VENV/bin/python tools/bench_dpo_trl.py --batch 2 --seq 256 --steps 8 --threads 2
  vkfinetune bench train --cpu --objective dpo --model ../shared/models/smollm2-135m-instruct \\
    --batch 2 --seq 256 --lora-r 16 --steps 8

With --data FILE (hh-rlhf transcripts, one {"chosen", "rejected"} per line) it instead runs
one epoch of `vkfinetune train --objective dpo`'s defaults on real text: LoRA r8 alpha16
dropout 0 on the 7 projections, 4 pairs per step, lr 2e-4 linear, no warm-up, max_length
2048, seed 42, the model's chat template over the transcript's turns (prompt = the shared
prefix up to the last "\n\nAssistant:", as vkfinetune splits it). Reports the training
loop's wall seconds (tokenisation excluded, as vkfinetune's progress lines do), steps and
peak RSS:

  $VKF_REF_VENV/bin/python tools/bench_dpo_trl.py --data /tmp/hh160.jsonl --threads 2
  vkfinetune train --cpu --objective dpo --model ../shared/models/smollm2-135m-instruct \\
    --data /tmp/hh160.jsonl --output /tmp/dpo160
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
os.environ.setdefault("WANDB_DISABLED", "true")

DEFAULT_MODEL = os.environ.get("VKF_REF_MODEL", "/root/.cache/vkf-ref/smollm2-135m-instruct-f32")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


def main():
    reexec_with_tuned_malloc()  # see tools/bench_cpu.py
    ap = argparse.ArgumentParser()
    ap.add_argument("--malloc-default", action="store_true", help="plain glibc malloc (for comparison)")
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--batch", type=int, default=2, help="pairs per step")
    ap.add_argument("--seq", type=int, default=256, help="tokens per sequence (prompt + answer)")
    ap.add_argument("--prompt-length", type=int, default=None, help="default seq / 2")
    ap.add_argument("--steps", type=int, default=8, help="timed steps")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lora-r", type=int, default=16)
    ap.add_argument("--out", default=None)
    ap.add_argument("--data", default=None, help="hh-rlhf jsonl: one epoch with vkfinetune's DPO defaults")
    a = ap.parse_args()
    if a.data:
        return run_data(a)
    prompt = a.prompt_length if a.prompt_length is not None else a.seq // 2
    if not 1 <= prompt < a.seq:
        sys.exit("--prompt-length must be in [1, seq)")

    import torch
    torch.set_num_threads(a.threads)
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    g = torch.Generator().manual_seed(0x5EED)
    n = a.batch * (a.warmup + a.steps)
    vocab = model.config.vocab_size
    rand = lambda k: torch.randint(3, vocab, (k,), generator=g).tolist()  # noqa: E731 (no special ids)
    rows = [{"prompt": "", "chosen": "", "rejected": "", "prompt_ids": rand(prompt),
             "chosen_ids": rand(a.seq - prompt), "rejected_ids": rand(a.seq - prompt)} for _ in range(n)]
    data = Dataset.from_list(rows)

    class PreTokenized(DPOTrainer):
        """The rows already hold prompt_ids / chosen_ids / rejected_ids of the exact lengths."""
        def _prepare_dataset(self, dataset, processing_class, args, dataset_name):
            return dataset

    times = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t0 = time.perf_counter()
            if state.global_step == a.warmup:
                self.busy0, self.own0 = busy_cpu_s(), own_cpu_s()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t0)
            if state.global_step == a.warmup + a.steps:
                self.busy1, self.own1 = busy_cpu_s(), own_cpu_s()

    timer = Timer()
    config = DPOConfig(
        output_dir="/tmp/bench_dpo_trl", per_device_train_batch_size=a.batch, gradient_accumulation_steps=1,
        max_steps=a.warmup + a.steps, learning_rate=1e-5, lr_scheduler_type="constant", logging_steps=10**6,
        save_strategy="no", report_to="none", use_cpu=True, bf16=False, fp16=False, max_length=a.seq,
        beta=0.1, loss_type="sigmoid", precompute_ref_log_probs=False, dataloader_num_workers=0,
        remove_unused_columns=False, seed=0, max_grad_norm=1.0,
        # TRL 1.x turns gradient checkpointing on by default; ours is off unless asked for.
        gradient_checkpointing=False)
    peft_config = LoraConfig(r=a.lora_r, lora_alpha=2 * a.lora_r, lora_dropout=0.0, target_modules=TARGETS,
                             task_type="CAUSAL_LM")
    trainer = PreTokenized(model=model, args=config, train_dataset=data, processing_class=tok,
                           peft_config=peft_config, callbacks=[timer])
    trainer.train()
    steady = times[a.warmup:]
    per_step = sum(steady) / len(steady)
    wall = sum(steady)
    foreign = max(0.0, (timer.busy1 - timer.busy0) - (timer.own1 - timer.own0)) / (wall * os.cpu_count())
    result = {
        "tool": "trl DPOTrainer", "trl": trl.__version__, "torch": torch.__version__, "threads": a.threads,
        "model": a.model, "method": f"lora r{a.lora_r} alpha{2 * a.lora_r} all-linear", "batch_pairs": a.batch,
        "seq": a.seq, "prompt_length": prompt, "timed_steps": len(steady), "seconds_per_step": per_step,
        "median_seconds_per_step": sorted(steady)[len(steady) // 2], "pairs_per_second": a.batch / per_step,
        "tokens_per_second": 2 * a.batch * a.seq / per_step,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "foreign_cpu_frac": foreign,
    }
    result["malloc"] = "default" if a.malloc_default else "tuned"
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


def transcript_turns(text):
    """'\n\nHuman: a\n\nAssistant: b' → [{"role": "user", "content": "a"}, …] (vkfinetune's split)."""
    import re
    parts = re.split(r"(\n\nHuman:|\n\nAssistant:)", text)
    turns = []
    for marker, content in zip(parts[1::2], parts[2::2]):
        role = "user" if marker == "\n\nHuman:" else "assistant"
        turns.append({"role": role, "content": content[1:] if content.startswith(" ") else content})
    return turns


def hh_record(line):
    """prompt messages + chosen / rejected assistant answers, as vkfinetune's transcriptPair."""
    r = json.loads(line)
    c, j = r["chosen"], r["rejected"]
    common = 0
    while common < min(len(c), len(j)) and c[common] == j[common]:
        common += 1
    marker = "\n\nAssistant:"
    cut = c[:common].rfind(marker)
    prompt = transcript_turns(c[:cut])

    def answer(s):
        s = s[cut + len(marker):]
        return s[1:] if s.startswith(" ") else s
    return {"prompt": prompt, "chosen": [{"role": "assistant", "content": answer(c)}],
            "rejected": [{"role": "assistant", "content": answer(j)}]}


def run_data(a):
    import torch
    torch.set_num_threads(a.threads)
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import DPOConfig, DPOTrainer

    with open(a.data) as f:
        rows = [hh_record(line) for line in f if line.strip()]
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    marks = {}

    class Clock(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            marks["begin"] = time.perf_counter()

        def on_train_end(self, args, state, control, **kw):
            marks["end"] = time.perf_counter()
            marks["steps"] = state.global_step

    config = DPOConfig(
        output_dir="/tmp/bench_dpo_trl_data", per_device_train_batch_size=4, gradient_accumulation_steps=1,
        num_train_epochs=1, learning_rate=2e-4, lr_scheduler_type="linear", warmup_steps=0, weight_decay=0.0,
        logging_steps=10**6, save_strategy="no", report_to="none", use_cpu=True, bf16=False, fp16=False,
        max_length=2048, beta=0.1, loss_type="sigmoid", precompute_ref_log_probs=False,
        dataloader_num_workers=0, seed=42, max_grad_norm=1.0, gradient_checkpointing=False)
    peft_config = LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
    trainer = DPOTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows), processing_class=tok,
                         peft_config=peft_config, callbacks=[Clock()])
    trainer.train()
    wall = marks["end"] - marks["begin"]
    result = {
        "tool": "trl DPOTrainer", "trl": trl.__version__, "torch": torch.__version__, "threads": a.threads,
        "data": a.data, "pairs": len(rows), "steps": marks["steps"], "train_seconds": wall,
        "seconds_per_step": wall / max(marks["steps"], 1),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    text = json.dumps(result, indent=2)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
