#!/usr/bin/env python3
"""Golden fixtures for PEFT LoRA on mixture-of-experts expert weights (`target_parameters`).

transformers 5 keeps each sparse layer's experts stacked in two 3-D nn.Parameters,
`mlp.experts.gate_up_proj` (E, 2F, H) and `mlp.experts.down_proj` (E, H, F) (Mixtral too: its
checkpoint's `block_sparse_moe` is renamed `mlp` at load time). PEFT 0.21 adapts them with
`LoraConfig(target_parameters=[...])`: a `lora.ParamWrapper` per parameter, which during the
forward adds scale · B_e A_e to every expert's (out, in) matrix through a torch parametrization.
The base models are the tiny Mixtral and Qwen3-MoE of tools/make_moe_fixtures.py
(Tests/VKFModelTests/Fixtures/golden/<name>.{config.json,weights.safetensors}, with the ids,
targets and mask of <name>.expected.safetensors); nothing here makes new base weights.

The adapter: LoraConfig(r=4, lora_alpha=8, lora_dropout=0, target_modules=[q_proj, v_proj],
target_parameters=[mlp.experts.gate_up_proj, mlp.experts.down_proj], bias=none). The spelling
`mlp.experts.<param>` works for both models (PEFT matches `<module path>.<param>` by suffix on
the runtime module names; Mixtral's checkpoint spelling `block_sparse_moe.experts.<param>`
matches nothing: PEFT only warns when target_modules match something, and raises
NoMatchingPeftModuleError when nothing at all matches).

The saved format (verified below, numerically, on every expert):
  keys       attention: base_model.model.model.layers.{i}.self_attn.{q,v}_proj.lora_{A,B}.weight
             (A (r, in), B (out, r), delta = scale · B A, as ordinary LoRA)
             experts, one pair per targeted parameter, the wrappers nested: each ParamWrapper
             wraps one parameter and a second one wraps the first, so
               base_model.model.model.layers.{i}.mlp.experts.base_layer.lora_{A,B}.weight
                   = the INNER wrapper = gate_up_proj
               base_model.model.model.layers.{i}.mlp.experts.lora_{A,B}.weight
                   = the OUTER wrapper = down_proj
             (the nesting follows the order in which the experts module registers its parameters,
             gate_up_proj first, not the order of target_parameters; Mixtral keys too say `mlp`,
             not `block_sparse_moe`). Dense layers (qwen3_moe layer 0) have no expert keys.
  shapes     for a parameter stacked (E, out, in) (checkpoint orientation per expert):
             lora_A.weight (r·E, in), lora_B.weight (out, r·E)
  experts    A_e = lora_A[e·r ..< (e+1)·r, :]                     (rows, contiguous blocks)
             B_e = lora_B[:, e::E]  i.e. columns {j·E + e : j in 0..<r} (columns, INTERLEAVED:
                   PEFT reshapes B to (out, r, E) but A to (E, r, in))
             delta_e = scale · B_e @ A_e, (out, in) = the orientation of the checkpoint's
             per-expert tensor (w1/w3/w2.weight, gate_proj/up_proj/down_proj.weight), with
             A_e's row j paired with B_e's column j
  gate/up    gate_up_proj's out = 2F: rows 0 ..< F are gate (w1 / gate_proj), rows F ..< 2F up
             (w3 / up_proj); gate and up share A_e:
               delta_gate_e = scale · lora_B[0..<F, e::E] @ A_e
               delta_up_e   = scale · lora_B[F..<2F, e::E] @ A_e
  down       down_proj (E, H, F): A (r·E, F), B (H, r·E), delta_down_e (H, F) the same way
  scale      lora_alpha / r (use_rslora: lora_alpha / sqrt(r)), the same for every expert
For every key the forward adds exactly this delta to the expert's weight before the expert's
matmul (so a token's LoRA contribution goes only through its routed experts, weighted by the
router as the base output is).

Writes into Tests/VKFPEFTTests/Fixtures/moe_lora/<name>/:
  adapter_model.safetensors  peft_model.save_pretrained's file, unchanged
  adapter_config.json        save_pretrained's file with two normalisations (as
                             tools/check_peft_adapter.py): base_model_name_or_path (a temporary
                             path) becomes a label, and target_modules / target_parameters
                             (stored from sets, their order varying with string hashing) sorted
  expected.safetensors
      ids, targets (i32 (B, T)), mask (f32 (B, T))   copied from the model fixture
      logits (B·T, V)      the adapter-on forward
      loss (1)             F.cross_entropy(logits, targets, ignore_index=-100)
                           + router_aux_loss_coef · load_balancing_loss_func(router logits, E, K, mask)
                           (exactly as tools/make_moe_fixtures.py; the forward runs without the mask)
      grad.<key>           dloss/d<key> for every key of adapter_model.safetensors (same shape)
      merged_logits (B·T, V)  the logits of merge_and_unload() of a deep copy
      delta.{i}.{kind}.{e} (out, in) for sparse layer i, kind gate/up/down, expert e: the merged
                           model's save_pretrained checkpoint tensor minus the base checkpoint
                           tensor (block_sparse_moe.experts.{e}.w1/w3/w2.weight,
                           mlp.experts.{e}.gate_proj/up_proj/down_proj.weight)
  format.json              every key's shape and role, the mapping above, and what PEFT refuses

The adapter tensors are 0.05 · randn from torch.Generator().manual_seed(seed), filled in
named_parameters order; the seed is advanced until, in the adapter-on forward (and the merged
one), every token's K-th and (K+1)-th router logits differ by at least MIN_MARGIN in every sparse
layer (padding tokens included, as the golden fixtures compare their logits too) and every
expert is routed at least one token whose target counts (target != -100) in every sparse layer,
so every expert's A_e / B_e gradient is nonzero (asserted): in the last layer an expert's output
reaches only its own token's logits, so a token with an ignored target gives it no gradient.

Run with the reference venv:  $VKF_REF_VENV/bin/python tools/make_moe_lora_fixtures.py
"""
import copy
import json
import os
import re
import shutil
import sys
import tempfile
import warnings

import torch
import torch.nn.functional as F
from safetensors import safe_open
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "..", "Tests", "VKFModelTests", "Fixtures", "golden")
OUT = os.path.join(HERE, "..", "Tests", "VKFPEFTTests", "Fixtures", "moe_lora")
NAMES = ["mixtral", "qwen3_moe"]
R, ALPHA = 4, 8
TARGET_MODULES = ["q_proj", "v_proj"]
TARGET_PARAMETERS = ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]
ADAPTER_INIT_STD = 0.05
MIN_MARGIN = 1e-2
FIRST_SEED = 7
PREFIX = "base_model.model."


def lora_config(**overrides):
    from peft import LoraConfig
    kw = dict(r=R, lora_alpha=ALPHA, lora_dropout=0.0, target_modules=list(TARGET_MODULES),
              target_parameters=list(TARGET_PARAMETERS), bias="none", task_type="CAUSAL_LM")
    kw.update(overrides)
    return LoraConfig(**kw)


def base_model(name):
    from transformers import AutoModelForCausalLM
    tmp = tempfile.mkdtemp()
    shutil.copy(os.path.join(GOLDEN, name + ".config.json"), os.path.join(tmp, "config.json"))
    shutil.copy(os.path.join(GOLDEN, name + ".weights.safetensors"), os.path.join(tmp, "model.safetensors"))
    model = AutoModelForCausalLM.from_pretrained(tmp, dtype=torch.float32, attn_implementation="eager")
    shutil.rmtree(tmp)
    model.train(False)
    return model


def expert_names(name, layer):
    """(block, gate, up, down) of a sparse layer's checkpoint names (as tools/make_moe_fixtures.py)."""
    if name == "mixtral":
        return f"model.layers.{layer}.block_sparse_moe", "w1", "w3", "w2"
    return f"model.layers.{layer}.mlp", "gate_proj", "up_proj", "down_proj"


def sparse_layers(cfg):
    n = cfg.num_hidden_layers
    return [i for i in range(n) if i not in (getattr(cfg, "mlp_only_layers", None) or [])]


def num_experts(cfg):
    return cfg.num_local_experts if hasattr(cfg, "num_local_experts") else cfg.num_experts


def forward(model, ids, scored, cfg):
    """Logits, router logits, the smallest top-K margin over all tokens, and whether every expert is routed
    at least one token in `scored` (B, T) (those whose target counts) in every sparse layer."""
    out = model(input_ids=ids, output_router_logits=True)
    k = cfg.num_experts_per_tok
    margin, all_hit = float("inf"), True
    real = scored.reshape(-1).bool()
    for r in out.router_logits:
        top = r.detach().sort(dim=-1, descending=True)
        margin = min(margin, (top.values[:, k - 1] - top.values[:, k]).min().item())
        hit = torch.zeros(r.shape[-1], dtype=torch.bool)
        hit[top.indices[real][:, :k].reshape(-1)] = True
        all_hit = all_hit and bool(hit.all())
    return out, margin, all_hit


def loss_of(out, targets, mask, cfg):
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func
    ce = F.cross_entropy(out.logits.reshape(-1, cfg.vocab_size), targets.reshape(-1), ignore_index=-100)
    aux = load_balancing_loss_func(out.router_logits, num_experts(cfg), cfg.num_experts_per_tok, mask)
    return ce + cfg.router_aux_loss_coef * aux


def saved_key(param_name):
    """named_parameters name → adapter_model.safetensors key (PEFT drops the adapter name)."""
    assert ".default." in param_name, param_name
    return param_name.replace(".default.", ".")


def rebuild_delta(a, b, experts, scale):
    """delta_e = scale · B[:, e::E] @ A[e·r:(e+1)·r] for every expert: the documented formula."""
    r = a.shape[0] // experts
    return [scale * (b[:, e::experts].double() @ a[e * r:(e + 1) * r].double()) for e in range(experts)]


def wrapper_layout(peft, layer):
    """[(key infix, parameter_name)] of the nested ParamWrappers of a sparse layer, outermost first."""
    from peft.tuners.lora.layer import ParamWrapper
    mod = peft.base_model.model.model.layers[layer].mlp.experts
    layout, infix = [], ""
    while isinstance(mod, ParamWrapper):
        layout.append((infix, mod.parameter_name))
        infix += "base_layer."
        mod = mod.base_layer
    return layout


def try_config(name, label, **overrides):
    """What PEFT does with a LoraConfig variant on this model: the error, or the resulting behaviour."""
    model = base_model(name)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            peft = get_peft_model_(model, lora_config(**overrides))
    except Exception as err:  # noqa: BLE001  (recording PEFT's refusal)
        return {"config": label, "accepted": False, "error": f"{type(err).__name__}: {err}"}
    from peft.tuners.lora.layer import ParamWrapper
    wrappers = [m for m in peft.modules() if isinstance(m, ParamWrapper)]
    result = {"config": label, "accepted": True, "param_wrappers": len(wrappers)}
    if wrappers:
        result["expert_scaling"] = wrappers[0].scaling["default"]
        result["nesting_outer_to_inner"] = [p for _, p in wrapper_layout(peft, sparse_layers(model.config)[0])]
    trainable = sorted({(("lora_A" if "lora_A" in n else "lora_B") + "." + n.split(".")[-1]) if "lora_" in n else n
                        for n, p in peft.named_parameters() if p.requires_grad})
    result["trainable_kinds"] = trainable
    result["trainable_bias_tensors"] = sum(1 for n, p in peft.named_parameters() if p.requires_grad and n.endswith("bias"))
    notes = sorted({sorted_sets(str(w.message).split("\n")[0]) for w in caught
                    if "target_parameters" in str(w.message) or "bias" in str(w.message)})
    if notes:
        result["warnings"] = notes
    return result


def sorted_sets(text):
    """A message with a printed set of strings, the set's items sorted (set order varies with string hashing)."""
    return re.sub(r"\{('[^{}]*')\}", lambda m: "{" + ", ".join(sorted(m.group(1).split(", "))) + "}", text)


def get_peft_model_(model, config):
    from peft import get_peft_model
    return get_peft_model(model, config)


def make(name):
    expected_in = load_file(os.path.join(GOLDEN, name + ".expected.safetensors"))
    ids, targets, mask = expected_in["ids"].long(), expected_in["targets"].long(), expected_in["mask"]
    B, T = ids.shape
    scored = targets != -100  # real tokens whose next-token loss counts (a subset of mask == 1)
    model = base_model(name)
    cfg = model.config
    E, K, V = num_experts(cfg), cfg.num_experts_per_tok, cfg.vocab_size
    scale = ALPHA / R
    peft = get_peft_model_(model, lora_config())
    named = {n: p for n, p in peft.named_parameters() if p.requires_grad}
    assert all("lora_A" in n or "lora_B" in n for n in named), sorted(named)

    for attempt in range(200):
        seed = FIRST_SEED + attempt
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in named.values():
                p.copy_(ADAPTER_INIT_STD * torch.randn(p.shape, generator=g))
        with torch.no_grad():
            _, margin, all_hit = forward(peft, ids, scored, cfg)
            merged_check = copy.deepcopy(peft).merge_and_unload()
            _, merged_margin, _ = forward(merged_check, ids, scored, cfg)
        if min(margin, merged_margin) >= MIN_MARGIN and all_hit:
            break
    else:
        sys.exit(f"{name}: no seed gave a routing margin ≥ {MIN_MARGIN} with every expert routed")

    peft.zero_grad(set_to_none=True)
    out, margin, _ = forward(peft, ids, scored, cfg)
    loss = loss_of(out, targets, mask, cfg)
    loss.backward()
    logits = out.logits.detach().reshape(B * T, V).contiguous()

    directory = os.path.join(OUT, name)
    if os.path.isdir(directory):
        shutil.rmtree(directory)
    peft.save_pretrained(directory)
    for f in os.listdir(directory):
        if f not in ("adapter_model.safetensors", "adapter_config.json"):
            os.remove(os.path.join(directory, f))
    config_path = os.path.join(directory, "adapter_config.json")
    with open(config_path) as f:
        adapter_config = json.load(f)
    adapter_config["base_model_name_or_path"] = f"Tests/VKFModelTests/Fixtures/golden/{name}"
    adapter_config["target_modules"] = sorted(adapter_config["target_modules"])
    adapter_config["target_parameters"] = sorted(adapter_config["target_parameters"])
    with open(config_path, "w") as f:
        f.write(json.dumps(adapter_config, indent=2, sort_keys=True))  # as PEFT writes it
    saved = load_file(os.path.join(directory, "adapter_model.safetensors"))

    # The named_parameters ↔ saved-key mapping, and the values.
    assert sorted(saved) == sorted(saved_key(n) for n in named), "saved keys ≠ parameter names"
    for n, p in named.items():
        assert torch.equal(saved[saved_key(n)], p.detach()), n
        assert p.grad is not None and p.grad.abs().max() > 0, n

    expected = {"ids": expected_in["ids"], "targets": expected_in["targets"], "mask": expected_in["mask"],
                "logits": logits, "loss": loss.detach().reshape(1)}
    for n, p in named.items():
        assert p.grad.shape == saved[saved_key(n)].shape
        expected["grad." + saved_key(n)] = p.grad.detach().clone().contiguous()

    # Merged model: logits, and per-expert deltas read back from its save_pretrained checkpoint.
    with torch.no_grad():
        merged = copy.deepcopy(peft).merge_and_unload()
        merged.train(False)
        mout, mmargin, _ = forward(merged, ids, scored, cfg)
    expected["merged_logits"] = mout.logits.reshape(B * T, V).contiguous()
    assert (expected["merged_logits"] - logits).abs().max() < 1e-4
    base_ckpt = load_file(os.path.join(GOLDEN, name + ".weights.safetensors"))
    with tempfile.TemporaryDirectory() as tmp:
        merged.save_pretrained(tmp)
        merged_ckpt = load_file(os.path.join(tmp, "model.safetensors"))
    assert sorted(merged_ckpt) == sorted(base_ckpt), "merged checkpoint names differ from the base's"

    layers = sparse_layers(cfg)
    key_rows = {}
    for i in layers:
        block, gname, uname, dname = expert_names(name, i)
        layout = wrapper_layout(peft, i)
        assert layout == [("", "down_proj"), ("base_layer.", "gate_up_proj")], layout
        pre = f"{PREFIX}model.layers.{i}.mlp.experts."
        gu_a, gu_b = saved[pre + "base_layer.lora_A.weight"], saved[pre + "base_layer.lora_B.weight"]
        d_a, d_b = saved[pre + "lora_A.weight"], saved[pre + "lora_B.weight"]
        gu = rebuild_delta(gu_a, gu_b, E, scale)
        dn = rebuild_delta(d_a, d_b, E, scale)
        for e in range(E):
            f_ = gu[e].shape[0] // 2
            for kind, ck, mine in (("gate", gname, gu[e][:f_]), ("up", uname, gu[e][f_:]), ("down", dname, dn[e])):
                ckey = f"{block}.experts.{e}.{ck}.weight"
                delta = (merged_ckpt[ckey] - base_ckpt[ckey]).contiguous()
                assert delta.shape == base_ckpt[ckey].shape
                diff = (mine - delta.double()).abs().max().item()
                assert diff < 1e-6, f"{name} layer {i} {kind} expert {e}: formula off by {diff}"
                assert delta.abs().max() > 0
                expected[f"delta.{i}.{kind}.{e}"] = delta
            for key, a_or_b in ((pre + "base_layer.lora_A.weight", "A"), (pre + "base_layer.lora_B.weight", "B"),
                                (pre + "lora_A.weight", "A"), (pre + "lora_B.weight", "B")):
                g = expected["grad." + key]
                part = g[e * R:(e + 1) * R] if a_or_b == "A" else g[:, e::E]
                assert part.abs().max() > 0, f"{name}: expert {e} has no gradient in {key}"
        key_rows[i] = (gu_a.shape, gu_b.shape, d_a.shape, d_b.shape)
    assert sum(k.startswith("delta.") for k in expected) == 3 * E * len(layers)
    # Attention LoRA merges as ordinary LoRA: W + scale · B A.
    for i in range(cfg.num_hidden_layers):
        for proj in ("q_proj", "v_proj"):
            ckey = f"model.layers.{i}.self_attn.{proj}.weight"
            a = saved[f"{PREFIX}{ckey[:-len('.weight')]}.lora_A.weight"]
            b = saved[f"{PREFIX}{ckey[:-len('.weight')]}.lora_B.weight"]
            diff = (scale * (b.double() @ a.double()) - (merged_ckpt[ckey] - base_ckpt[ckey]).double()).abs().max()
            assert diff < 1e-6, (ckey, diff.item())

    # PeftModel.from_pretrained reads the adapter back: the same tensors, the same logits.
    from peft import PeftModel
    loaded = PeftModel.from_pretrained(base_model(name), directory)
    loaded.train(False)
    for n, p in loaded.named_parameters():
        if "lora_" in n:
            assert torch.equal(p.detach(), saved[saved_key(n)]), n
    with torch.no_grad():
        lout, _, _ = forward(loaded, ids, scored, cfg)
    reload_diff = (lout.logits.reshape(B * T, V) - logits).abs().max().item()
    assert reload_diff == 0.0, f"{name}: reloaded logits differ by {reload_diff}"

    # With the adapter disabled the model is the base fixture's.
    with torch.no_grad(), peft.disable_adapter():
        bout, _, _ = forward(peft, ids, scored, cfg)
    base_logits = load_file(os.path.join(GOLDEN, name + ".expected.safetensors"))["logits"]
    assert (bout.logits.reshape(B * T, V) - base_logits).abs().max() < 1e-5

    save_file({k: v.contiguous() for k, v in sorted(expected.items())}, os.path.join(directory, "expected.safetensors"),
              metadata={"format": "pt"})

    # format.json
    shapes = {}
    for k in sorted(saved):
        info = {"shape": list(saved[k].shape)}
        parts = k[len(PREFIX):].split(".")
        info["layer"] = int(parts[2])
        info["factor"] = "A" if "lora_A" in k else "B"
        if ".self_attn." in k:
            info["target"] = "self_attn." + parts[4]
            info["experts"] = 1
        else:
            info["target"] = "mlp.experts.gate_up_proj" if ".experts.base_layer." in k else "mlp.experts.down_proj"
            info["experts"] = E
        shapes[k] = info
    i0 = layers[0]
    gu_a, gu_b, d_a, d_b = key_rows[i0]
    F_, H = gu_b[0] // 2, gu_a[1]
    fmt = {
        "model": name, "peft": __import__("peft").__version__,
        "transformers": __import__("transformers").__version__, "torch": torch.__version__,
        "seed": seed, "min_router_margin": min(margin, mmargin),
        "r": R, "lora_alpha": ALPHA, "scaling": scale, "num_experts": E, "num_experts_per_tok": K,
        "hidden_size": H, "expert_intermediate_size": F_, "sparse_layers": layers,
        "router_aux_loss_coef": cfg.router_aux_loss_coef,
        "target_parameters_spelling": TARGET_PARAMETERS,
        "keys": shapes,
        "mapping": {
            "attention_keys": "base_model.model.model.layers.{i}.self_attn.{q_proj,v_proj}.lora_{A,B}.weight; "
                              "A (r, in), B (out, r), delta = scaling · B @ A (out, in), as ordinary LoRA.",
            "nesting": "Each targeted parameter gets its own lora.ParamWrapper, nested around the experts module. "
                       "'...mlp.experts.base_layer.lora_{A,B}.weight' is the INNER wrapper = gate_up_proj; "
                       "'...mlp.experts.lora_{A,B}.weight' is the OUTER wrapper = down_proj. The order follows the "
                       "experts module's parameter registration (gate_up_proj first), not target_parameters' order. "
                       "Keys use the runtime module path 'mlp.experts' for Mixtral too (never 'block_sparse_moe').",
            "shapes": f"For a parameter stacked (E, out, in): lora_A.weight (r·E, in), lora_B.weight (out, r·E). "
                      f"gate_up_proj: A ({R}·{E}, {H}), B ({2 * F_}, {R}·{E}); "
                      f"down_proj: A ({R}·{E}, {F_}), B ({H}, {R}·{E}).",
            "A_e": "A_e = lora_A.weight[e·r ..< (e+1)·r, :] (r, in): contiguous row blocks, expert-major.",
            "B_e": "B_e = lora_B.weight[:, e::E] (out, r): columns j·E + e for j = 0 ..< r, i.e. INTERLEAVED, "
                   "rank-major (PEFT reshapes B to (out, r, E) but A to (E, r, in)). Column j·E + e pairs with "
                   "row e·r + j of lora_A.",
            "delta": "delta_e = scaling · B_e @ A_e, shape (out, in) = the checkpoint's per-expert tensor "
                     "orientation (nn.Linear weight: y = x @ W^T).",
            "gate_up": "gate_up_proj's out = 2F: delta rows 0 ..< F are gate (Mixtral w1, Qwen3-MoE gate_proj), "
                       "rows F ..< 2F are up (w3, up_proj). Gate and up share A_e: "
                       "delta_gate_e = scaling · lora_B[0 ..< F, e::E] @ A_e, "
                       "delta_up_e = scaling · lora_B[F ..< 2F, e::E] @ A_e.",
            "down": "down_proj (E, H, F): delta_down_e = scaling · lora_B[:, e::E] @ lora_A[e·r ..< (e+1)·r, :] (H, F) "
                    "(Mixtral w2, Qwen3-MoE down_proj).",
            "scaling": "lora_alpha / r (lora_alpha / sqrt(r) with use_rslora), one value for all experts.",
            "forward": "While the adapter is active, every expert's weight is W_e + delta_e (a parametrization: "
                       "torch.baddbmm(W, B_e-stack, A_e-stack, alpha=scaling)); routing weights apply to the "
                       "expert output as without LoRA. The router (mlp.gate) is not adapted.",
            "grad_keys": "expected.safetensors grad.<key>: named_parameters name with '.default' removed = "
                         "the saved key; same shape as the saved tensor.",
            "delta_tensors": "expected.safetensors delta.{i}.{gate|up|down}.{e}: merge_and_unload's checkpoint "
                             "tensor minus the base checkpoint tensor, checkpoint orientation (out, in); equal to "
                             "the formula above within 1e-6 (asserted).",
            "adapter_config": "save_pretrained's adapter_config.json with base_model_name_or_path replaced by a "
                              "label and target_modules / target_parameters sorted (PEFT stores them from sets).",
        },
        "peft_behaviour_summary": PEFT_SUMMARY,
        "peft_behaviour": PEFT_CHECKS.get(name, []),
    }
    with open(os.path.join(directory, "format.json"), "w") as f:
        json.dump(fmt, f, indent=1)
        f.write("\n")
    for f in os.listdir(directory):
        os.chmod(os.path.join(directory, f), 0o644)
    os.chmod(directory, 0o755)
    print(f"{name}: loss {loss.item():.6f}, margin {min(margin, mmargin):.3g}, {len(saved)} adapter tensors, "
          f"reload diff {reload_diff} (seed {seed})", file=sys.stderr)


PEFT_CHECKS = {}
PEFT_SUMMARY = (
    "With target_parameters PEFT 0.21 (lora.ParamWrapper) raises ValueError for lora_dropout != 0, use_dora=True "
    "and lora_bias=True (also fan_in_fan_out, velora/kasa configs). use_rslora=True is accepted: the expert "
    "scaling becomes lora_alpha / sqrt(r). bias='all' / 'lora_only' are accepted and change nothing here (these "
    "models have no bias tensors; the expert LoRA factors never get a bias). The nesting (outer down_proj, inner "
    "gate_up_proj) does not depend on the order of target_parameters. 'experts.gate_up_proj' and bare "
    "'gate_up_proj' match too (suffix match); Mixtral's checkpoint spelling 'block_sparse_moe.experts.*' matches "
    "nothing (a warning when target_modules matched, NoMatchingPeftModuleError when nothing matched). "
    "PeftModel.from_pretrained(base, dir) loads the saved adapter back bit-exactly (same tensors, identical "
    "logits; asserted)."
)


def check_peft(name):
    """Step 5: what PEFT accepts with target_parameters (each on a fresh base model)."""
    cases = [
        ("lora_dropout=0.1", dict(lora_dropout=0.1)),
        ("use_dora=True", dict(use_dora=True)),
        ("use_rslora=True", dict(use_rslora=True)),
        ("bias='all'", dict(bias="all")),
        ("bias='lora_only'", dict(bias="lora_only")),
        ("lora_bias=True", dict(lora_bias=True)),
        ("target_parameters reversed", dict(target_parameters=list(reversed(TARGET_PARAMETERS)))),
        ("target_parameters=['experts.gate_up_proj', 'experts.down_proj']",
         dict(target_parameters=["experts.gate_up_proj", "experts.down_proj"])),
        ("target_parameters=['gate_up_proj', 'down_proj']", dict(target_parameters=["gate_up_proj", "down_proj"])),
        ("target_parameters=['block_sparse_moe.experts.gate_up_proj', 'block_sparse_moe.experts.down_proj']",
         dict(target_parameters=["block_sparse_moe.experts.gate_up_proj", "block_sparse_moe.experts.down_proj"])),
        ("target_modules=[] (experts only)", dict(target_modules=[])),
        ("target_modules=[], target_parameters=['block_sparse_moe.experts.gate_up_proj', "
         "'block_sparse_moe.experts.down_proj']",
         dict(target_modules=[],
              target_parameters=["block_sparse_moe.experts.gate_up_proj", "block_sparse_moe.experts.down_proj"])),
    ]
    PEFT_CHECKS[name] = [try_config(name, label, **kw) for label, kw in cases]
    for c in PEFT_CHECKS[name]:
        print(f"  {name} {c['config']}: " + (c["error"] if not c["accepted"] else
                                              json.dumps({k: v for k, v in c.items() if k not in ('config', 'accepted')})),
              file=sys.stderr)


if __name__ == "__main__":
    torch.use_deterministic_algorithms(True)
    # save_pretrained looks for the (deleted) temporary base directory; peft calls a deprecated transformers API
    warnings.filterwarnings("ignore", message="Could not find a config file")
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
    from transformers.utils import logging as hf_logging
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    os.makedirs(OUT, exist_ok=True)
    for model_name in NAMES:
        check_peft(model_name)
        make(model_name)
