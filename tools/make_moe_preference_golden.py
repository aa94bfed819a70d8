#!/usr/bin/env python3
"""Golden fixtures for DPO on a mixture-of-experts model with the load-balancing loss, as TRL's
DPOTrainer computes it: the tiny Mixtral of tools/make_moe_fixtures.py (4 experts, top-2,
router_aux_loss_coef 0.5) with PEFT LoRA on q/k/v/o, the reference = the same model with the
adapter disabled, and

    loss = mean over pairs of −log σ(β·Δ) + router_aux_loss_coef · aux

where aux is `outputs.aux_loss` of the policy forward over the concatenated chosen/rejected
rows with their attention mask (transformers' load_balancing_loss_func: padding uncounted) —
TRL 1.x `DPOTrainer._compute_loss` with `aux_loss_enabled`. Under gradient accumulation TRL
adds each micro-batch's loss (its own aux included) / accumulation steps.

Writes Tests/VKFTrainTests/Fixtures/moe_preference_golden.safetensors:
  ids, targets        i32 (4, T): chosen₀, rejected₀, chosen₁, rejected₁; pad id 0 at the
                      ends of rows (targets −100); targets are the answers only
  init.<key>          LoRA A/B before the step (PEFT keys)
  whole.loss, whole.aux, whole.dpo         f32 (1): the 2-pair batch as one micro-batch
  whole.grad.<key>
  accum.loss, accum.grad.<key>             two micro-batches of one pair (GA 2)
and moe_preference_golden.json (beta, coefficient, seq_length, lora).
The seed is advanced until every real token's 2nd and 3rd router logits differ by ≥ 1e-2 in
the reference and the policy forwards (the top-2 choice cannot flip in another f32 order).
Run with the reference venv:  $VKF_REF_VENV/bin/python tools/make_moe_preference_golden.py
"""
import json
import os
import shutil
import sys
import tempfile

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
GOLDEN = os.path.join(HERE, "..", "Tests", "VKFModelTests", "Fixtures", "golden")
OUT = os.path.join(HERE, "..", "Tests", "VKFTrainTests", "Fixtures")
T = 10
PAIRS = [  # (prompt length, chosen length, rejected length)
    (3, 4, 2),
    (2, 5, 7),
]
BETA = 0.1
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj"]
ADAPTER_INIT_STD = 0.05
MIN_MARGIN = 1e-2


def base_model():
    from transformers import MixtralForCausalLM
    tmp = tempfile.mkdtemp()
    shutil.copy(os.path.join(GOLDEN, "mixtral.config.json"), os.path.join(tmp, "config.json"))
    shutil.copy(os.path.join(GOLDEN, "mixtral.weights.safetensors"), os.path.join(tmp, "model.safetensors"))
    model = MixtralForCausalLM.from_pretrained(tmp, dtype=torch.float32, attn_implementation="eager")
    shutil.rmtree(tmp)
    model.train(False)
    return model


def batch(vocab, g):
    ids = torch.zeros(2 * len(PAIRS), T, dtype=torch.long)
    targets = torch.full((2 * len(PAIRS), T), -100, dtype=torch.long)
    mask = torch.zeros(2 * len(PAIRS), T, dtype=torch.long)
    for i, (p, c, r) in enumerate(PAIRS):
        prompt = torch.randint(1, vocab, (p,), generator=g)
        for row, a in ((2 * i, c), (2 * i + 1, r)):
            seq = torch.cat([prompt, torch.randint(1, vocab, (a,), generator=g)])
            ids[row, :len(seq)] = seq
            mask[row, :len(seq)] = 1
            for t in range(p - 1, p + a - 1):
                targets[row, t] = seq[t + 1]
    return ids, targets, mask


def forward(model, ids, targets, mask):
    """Summed answer log-probs per row, the aux loss and the smallest routing margin."""
    out = model(input_ids=ids, attention_mask=mask, output_router_logits=True)
    logp = torch.log_softmax(out.logits.float(), dim=-1)
    keep = targets != -100
    picked = torch.gather(logp, 2, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    real = mask.reshape(-1).bool()
    margin = min((r.detach().sort(dim=-1, descending=True).values[real][:, 1]
                  - r.detach().sort(dim=-1, descending=True).values[real][:, 2]).min().item()
                 for r in out.router_logits)
    return (picked * keep).sum(-1), out.aux_loss, margin


def dpo(peft, ids, targets, mask, coef):
    with torch.no_grad(), peft.disable_adapter():
        ref, _, ref_margin = forward(peft, ids, targets, mask)
    pol, aux, margin = forward(peft, ids, targets, mask)
    delta = (pol[0::2] - ref[0::2]) - (pol[1::2] - ref[1::2])
    d = -F.logsigmoid(BETA * delta).mean()
    return d + coef * aux, d, aux, min(margin, ref_margin)


def main():
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    torch.use_deterministic_algorithms(True)
    model = base_model()
    coef = model.config.router_aux_loss_coef
    assert coef == 0.5 and model.config.num_experts_per_tok == 2
    peft = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS,
                                            bias="none", task_type="CAUSAL_LM"))
    named = {n.replace(".default.", "."): p for n, p in peft.named_parameters() if p.requires_grad}
    assert set(named) == set(get_peft_model_state_dict(peft))
    for attempt in range(200):
        g = torch.Generator().manual_seed(31 + attempt)
        with torch.no_grad():
            for p in named.values():
                p.copy_(ADAPTER_INIT_STD * torch.randn(p.shape, generator=g))
        ids, targets, mask = batch(model.config.vocab_size, g)
        peft.zero_grad(set_to_none=True)
        loss, d, aux, margin = dpo(peft, ids, targets, mask, coef)
        if margin >= MIN_MARGIN:
            break
    else:
        sys.exit(f"no seed gave a routing margin ≥ {MIN_MARGIN}")
    out = {"ids": ids.int(), "targets": targets.int()}
    for k, p in named.items():
        out["init." + k] = p.detach().clone()
    loss.backward()
    out["whole.loss"], out["whole.dpo"], out["whole.aux"] = (x.detach().reshape(1) for x in (loss, d, aux))
    for k, p in named.items():
        out["whole.grad." + k] = p.grad.detach().clone()
    # Gradient accumulation: one pair per micro-batch, each loss / 2 (TRL's Trainer).
    peft.zero_grad(set_to_none=True)
    total = 0.0
    for rows in (slice(0, 2), slice(2, 4)):
        l, _, _, m = dpo(peft, ids[rows], targets[rows], mask[rows], coef)
        assert m >= MIN_MARGIN
        (l / 2).backward()
        total += l.item() / 2
    out["accum.loss"] = torch.tensor([total])
    for k, p in named.items():
        out["accum.grad." + k] = p.grad.detach().clone()
    meta = {"beta": BETA, "router_aux_loss_coef": coef, "seq_length": T, "pairs": PAIRS, "pad_id": 0,
            "lora": {"r": 4, "lora_alpha": 8, "target_modules": TARGETS}, "seed": 31 + attempt,
            "torch": torch.__version__}
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT, "moe_preference_golden.safetensors"))
    with open(os.path.join(OUT, "moe_preference_golden.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print(f"loss {loss.item():.6f} = dpo {d.item():.6f} + {coef}·aux {aux.item():.6f}; accumulated {total:.6f}; "
          f"margin {margin:.3g} (seed {31 + attempt})", file=sys.stderr)


if __name__ == "__main__":
    main()
