#!/usr/bin/env python3
"""PEFT / transformers interop of every decoder architecture vkfinetune loads (issue 12's
"PEFT adapters for each architecture load in PEFT"): for each, a tiny random model made by
transformers (with SmolLM2's tokenizer), a LoRA adapter trained by vkfinetune for a few
steps, the adapter merged by vkfinetune, then tools/check_peft_adapter.py: PEFT loads the
adapter unmodified, transformers loads the merged directory, their logits agree and our
merge equals PEFT's merge_and_unload.

  $VKF_REF_VENV/bin/python tools/check_architectures.py [--vkf .build/release/vkfinetune] \
      [--only mistral_window,gemma] [--work /tmp/vkf-arch-check]

Exits 1 when any architecture fails. Runs on the CPU (a few minutes in all).
"""
import argparse
import os
import shutil
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..")
SHARED = os.path.join(ROOT, "..", "shared")
TOKENIZER_DIR = os.path.join(SHARED, "models", "smollm2-135m-instruct")
DATA = os.path.join(SHARED, "data", "alpaca", "alpaca_train.json")

COMMON = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              intermediate_size=96, vocab_size=49152, max_position_embeddings=512, rms_norm_eps=1e-6)


def architectures():
    import transformers as t
    return {
        "llama": (t.LlamaConfig, t.LlamaForCausalLM, dict(tie_word_embeddings=True)),
        # T > window in training (max_seq_length 64 below): the window is exercised.
        "mistral_window": (t.MistralConfig, t.MistralForCausalLM, dict(sliding_window=8)),
        "qwen2_window": (t.Qwen2Config, t.Qwen2ForCausalLM,
                         dict(tie_word_embeddings=True, use_sliding_window=True, sliding_window=8,
                              max_window_layers=1)),
        "qwen3": (t.Qwen3Config, t.Qwen3ForCausalLM, dict(tie_word_embeddings=True, head_dim=32)),
        "gemma": (t.GemmaConfig, t.GemmaForCausalLM,
                  dict(tie_word_embeddings=True, head_dim=32, hidden_act="gelu_pytorch_tanh")),
        "gemma3": (t.Gemma3TextConfig, t.Gemma3ForCausalLM,
                   dict(tie_word_embeddings=True, head_dim=32, hidden_activation="gelu_pytorch_tanh",
                        query_pre_attn_scalar=24, sliding_window=8,
                        layer_types=["sliding_attention", "full_attention"])),
        # Caps small enough to bend the scores and logits of a random model.
        "gemma2": (t.Gemma2Config, t.Gemma2ForCausalLM,
                   dict(tie_word_embeddings=True, head_dim=32, hidden_activation="gelu_pytorch_tanh",
                        query_pre_attn_scalar=24, sliding_window=8, attn_logit_softcapping=1.0,
                        final_logit_softcapping=1.0)),
        # Fused qkv_proj / gate_up_proj: the adapter's A is shared by the parts, as in PEFT.
        "phi3": (t.Phi3Config, t.Phi3ForCausalLM, dict(pad_token_id=None, sliding_window=8)),
        # Mixture of experts: LoRA on the attention (and, as *_experts below, on the experts).
        "mixtral": (t.MixtralConfig, t.MixtralForCausalLM,
                    dict(num_local_experts=4, num_experts_per_tok=2, head_dim=16, output_router_logits=True)),
        # A shared expert (sigmoid-gated) beside the routed ones, q/k/v biases.
        "qwen2_moe": (t.Qwen2MoeConfig, t.Qwen2MoeForCausalLM,
                      dict(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
                           shared_expert_intermediate_size=64)),
        "qwen3_moe": (t.Qwen3MoeConfig, t.Qwen3MoeForCausalLM,
                      dict(tie_word_embeddings=True, head_dim=32, num_experts=6, num_experts_per_tok=2,
                           moe_intermediate_size=32, mlp_only_layers=[0])),
    }


# Models checked a second time with LoRA on the experts too (PEFT's target_parameters).
EXPERT_LORA = ["--lora-target-parameters", "mlp.experts.gate_up_proj,mlp.experts.down_proj"]
VARIANTS = {"mixtral_experts": ("mixtral", EXPERT_LORA), "qwen3_moe_experts": ("qwen3_moe", EXPERT_LORA),
            "qwen2_moe_experts": ("qwen2_moe", EXPERT_LORA)}


def make_model(name, directory):
    import torch
    cfg_cls, model_cls, extra = architectures()[name]
    torch.manual_seed(0)
    model = model_cls(cfg_cls(**{**COMMON, **extra})).float()
    with torch.no_grad():  # random norms so the norm handling matters
        for pname, p in model.named_parameters():
            if pname.endswith("norm.weight"):
                p.copy_((0 if name.startswith("gemma") else 1) + 0.2 * torch.randn_like(p))
            elif pname.endswith("mlp.gate.weight") or pname.endswith("shared_expert_gate.weight"):
                p.copy_(0.3 * torch.randn_like(p))  # routers that actually prefer experts
    model.save_pretrained(directory, safe_serialization=True)
    for f in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"]:
        src = os.path.join(TOKENIZER_DIR, f)
        if os.path.exists(src):
            shutil.copy(src, directory)


def run(cmd):
    print("$", " ".join(cmd), flush=True)
    return subprocess.run(cmd).returncode


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--vkf", default=os.path.join(ROOT, ".build", "release", "vkfinetune"))
    ap.add_argument("--only", default="")
    ap.add_argument("--work", default="/tmp/vkf-arch-check")
    a = ap.parse_args()
    names = [n for n in list(architectures()) + list(VARIANTS) if not a.only or n in a.only.split(",")]
    failed = []
    for name in names:
        d = os.path.join(a.work, name)
        shutil.rmtree(d, ignore_errors=True)
        base, adapter, merged = (os.path.join(d, x) for x in ["base", "adapter", "merged"])
        arch, flags = VARIANTS.get(name, (name, []))
        make_model(arch, base)
        steps = [
            [a.vkf, "train", "--cpu", "--model", base, "--data", DATA, "--method", "lora", "--max-steps", "3",
             "--learning-rate", "5e-3", "--lora-r", "8", "--max-seq-length", "64", "--output", adapter] + flags,
            [a.vkf, "merge", "--cpu", "--model", base, "--adapter", adapter, "--output", merged],
            [sys.executable, os.path.join(HERE, "check_peft_adapter.py"), "check", "--base", base,
             "--adapter", adapter, "--merged", merged, "--prompt",
             "Below is an instruction that describes a task. Write a response that completes the request."],
        ]
        ok = all(run(cmd) == 0 for cmd in steps)
        print(f"== {name}: {'ok' if ok else 'FAILED'}", flush=True)
        if not ok:
            failed.append(name)
    print("failed: " + ", ".join(failed) if failed else f"all {len(names)} architectures interoperate")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
