#!/usr/bin/env python3
"""Golden fixtures for the VKFModel transformer (llm.c's debug-state pattern).

For each tiny random-weight config this writes, into Tests/VKFModelTests/Fixtures/golden/:
  <name>.weights.safetensors   the state dict by Hugging Face names (f32; the tied lm_head
                               is left out, as save_pretrained does)
  <name>.expected.safetensors  ids, targets (i32, (B, T)), logits (B*T, V), loss (1) and
                               grad.<name> for every parameter after loss.backward()
  <name>.config.json           the model config (for reading by eye; the tests hard-code it)

The loss is F.cross_entropy over the given targets (ids shifted left, a few -100), mean over
non-ignored targets: the model's own shift-by-one loss is not used.

Run with the reference venv:  $VKF_REF_VENV/bin/python tools/make_fixtures.py [NAME …]
(names: only those fixtures; the committed ones are byte-stable only for one torch version).
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import (Phi3Config, Phi3ForCausalLM, Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig, GemmaConfig, GemmaForCausalLM, LlamaConfig, LlamaForCausalLM, MistralConfig,
                          MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config, Qwen3ForCausalLM)

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "VKFModelTests", "Fixtures", "golden")
B, T = 2, 7

COMMON = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    intermediate_size=96, vocab_size=97, rope_theta=10000.0, rms_norm_eps=1e-6,
    max_position_embeddings=64, hidden_act="silu", attn_implementation="eager",
)

CONFIGS = {
    "llama_untied": (LlamaConfig, LlamaForCausalLM, dict(tie_word_embeddings=False), 1),
    "llama_tied": (LlamaConfig, LlamaForCausalLM, dict(tie_word_embeddings=True), 2),
    "qwen2_tied": (Qwen2Config, Qwen2ForCausalLM,
                   dict(tie_word_embeddings=True, use_sliding_window=False), 3),
    # Sliding-window attention at T = 7 > window 3: every layer (mistral), and only layers
    # from max_window_layers on (qwen2: layer 0 full, layer 1 windowed).
    "mistral_window": (MistralConfig, MistralForCausalLM, dict(tie_word_embeddings=False, sliding_window=3), 4),
    "qwen2_window": (Qwen2Config, Qwen2ForCausalLM,
                     dict(tie_word_embeddings=True, use_sliding_window=True, sliding_window=3,
                          max_window_layers=1), 5),
    # Qwen3: RMSNorm over each query and key head; head_dim 64 ≠ hidden / heads (o_proj 64×256;
    # 64 is SmolLM2's head size, so the Vulkan tests reuse its compiled attention kernels).
    "qwen3_qknorm": (Qwen3Config, Qwen3ForCausalLM, dict(tie_word_embeddings=True, head_dim=64), 6),
    # Gemma: GeGLU (gelu_pytorch_tanh), (1 + w) RMSNorms, embeddings × √hidden, head_dim 64.
    "gemma": (GemmaConfig, GemmaForCausalLM,
              dict(tie_word_embeddings=True, head_dim=64, hidden_act="gelu_pytorch_tanh"), 7),
    # Gemma 3 (text): sandwich norms, (1 + w) q/k norms, query_pre_attn_scalar 48 ≠ head_dim,
    # layer 0 windowed (3 < T) with the local RoPE base 10 000, layer 1 full with θ 10⁶.
    "gemma3": (Gemma3TextConfig, Gemma3ForCausalLM,
               dict(tie_word_embeddings=True, head_dim=64, hidden_activation="gelu_pytorch_tanh",
                    query_pre_attn_scalar=48, sliding_window=3, rope_theta=1_000_000.0,
                    layer_types=["sliding_attention", "full_attention"]), 8),
    # Gemma 2: sandwich norms, query_pre_attn_scalar 48, layer 0 windowed (3 < T) by the
    # default alternation, and soft-capping small enough to bend the scores (~±0.5 → cap 1)
    # and the logits (~±0.6 → cap 0.8), so the tanh and its derivative are really tested.
    "gemma2": (Gemma2Config, Gemma2ForCausalLM,
               dict(tie_word_embeddings=True, head_dim=64, hidden_activation="gelu_pytorch_tanh",
                    query_pre_attn_scalar=48, sliding_window=3, attn_logit_softcapping=1.0,
                    final_logit_softcapping=0.8), 9),
    # Phi-3: q/k/v fused in qkv_proj and gate/up in gate_up_proj (the gradients are the fused
    # tensors'), every layer windowed (4 < T), untied; no pad row (pad_token_id None) so the
    # embedding gradient is plain.
    "phi3": (Phi3Config, Phi3ForCausalLM,
             dict(tie_word_embeddings=False, sliding_window=4, pad_token_id=None), 10),
}


def make(name, config_cls, model_cls, extra, seed):
    torch.manual_seed(seed)
    cfg = config_cls(**{**COMMON, **extra})  # extras override COMMON (e.g. Gemma's activation)
    model = model_cls(cfg).float()
    # HF initialises norms to 1 and biases to 0; randomise them so their gradients and the
    # norm weights' effect are actually tested.
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif pname.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(0.08 * torch.randn_like(p))
    model.train(False)  # no dropout (all configs use 0 anyway)
    ids = torch.randint(0, cfg.vocab_size, (B, T), dtype=torch.int64)
    ids[1, 4] = ids[0, 2]  # a repeated token: the embedding backward must accumulate it
    targets = torch.full((B, T), -100, dtype=torch.int64)
    targets[:, :-1] = ids[:, 1:]
    targets[0, 3] = -100
    targets[1, 0] = -100

    logits = model(input_ids=ids).logits  # (B, T, V)
    loss = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), targets.reshape(-1),
                           ignore_index=-100)
    loss.backward()

    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    if cfg.tie_word_embeddings:
        state.pop("lm_head.weight", None)
    expected = {
        "ids": ids.to(torch.int32),
        "targets": targets.to(torch.int32),
        "logits": logits.detach().reshape(B * T, cfg.vocab_size).contiguous(),
        "loss": loss.detach().reshape(1),
    }
    for pname, p in model.named_parameters():  # tied parameters appear once
        expected["grad." + pname] = p.grad.detach().contiguous().clone()
    save_file(state, os.path.join(OUT, name + ".weights.safetensors"))
    save_file(expected, os.path.join(OUT, name + ".expected.safetensors"))
    with open(os.path.join(OUT, name + ".config.json"), "w") as f:
        json.dump(cfg.to_dict(), f, indent=1, sort_keys=True, default=str)
    print(f"{name}: loss {loss.item():.6f}, {len(state)} weights, "
          f"{len(expected) - 4} gradients", file=sys.stderr)


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    only = set(sys.argv[1:])
    unknown = only - set(CONFIGS)
    if unknown:
        sys.exit(f"unknown fixture(s) {sorted(unknown)}; known: {sorted(CONFIGS)}")
    for name, (c, m, extra, seed) in CONFIGS.items():
        if not only or name in only:
            make(name, c, m, extra, seed)
