#!/usr/bin/env python3
"""Side by side on the CPU: a LoRA training step of a mixture-of-experts model in vkfinetune
(`vkfinetune bench train`) and in PyTorch + transformers + PEFT, on the same model directory.

The model (made here by transformers, random init, fp32): Mixtral architecture, hidden 512,
8 layers, 8 heads (head_dim 64, GQA 8/4), 8 experts of width 1376 with top-2 routing, vocab
49152 (SmolLM2's tokenizer, which the loader wants beside the weights), untied head, the
load-balancing loss on (output_router_logits, coefficient 0.001): 194M parameters, 64M active
per token (the embedding and LM head 50M of them). LoRA r 16, alpha 32, dropout 0 on q/k/v/o (the
default on MoE models) and, with --experts, on every expert's gate_up_proj and down_proj too
(PEFT's target_parameters), AdamW lr 1e-3; batch 4 × 256 random ids, every target trained; one
warm-up step, then --steps measured.

  $VKF_REF_VENV/bin/python tools/bench_moe.py [--vkf .build/release/vkfinetune] [--steps 5] \
      [--threads 2] [--work /tmp/vkf-moe-bench] [--experts]

Run on an idle machine, with `env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE` (OpenBLAS picks
its kernels for the CPU, as on a user's machine). Prints one JSON document.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
B, T = 4, 256


def make_model(directory):
    import torch
    from transformers import MixtralConfig, MixtralForCausalLM
    if os.path.exists(os.path.join(directory, "config.json")):
        return
    torch.manual_seed(0)
    cfg = MixtralConfig(vocab_size=49152, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                        num_attention_heads=8, num_key_value_heads=4, head_dim=64, num_local_experts=8,
                        num_experts_per_tok=2, max_position_embeddings=2048, tie_word_embeddings=False,
                        output_router_logits=True, router_aux_loss_coef=0.001)
    MixtralForCausalLM(cfg).save_pretrained(directory)
    # A tokenizer the loader needs (the bench feeds random ids; any BPE tokenizer.json will do).
    shared = os.path.join(ROOT, "..", "shared", "models", "smollm2-135m-instruct", "tokenizer.json")
    shutil.copy(shared, directory)


EXPERT_PARAMETERS = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]


def torch_step_rate(directory, steps, threads, experts):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0,
                                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj"],
                                             target_parameters=EXPERT_PARAMETERS if experts else None))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ids = torch.randint(0, 49152, (B, T))
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        out = model(input_ids=ids, labels=ids)  # includes coef × aux (output_router_logits)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], 1.0)
        opt.step()
        opt.zero_grad()
        if i > 0:
            times.append(time.perf_counter() - t0)
    return B * T * len(times) / sum(times), out.loss.item()


def vkf_step_rate(vkf, directory, steps, experts):
    extra = ["--lora-target-parameters", ",".join(EXPERT_PARAMETERS)] if experts else []
    out = subprocess.run([vkf, "bench", "train", "--cpu", "--model", directory, "--method", "lora", "--batch", str(B),
                          "--seq", str(T), "--steps", str(steps), "--lora-r", "16"] + extra,
                         capture_output=True, text=True, check=True)
    m = re.search(r"([0-9.]+) tokens/s", out.stdout)
    if not m:
        sys.exit("no tok/s in vkfinetune's output:\n" + out.stdout + out.stderr)
    return float(m.group(1)), out.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vkf", default=os.path.join(ROOT, ".build", "release", "vkfinetune"))
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--work", default="/tmp/vkf-moe-bench")
    ap.add_argument("--experts", action="store_true", help="LoRA on the experts too")
    a = ap.parse_args()
    model = os.path.join(a.work, "mixtral-194m")
    make_model(model)
    ours, log = vkf_step_rate(a.vkf, model, a.steps, a.experts)
    theirs, loss = torch_step_rate(model, a.steps, a.threads, a.experts)
    print(log, file=sys.stderr)
    print(json.dumps({"model": model, "batch": B, "seq": T, "steps": a.steps, "expert_lora": a.experts,
                      "vkfinetune_tok_s": ours,
                      "pytorch_peft_tok_s": theirs, "ratio": ours / theirs, "pytorch_last_loss": loss}, indent=1))


if __name__ == "__main__":
    main()
