#!/usr/bin/env python3
"""Golden fixtures for the mixture-of-experts decoders (Mixtral, Qwen3-MoE, Qwen2-MoE) vs transformers.

For each tiny random config this writes, into Tests/VKFModelTests/Fixtures/golden/:
  <name>.weights.safetensors   the checkpoint as save_pretrained writes it (one 2-D tensor per
                               expert and projection: block_sparse_moe.experts.{e}.w1 …)
  <name>.expected.safetensors  ids, targets, mask (i32/f32, (B, T)), logits (B*T, V), ce (1),
                               aux (1), loss (1) = ce + router_aux_loss_coef · aux, and
                               grad.<checkpoint name> for every parameter after loss.backward()
                               (transformers 5 keeps each layer's experts stacked in
                               experts.gate_up_proj / down_proj; their gradients are split back
                               into the checkpoint's per-expert names here)
  <name>.config.json           the config (the tests load the shape from it)

Qwen2-MoE's sparse block adds a shared expert: out = experts(x) + sigmoid(shared_expert_gate(x))
· shared_expert(x), a plain gated-SiLU MLP (mlp.shared_expert.{gate,up,down}_proj) and a
Linear(hidden, 1) gate (mlp.shared_expert_gate.weight, shape (1, hidden)), both saved under
those names as they are; its q/k/v projections have biases (qkv_bias).

ce is F.cross_entropy over the given targets (mean over non-ignored); aux is transformers'
load_balancing_loss_func over every sparse layer's router logits with the attention mask
(row 1 ends in two padding tokens, whose targets are ignored). The forward itself runs
without the mask: with right padding no real token attends to a padding token, so every
real token's logits and every gradient are what a masked run gives (the padding rows'
logits are compared too: both sides run them causally).

The routers are initialised wide (std 0.3; Qwen2-MoE's shared-expert gates std 0.15, so that
their sigmoid varies across tokens, about 0.2 to 0.9, without saturating), and the seed is
advanced until each token's K-th and (K+1)-th router logits differ by at least MIN_MARGIN:
the top-K choice is then the same in any f32 summation order.

Run with the reference venv:  $VKF_REF_VENV/bin/python tools/make_moe_fixtures.py [--only NAME ...]
(--only writes just the named configs; each config draws from its own seed, so the others'
files are the same either way.)
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from transformers import (MixtralConfig, MixtralForCausalLM, Qwen2MoeConfig, Qwen2MoeForCausalLM,
                          Qwen3MoeConfig, Qwen3MoeForCausalLM)
from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "VKFModelTests", "Fixtures", "golden")
B, T = 2, 7
MIN_MARGIN = 1e-2

COMMON = dict(
    hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
    vocab_size=97, rms_norm_eps=1e-6, max_position_embeddings=64, hidden_act="silu",
    attn_implementation="eager", tie_word_embeddings=False, output_router_logits=True,
    router_aux_loss_coef=0.5,
)

CONFIGS = {
    # Mixtral: 4 experts, top-2 renormalised, every layer sparse, experts of intermediate_size.
    "mixtral": (MixtralConfig, MixtralForCausalLM,
                dict(intermediate_size=48, num_local_experts=4, num_experts_per_tok=2, head_dim=16,
                     rope_theta=10000.0), 11),
    # Qwen3-MoE: per-head q/k norm (head_dim 64), layer 0 dense (mlp_only_layers, width 96),
    # layer 1 sparse with 6 experts of width 32, top-3 probabilities not renormalised.
    "qwen3_moe": (Qwen3MoeConfig, Qwen3MoeForCausalLM,
                  dict(intermediate_size=96, moe_intermediate_size=32, num_experts=6, num_experts_per_tok=3,
                       norm_topk_prob=False, mlp_only_layers=[0], head_dim=64, rope_theta=10000.0), 12),
    # Qwen2-MoE: q/k/v biases, both layers sparse: 4 experts of width 32, top-2 probabilities not
    # renormalised, plus a shared expert of width 48 behind a sigmoid gate; head_dim 16 (hidden / heads);
    # intermediate_size (96) is the width of a dense layer, which this model has none of.
    "qwen2_moe": (Qwen2MoeConfig, Qwen2MoeForCausalLM,
                  dict(intermediate_size=96, moe_intermediate_size=32, shared_expert_intermediate_size=48,
                       num_experts=4, num_experts_per_tok=2, norm_topk_prob=False, rope_theta=10000.0), 13),
}


def expert_names(name, layer):
    """(block, gate, up, down) of a sparse layer's checkpoint names."""
    if name == "mixtral":
        return f"model.layers.{layer}.block_sparse_moe", "w1", "w3", "w2"
    return f"model.layers.{layer}.mlp", "gate_proj", "up_proj", "down_proj"


def checkpoint_tensors(name, model, values):
    """A name → tensor dict in checkpoint names from `values` (parameter name → tensor)."""
    out = {}
    for pname, v in values.items():
        if ".mlp.experts.gate_up_proj" in pname or ".mlp.experts.down_proj" in pname:
            layer = int(pname.split(".")[2])
            block, g, u, d = expert_names(name, layer)
            if pname.endswith("gate_up_proj"):
                f = v.shape[1] // 2
                for e in range(v.shape[0]):
                    out[f"{block}.experts.{e}.{g}.weight"] = v[e, :f].contiguous().clone()
                    out[f"{block}.experts.{e}.{u}.weight"] = v[e, f:].contiguous().clone()
            else:
                for e in range(v.shape[0]):
                    out[f"{block}.experts.{e}.{d}.weight"] = v[e].contiguous().clone()
        elif ".mlp.gate.weight" in pname:
            layer = int(pname.split(".")[2])
            out[expert_names(name, layer)[0] + ".gate.weight"] = v.contiguous().clone()
        else:
            out[pname] = v.contiguous().clone()
    return out


def make(name, config_cls, model_cls, extra, seed):
    """Tries seed, seed + 1000, … until the routing margin holds (deterministic)."""
    for attempt in range(100):
        if make_once(name, config_cls, model_cls, extra, seed + 1000 * attempt):
            return
    sys.exit(f"{name}: no seed gave a routing margin ≥ {MIN_MARGIN}")


def make_once(name, config_cls, model_cls, extra, seed):
    torch.manual_seed(seed)
    cfg = config_cls(**{**COMMON, **extra})
    model = model_cls(cfg).float()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif pname.endswith("mlp.gate.weight"):
                p.copy_(0.3 * torch.randn_like(p))  # distinct router logits (see MIN_MARGIN)
            elif pname.endswith("mlp.shared_expert_gate.weight"):
                p.copy_(0.15 * torch.randn_like(p))  # a shared-expert gate that varies across tokens, unsaturated
            else:
                p.copy_(0.08 * torch.randn_like(p))
    model.train(False)
    ids = torch.randint(0, cfg.vocab_size, (B, T), dtype=torch.int64)
    ids[1, 4] = ids[0, 2]
    targets = torch.full((B, T), -100, dtype=torch.int64)
    targets[:, :-1] = ids[:, 1:]
    targets[0, 3] = -100
    targets[1, 0] = -100
    mask = torch.ones(B, T, dtype=torch.int64)
    mask[1, 5:] = 0  # right padding
    targets[1, 4:] = -100

    gates = []  # the shared-expert gates' sigmoid, per sparse layer (Qwen2-MoE), for the log line
    hooks = [mod.register_forward_hook(lambda _m, _i, o: gates.append(torch.sigmoid(o.detach())))
             for mname, mod in model.named_modules() if mname.endswith("mlp.shared_expert_gate")]
    out = model(input_ids=ids, output_router_logits=True)
    for h in hooks:
        h.remove()
    logits = out.logits
    k = cfg.num_experts_per_tok
    for r in out.router_logits:
        top = r.detach().float().sort(dim=-1, descending=True).values
        margin = (top[:, k - 1] - top[:, k]).min().item()
        if margin < MIN_MARGIN:
            return False
    experts = cfg.num_local_experts if hasattr(cfg, "num_local_experts") else cfg.num_experts
    ce = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), targets.reshape(-1), ignore_index=-100)
    aux = load_balancing_loss_func(out.router_logits, experts, k, mask)
    loss = ce + cfg.router_aux_loss_coef * aux
    loss.backward()

    state = checkpoint_tensors(name, model, {k_: v.detach() for k_, v in model.state_dict().items()})
    model.save_pretrained("/tmp/vkf-moe-" + name)
    from safetensors import safe_open
    with safe_open("/tmp/vkf-moe-" + name + "/model.safetensors", "pt") as f:
        assert sorted(f.keys()) == sorted(state), "checkpoint names differ from save_pretrained's"
        for key in f.keys():
            assert torch.equal(f.get_tensor(key), state[key]), key
    expected = {
        "ids": ids.to(torch.int32), "targets": targets.to(torch.int32), "mask": mask.float(),
        "logits": logits.detach().reshape(B * T, cfg.vocab_size).contiguous(),
        "ce": ce.detach().reshape(1), "aux": aux.detach().reshape(1), "loss": loss.detach().reshape(1),
    }
    grads = checkpoint_tensors(name, model, {n: p.grad.detach() for n, p in model.named_parameters()})
    for gname, g in grads.items():
        expected["grad." + gname] = g
    save_file(state, os.path.join(OUT, name + ".weights.safetensors"))
    save_file(expected, os.path.join(OUT, name + ".expected.safetensors"))
    with open("/tmp/vkf-moe-" + name + "/config.json") as f:
        config = json.load(f)
    with open(os.path.join(OUT, name + ".config.json"), "w") as f:
        json.dump(config, f, indent=1, sort_keys=True)
    print(f"{name}: ce {ce.item():.6f} aux {aux.item():.6f} loss {loss.item():.6f}, {len(state)} weights, "
          f"{len(grads)} gradients (seed {seed})" +
          "".join(f", shared gate {i}: sigmoid {g.min().item():.3f}..{g.max().item():.3f}" for i, g in enumerate(gates)),
          file=sys.stderr)
    return True


if __name__ == "__main__":
    os.makedirs(OUT, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    only = sys.argv[sys.argv.index("--only") + 1:] if "--only" in sys.argv else list(CONFIGS)
    unknown = [n for n in only if n not in CONFIGS]
    if unknown or not only:
        sys.exit(f"--only takes config names from {list(CONFIGS)}; got {only}")
    for name in only:
        c, m, extra, seed = CONFIGS[name]
        make(name, c, m, extra, seed)
