#!/usr/bin/env python3
"""Reference CPU benchmark for `vkfinetune train --objective grpo` on examples/grpo-arithmetic.yaml:
TRL's GRPOTrainer with the recipe's settings, timed per optimizer step.

Settings (the recipe's, in TRL GRPOConfig names): SmolLM2-135M-Instruct fp32, LoRA r 16, alpha 32,
dropout 0 (vkfinetune's default lora_dropout, as PEFT's) on q,k,v,o,gate,up,down_proj;
num_generations 8, per_device_train_batch_size 32 completions (generation_batch_size 32 = 4 prompts
x 8 per step), gradient_accumulation_steps 1, max_completion_length 16, temperature 0.7 (top_k 0,
top_p 1, repetition_penalty 1), loss_type dapo, scale_rewards group, beta 0 (no reference model),
epsilon 0.2, num_iterations 1, learning_rate 5e-5 constant, no warm-up, seed 42, fp32, CPU,
no gradient checkpointing (TRL 1.x's GRPOConfig turns it on by default; our run does not
checkpoint), no vLLM, no evaluation, no checkpoints.

Rewards (vkfinetune's built-ins, weights [1, 1]):
  numeric_match : 1 when the last number in the completion (-?\\d[\\d,]*(?:\\.\\d+)?|-?\\.\\d+, commas
                  removed) is within 1e-6 of the record's answer, else 0
  number_only   : exact_match: 1 when completion.strip() == answer.strip(), else 0
The prompts are conversational, so TRL applies the chat template and hands each completion to the
reward functions as [{"role": "assistant", "content": ...}].

Each step = sample 4 prompts x 8 completions (policy generate) + rewards + one forward/backward
of the GRPO loss + AdamW. Step time = the gap between consecutive on_step_end callbacks (the
first from on_train_begin). Prints one JSON line: median / mean s/step over steps 2..N (the
first step, with its warm-up costs, is reported alone), the per-step mean reward (TRL's logged
"reward": the weighted sum of the two rewards, averaged over the step's 32 completions), and
foreign_cpu_frac (share of the machine's CPU used by other processes during the timed steps; keep
it < ~0.05 for a fair comparison).

  python3 tools/make_arithmetic_data.py data/arithmetic
  /root/.cache/vkf-ref/venv/bin/python tools/bench_grpo_trl.py --data data/arithmetic --steps 5 --threads 2
  vkfinetune train --config examples/grpo-arithmetic.yaml --cpu      # (max_steps / eval as wanted)

--model defaults to $VKF_REF_MODEL, else ~/.cache/vkf-ref/smollm2-135m-instruct-f32 (the HF fp32 copy
that ../shared/tools/ref-setup makes).
"""
import argparse
import dataclasses
import json
import os
import resource
import re
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_cpu import busy_cpu_s, own_cpu_s, reexec_with_tuned_malloc  # noqa: E402

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_DISABLED", "true")

_CACHE = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
DEFAULT_MODEL = os.environ.get("VKF_REF_MODEL") or os.path.join(
    os.environ.get("VKF_REF") or os.path.join(_CACHE, "vkf-ref"), "smollm2-135m-instruct-f32")
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

NUMBER = re.compile(r"-?\d[\d,]*(?:\.\d+)?|-?\.\d+")


def last_number(text):
    ms = NUMBER.findall(text)
    if not ms:
        return None
    try:
        return float(ms[-1].replace(",", ""))
    except ValueError:
        return None


def completion_text(c):
    """A conversational completion is [{"role": "assistant", "content": ...}]; a plain one a str."""
    if isinstance(c, list):
        return "".join(m.get("content", "") or "" for m in c if isinstance(m, dict))
    return c


def numeric_match(completions, answer, **kwargs):
    out = []
    for c, a in zip(completions, answer):
        want = last_number(a)  # vkfinetune reads the column's last number too
        got = last_number(completion_text(c))
        out.append(1.0 if want is not None and got is not None and abs(got - want) <= 1e-6 else 0.0)
    return out


def number_only(completions, answer, **kwargs):
    return [1.0 if completion_text(c).strip() == a.strip() else 0.0 for c, a in zip(completions, answer)]


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def main():
    reexec_with_tuned_malloc()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="directory with train.jsonl (tools/make_arithmetic_data.py)")
    ap.add_argument("--model", default=DEFAULT_MODEL, help=f"HF model directory (default {DEFAULT_MODEL})")
    ap.add_argument("--steps", type=int, default=5, help="optimizer steps (max_steps); default 5")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    ap.add_argument("--json", default=None, help="also write the result JSON here")
    ap.add_argument("--malloc-default", action="store_true", help="plain glibc malloc (for comparison)")
    a = ap.parse_args()
    if a.steps < 1:
        sys.exit("--steps must be >= 1")
    train_path = os.path.join(a.data, "train.jsonl")
    if not os.path.isfile(train_path):
        sys.exit(f"{train_path} not found (make it with: python3 tools/make_arithmetic_data.py {a.data})")

    import torch
    if a.threads:
        torch.set_num_threads(a.threads)
    import transformers
    import trl
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    train = Dataset.from_list(read_jsonl(train_path))
    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)

    ends, rewards, per_func = [], [], {"numeric_match": [], "number_only": []}
    cpu = {}

    class Timer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            ends.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            ends.append(time.perf_counter())
            if state.global_step == 1:
                cpu["busy0"], cpu["own0"] = busy_cpu_s(), own_cpu_s()
            if state.global_step == a.steps:
                cpu["busy1"], cpu["own1"] = busy_cpu_s(), own_cpu_s()

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "reward" in logs:
                rewards.append(logs["reward"])
                for name in per_func:
                    per_func[name].append(logs.get(f"rewards/{name}/mean"))

    # transformers 5 renamed gradient_checkpointing to activation_checkpointing (the old name is a
    # deprecated alias); TRL's configs default it to True. Turn both off.
    no_ckpt = {"gradient_checkpointing": False}
    if "activation_checkpointing" in {f.name for f in dataclasses.fields(GRPOConfig)}:
        no_ckpt["activation_checkpointing"] = False
    config = GRPOConfig(
        output_dir="/tmp/bench_grpo_trl", max_steps=a.steps, seed=42,
        per_device_train_batch_size=32, generation_batch_size=32, num_generations=8,
        gradient_accumulation_steps=1, num_iterations=1, max_completion_length=16,
        temperature=0.7, top_p=1.0, top_k=0, repetition_penalty=1.0,
        loss_type="dapo", scale_rewards="group", beta=0.0, epsilon=0.2,
        mask_truncated_completions=False, reward_weights=[1.0, 1.0],
        learning_rate=5e-5, lr_scheduler_type="constant", warmup_steps=0, weight_decay=0.0,
        max_grad_norm=1.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
        bf16=False, fp16=False, use_cpu=True, use_vllm=False, **no_ckpt,
        logging_steps=1, report_to="none", eval_strategy="no", save_strategy="no",
        dataloader_num_workers=0, log_completions=False)
    peft_config = LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, target_modules=TARGETS, task_type="CAUSAL_LM")
    trainer = GRPOTrainer(model=model, reward_funcs=[numeric_match, number_only], args=config,
                          train_dataset=train, processing_class=tok, peft_config=peft_config,
                          callbacks=[Timer()])
    trainer.train()

    step_s = [t1 - t0 for t0, t1 in zip(ends, ends[1:])]
    steady = step_s[1:]
    result = {
        "tool": "trl GRPOTrainer", "trl": trl.__version__, "torch": torch.__version__,
        "transformers": transformers.__version__, "threads": torch.get_num_threads(), "model": a.model,
        "steps": len(step_s),
        "seconds_per_step_median": statistics.median(steady) if steady else None,
        "seconds_per_step_mean": statistics.fmean(steady) if steady else None,
        "first_step_s": step_s[0] if step_s else None,
        "step_seconds": step_s,
        "rewards": rewards,
        "rewards_numeric_match": per_func["numeric_match"],
        "rewards_number_only": per_func["number_only"],
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
        "malloc": "default" if a.malloc_default else "tuned",
        "checkpointing": any(getattr(m, "gradient_checkpointing", False) is True for m in trainer.model.modules()),
    }
    if steady and "busy1" in cpu:
        wall = sum(steady)
        foreign = (cpu["busy1"] - cpu["busy0"]) - (cpu["own1"] - cpu["own0"])
        result["foreign_cpu_frac"] = max(0.0, foreign) / (wall * os.cpu_count())
    text = json.dumps(result)
    print(text, flush=True)
    if a.json:
        with open(a.json, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
