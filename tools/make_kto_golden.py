#!/usr/bin/env python3
"""Golden fixture for KTO (TRL 1.16's KTOTrainer, trl/trainer/kto_trainer.py) on the tiny fixture
model (llama_untied of tools/make_fixtures.py) with PEFT LoRA, on a fixed unpaired batch of
N = 6 examples (prompt ids, completion ids, label; no tokenizer, no generation).

The loss and its metrics come from TRL's own `KTOTrainer._compute_loss` (there is no separate
`kto_loss` in 1.16: the loss is inline there, 1442-1548), called with a stand-in `self`; the batch
is TRL's text collator's (`DataCollatorForUnpairedPreference`, 161-206), the KL completions are
built as `_prepare_dataset` builds them (1150-1151). kto_trainer.py line numbers cited.

  logp_i   = Σ_{completion tokens j} log π(c_ij | x_i, c_i,<j)   (summed, not averaged; 1400-1401)
  KL rows  = completions rotated by +1 within the batch (1151): row i pairs prompt x_i with the
             completion of example i − 1 (row 0 with example N − 1's)
  kl       = clamp_min(mean_i(logpKL_i − refKL_i), 0), detached (1443-1444; policy KL log-probs are
             also taken under no_grad, 1364); gathered across processes (gather_for_metrics).mean()
  r_i      = logp_i − ref_i
  kto:               desirable  ℓ = 1 − σ(β(r − kl))       undesirable  ℓ = 1 − σ(β(kl − r))   (1453, 1470)
  apo_zero_unpaired: desirable  ℓ = 1 − σ(β r)             undesirable  ℓ = σ(β r)             (1457, 1472)
                     (no KL rows, kl = 0: calculate_KL = loss_type != "apo_zero_unpaired", 815)
  loss     = nanmean(cat(w_d·ℓ_desirable, w_u·ℓ_undesirable))  = (w_d Σ_d ℓ + w_u Σ_u ℓ) / N   (1479-1482, 1548)

ref = the same PEFT model with the adapter disabled (TRL's `use_adapter(model, None)` when the
trainer wrapped the model from a `peft_config`, 1427-1433). Everything f32, CPU, deterministic.

Log-probs are computed in vkfinetune's layout: each row its prompt then its completion,
right-padded with 0, no attention mask; token j of the completion is predicted at position
p + j − 1. This is exactly the collator's layout (prompt_ids + completion_ids, right-padded), so
the main run uses a plain (full-logits) head with the fused head's outputs, and every case is
re-run through TRL's real fused LM head (`add_fused_lm_head`) with the collator's attention mask
as a check (loss, metrics, gradients).

Writes Tests/VKFTrainTests/Fixtures/kto_golden.safetensors:
  ids, targets            i32 (6, T): vkfinetune layout; targets −100 except where a position
                          predicts a completion token (the target is that token)
  kl_ids, kl_targets      i32 (6, Tk): the same for the KL (mismatched) rows
  init.<key>              the LoRA A/B (PEFT keys), the same for every case
  policy_logps, reference_logps, kl_policy_logps, kl_reference_logps   f32 (6): summed log-probs
  case<i>.grad.<key>      dLoss/d<key> for the cases with has_gradients
and kto_golden.json: the batch, the KL pairing, and "cases" (settings, loss, kl, TRL's metrics).
Run with the reference venv:  $VKF_REF_VENV/bin/python tools/make_kto_golden.py
"""
import json
import math
import os
import sys
import types
from collections import defaultdict
from types import SimpleNamespace

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_peft_fixtures import base_model, lora_model  # noqa: E402

OUT = os.path.join(HERE, "..", "Tests", "VKFTrainTests", "Fixtures")

PAD = 0
PROMPTS = [[5, 17, 42], [9, 33], [61, 7, 88, 24, 50], [12, 70, 3, 45], [81, 29], [36, 64, 19, 8, 77]]
COMPLETIONS = [[23, 11, 56], [40, 87], [14, 66, 31, 90, 58], [72, 4, 39, 27], [52, 18, 83, 6, 47], [25, 60]]
LABELS = [True, False, True, True, False, False]
N = len(PROMPTS)
SEED_LORA = 31  # chosen so that the raw KL estimate is positive (the clamp does not engage)
CASES = [
    dict(loss_type="kto", beta=0.1, desirable_weight=1.0, undesirable_weight=1.0, has_gradients=True),
    dict(loss_type="kto", beta=0.5, desirable_weight=1.33, undesirable_weight=0.7, has_gradients=True),
    dict(loss_type="apo_zero_unpaired", beta=0.1, desirable_weight=1.0, undesirable_weight=1.0, has_gradients=False),
]


def kl_completion_ids(completion_ids):
    """kto_trainer.py 1150-1151 (`add_kl_completion_ids`, batched with batch_size =
    per_device_train_batch_size = N): rotate the completions by +1 within the batch."""
    return [completion_ids[-1]] + completion_ids[:-1]


# MARK: - layout

def layout(prompts, completions):
    """vkfinetune's layout: prompt then completion, right-padded with 0; targets −100 except at
    position p + j − 1, whose target is completion token j."""
    T = max(len(p) + len(c) for p, c in zip(prompts, completions))
    ids = torch.full((len(prompts), T), PAD, dtype=torch.long)
    targets = torch.full_like(ids, -100)
    for r, (p, c) in enumerate(zip(prompts, completions)):
        ids[r, :len(p) + len(c)] = torch.tensor(p + c)
        for j, tok in enumerate(c):
            targets[r, len(p) + j - 1] = tok
    return ids, targets


def plain_head(base):
    """Patch `base.forward` like TRL's add_fused_lm_head (utils.py 1548-1698) with the same
    outputs, but computed from the model's own full logits (no chunking) on `input_ids` alone
    (right-padded, no attention mask: vkfinetune's layout)."""
    original_forward = base.forward

    def forward(self, input_ids=None, attention_mask=None, labels=None, fused_lm_head=False, **kwargs):
        if not fused_lm_head:
            return original_forward(input_ids=input_ids, attention_mask=attention_mask, labels=labels, **kwargs)
        logits = original_forward(input_ids=input_ids, use_cache=False).logits.float()[:, :-1]
        shifted = labels[:, 1:]
        mask = shifted != -100
        logp = torch.log_softmax(logits, dim=-1)
        picked = torch.gather(logp, 2, shifted.clamp(min=0).unsqueeze(-1)).squeeze(-1).masked_fill(~mask, 0.0)
        entropy = (-(logp.exp() * logp).sum(-1)).masked_fill(~mask, 0.0)
        mean_logits = logits.detach().mean(-1).masked_fill(~mask, 0.0)
        return SimpleNamespace(log_probs=picked, entropy=entropy, mean_logits=mean_logits, label_mask=mask)

    base.forward = types.MethodType(forward, base)
    return original_forward


# MARK: - TRL

def trl_batch(with_kl):
    """TRL's text collator (kto_trainer.py 161-206) on the prepared examples."""
    from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference
    examples = [{"prompt_ids": p, "completion_ids": c, "label": lab} for p, c, lab in zip(PROMPTS, COMPLETIONS, LABELS)]
    if with_kl:
        for e, kc in zip(examples, kl_completion_ids(COMPLETIONS)):
            e["KL_completion_ids"] = kc
    collator = DataCollatorForUnpairedPreference(pad_token_id=PAD, max_length=1024)  # KTOConfig.max_length 1024
    return collator(examples)


def stand_in(case, model):
    """The attributes of KTOTrainer that _compute_loss / _compute_kl_logps read (one process,
    train mode, PEFT model wrapped from a peft_config: ref_model None, no "ref" adapter)."""
    from trl import KTOTrainer
    accelerator = SimpleNamespace(device=torch.device("cpu"), gather_for_metrics=lambda t: t,
                                  unwrap_model=lambda m: m)
    ns = SimpleNamespace(
        model=model, ref_model=None, accelerator=accelerator, args=SimpleNamespace(gradient_checkpointing_kwargs=None),
        beta=case["beta"], loss_type=case["loss_type"], desirable_weight=case["desirable_weight"],
        undesirable_weight=case["undesirable_weight"], calculate_KL=case["loss_type"] not in ["apo_zero_unpaired"],
        precompute_ref_logps=False, aux_loss_enabled=False, router_aux_loss_coef=0.0,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)}, _total_train_tokens=0, _tp_size=1)
    ns._compute_kl_logps = types.MethodType(KTOTrainer._compute_kl_logps, ns)
    return ns


def run_case(case, peft):
    from trl import KTOTrainer
    ns = stand_in(case, peft)
    loss = KTOTrainer._compute_loss(ns, peft, trl_batch(ns.calculate_KL), return_outputs=False)
    return loss, {k: v[-1] for k, v in ns._metrics["train"].items()}


def summed_logps(peft, ids, targets, adapter):
    """Σ over the completion tokens of log_softmax(logits at p + j − 1)[c_j], vkfinetune's layout."""
    from trl.trainer.utils import use_adapter
    with torch.no_grad(), use_adapter(peft, adapter_name="default" if adapter else None):
        logits = peft(input_ids=ids).logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    mask = targets != -100
    picked = torch.gather(logp, 2, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1)


def main():
    torch.use_deterministic_algorithms(True)
    import trl
    from trl.trainer.utils import add_fused_lm_head

    assert trl.__version__ == "1.16.0", trl.__version__
    model, cfg, _, _ = base_model("llama_untied")
    assert all(3 <= t <= 90 < cfg.vocab_size for row in PROMPTS + COMPLETIONS for t in row)
    assert all(2 <= len(p) <= 5 for p in PROMPTS) and all(2 <= len(c) <= 5 for c in COMPLETIONS)
    peft, named, _, _ = lora_model(model, use_rslora=False, seed=SEED_LORA)
    peft.train(True)  # KTOTrainer logs under "train"; dropout is 0 everywhere (LoRA 0.0, attention 0.0)
    init = {k: p.detach().clone() for k, p in named.items()}
    base = peft.get_base_model()
    fused_forward = base.forward

    kl_completions = kl_completion_ids(COMPLETIONS)
    kl_source = [(i - 1) % N for i in range(N)]
    assert all(kl_completions[i] == COMPLETIONS[kl_source[i]] for i in range(N))
    ids, targets = layout(PROMPTS, COMPLETIONS)
    kl_ids, kl_targets = layout(PROMPTS, kl_completions)

    # The collator's input_ids / completion_mask are vkfinetune's layout (pad id 0).
    b = trl_batch(True)
    assert torch.equal(b["input_ids"], ids) and torch.equal(b["KL_input_ids"], kl_ids)
    assert torch.equal(b["input_ids"].masked_fill(b["completion_mask"] == 0, -100)[:, 1:], targets[:, :-1])
    assert torch.equal(b["KL_input_ids"].masked_fill(b["KL_completion_mask"] == 0, -100)[:, 1:], kl_targets[:, :-1])

    policy = summed_logps(peft, ids, targets, True)
    reference = summed_logps(peft, ids, targets, False)
    kl_policy = summed_logps(peft, kl_ids, kl_targets, True)
    kl_reference = summed_logps(peft, kl_ids, kl_targets, False)
    kl_raw = (kl_policy - kl_reference).mean().item()
    assert kl_raw > 1e-3, kl_raw  # the fixture exercises an unclamped KL

    out = {"ids": ids.int(), "targets": targets.int(), "kl_ids": kl_ids.int(), "kl_targets": kl_targets.int()}
    out.update({"init." + k: v for k, v in init.items()})
    out.update({"policy_logps": policy, "reference_logps": reference,
                "kl_policy_logps": kl_policy, "kl_reference_logps": kl_reference})

    cases_meta = []
    for i, case in enumerate(CASES, start=1):
        # Main run: plain head (vkfinetune's layout, no attention mask).
        plain_head(base)
        for p in named.values():
            p.grad = None
        loss, metrics = run_case(case, peft)
        if case["has_gradients"]:
            loss.backward()
            grads = {k: p.grad.detach().clone() for k, p in named.items()}
            out.update({f"case{i}.grad." + k: v for k, v in grads.items()})
        base.forward = fused_forward

        # Independent replica of the loss from the summed log-probs (1442-1482, 1548).
        beta, wd, wu = case["beta"], case["desirable_weight"], case["undesirable_weight"]
        lab = torch.tensor(LABELS)
        r = (policy - reference).double()
        kl = max(kl_raw, 0.0) if case["loss_type"] == "kto" else 0.0
        if case["loss_type"] == "kto":
            ld, lu = 1 - torch.sigmoid(beta * (r[lab] - kl)), 1 - torch.sigmoid(beta * (kl - r[~lab]))
        else:
            ld, lu = 1 - torch.sigmoid(beta * r[lab]), torch.sigmoid(beta * r[~lab])
        replica = ((wd * ld.sum() + wu * lu.sum()) / N).item()
        assert math.isclose(replica, loss.item(), rel_tol=1e-5, abs_tol=1e-7), (replica, loss.item())
        assert math.isclose(metrics["kl"], kl, rel_tol=1e-5, abs_tol=1e-7), (metrics["kl"], kl)

        # Check: the same case through TRL's real fused LM head (add_fused_lm_head, as 967-970).
        add_fused_lm_head(base, outputs=("log_probs", "entropy", "mean_logits"))
        trl_loss, trl_metrics = run_case(case, peft)
        base.forward = fused_forward
        assert math.isclose(trl_loss.item(), loss.item(), rel_tol=1e-5, abs_tol=1e-7), (trl_loss.item(), loss.item())
        assert set(trl_metrics) == set(metrics), (sorted(trl_metrics), sorted(metrics))
        for k, v in metrics.items():
            assert math.isclose(trl_metrics[k], v, rel_tol=1e-4, abs_tol=1e-6), (k, trl_metrics[k], v)
        if case["has_gradients"]:
            tg = torch.autograd.grad(trl_loss, [named[k] for k in grads])
            for (k, v), t in zip(grads.items(), tg):
                assert torch.allclose(v, t, rtol=1e-4, atol=1e-7), (k, (v - t).abs().max())

        print(f"case{i} {case['loss_type']:17s} β={beta} w_d={wd} w_u={wu}: loss {loss.item():.8f} "
              f"(TRL fused head {trl_loss.item():.8f}), kl {metrics['kl']:.8f}", file=sys.stderr)
        meta = dict(case)
        meta.update({"loss": loss.item(), "kl": metrics["kl"], "metrics": dict(sorted(metrics.items()))})
        cases_meta.append(meta)

    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT, "kto_golden.safetensors"))
    meta = {
        "prompts": PROMPTS, "completions": COMPLETIONS, "labels": LABELS,
        "kl_completions": kl_completions, "kl_completion_source": kl_source,
        "kl_pairing": "KL row i = prompt i + completion of example (i - 1) mod N (TRL rotates completions by +1)",
        "seq_length": ids.shape[1], "kl_seq_length": kl_ids.shape[1], "pad_token_id": PAD,
        "kl_raw": kl_raw, "lora_seed": SEED_LORA, "reference": "adapter disabled",
        "cases": cases_meta, "trl": trl.__version__, "torch": torch.__version__,
    }
    with open(os.path.join(OUT, "kto_golden.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
