#!/usr/bin/env python3
"""Golden fixture for GRPO (TRL 1.16's GRPOTrainer) on the tiny fixture model (llama_untied of
tools/make_fixtures.py) with PEFT LoRA, on fixed rollouts (no generation here): 2 prompts ×
G = 4 completions of M = 6 raw ids each (as `generate` returns them: pad id 0 after the EOS id 2;
two rows without EOS = truncated; one with EOS as its last token; one that is only the EOS).

Everything TRL does inline is replicated line for line (grpo_trainer.py line numbers cited);
the loss and its metrics come from TRL's own `GRPOTrainer._compute_loss`, called with a
stand-in `self`, and the whole case is re-run through TRL's real
`_get_per_token_logps_and_entropies` (fused LM head, TRL's left-padded layout) as a check.

  completion_mask[r, j] = 1 for j ≤ the first EOS (the EOS included), all j if no EOS (1880-1887)
  reward_r     = Σ_k w_k·R[r, k] with NaN read as 0 (nansum, 2763)
  advantage_r  = reward_r − mean(group), ÷ (std + 1e-4) unless scale_rewards "none" (2765-2787);
               std unbiased (Bessel, utils.nanstd), over the group ("group") or batch ("batch")
  coef₁ = exp(logp − old), coef₂ = clamp(coef₁, 1 − ε, 1 + ε_high)
  per-token  = −min(coef₁·A, coef₂·A) + β·kl,  kl = (e^(ref − logp) − (ref − logp) − 1)·coef₁
               (use_bias_correction_kl, default True, multiplies by coef₁; 3100-3105)
  loss: grpo  mean_rows(Σ_t m·ℓ / Σ_t m);  bnpo Σ m·ℓ / Σ m;  dr_grpo Σ m·ℓ / (B·M);
        dapo  Σ m·ℓ / num_items_in_batch (Σ m over the generation batch)  (3153-3173)

logp are the LoRA model's log-probs (adapter enabled, temperature 1) of each completion token,
computed in vkfinetune's layout: each row its prompt then its M completion ids, right-padded with
0 (Tpad = 5 + 6); token j of row r is predicted at position p_r + j − 1. Like TRL's fused head,
logp (and old, ref, entropy) are 0 where completion_mask is 0. old = logp.detach() + OFFSETS (as if
the rollout came from an earlier policy: num_iterations > 1 or steps_per_generation > grad. accum.),
ref = the same model with the adapter disabled (TRL's PEFT reference, 2727).
Single process, per_device_train_batch_size 8, gradient_accumulation_steps 1, train mode.

Writes Tests/VKFTrainTests/Fixtures/grpo_golden.safetensors:
  ids, targets              i32 (8, Tpad): vkfinetune layout; targets −100 except where a position
                            predicts a completion token with completion_mask 1
  init.<key>                the LoRA A/B (PEFT keys), the same for every case
  policy_logps, ref_logps, old_logps, completion_mask   f32 (8, M)
  case<i>.grad.<key>        dLoss/d<key> for the cases with has_gradients
and grpo_golden.json: rollouts, rewards_per_func (NaN as null), reward_weights, offsets, top-level
metrics and "cases" (settings, advantages, loss, kl, clip ratios, …).
Run with the reference venv:  $VKF_REF_VENV/bin/python tools/make_grpo_golden.py
"""
import json
import math
import os
import sys
from collections import defaultdict
from contextlib import nullcontext
from functools import partial
from types import SimpleNamespace

import torch
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_peft_fixtures import base_model, lora_model  # noqa: E402

OUT = os.path.join(HERE, "..", "Tests", "VKFTrainTests", "Fixtures")

EOS, PAD = 2, 0
G, M = 4, 6
TEMPERATURE = 1.0
PROMPTS = [[5, 17, 42], [9, 33, 61, 7, 88]]
COMPLETIONS = [  # raw rows of M ids, as `generate` returns them (pad after EOS)
    [11, 23, 2, 0, 0, 0],       # EOS at 2 → length 3
    [45, 12, 67, 31, 54, 19],   # no EOS → truncated, length 6
    [8, 2, 0, 0, 0, 0],         # length 2
    [71, 36, 14, 90, 25, 2],    # EOS last → terminated, length 6
    [2, 0, 0, 0, 0, 0],         # only the EOS → length 1
    [38, 77, 29, 2, 0, 0],      # length 4
    [60, 13, 85, 41, 3, 66],    # truncated, length 6
    [27, 94, 50, 2, 0, 0],      # length 4
]
REWARD_FUNC_NAMES = ["reward_a", "reward_b"]
NAN = float("nan")
REWARDS_PER_FUNC = [  # group 0 varies (one NaN); group 1: every combined reward is 1.0 (zero std)
    [1.0, 0.5], [0.0, 1.0], [0.25, NAN], [1.0, -0.5],
    [1.0, 0.0], [0.5, 1.0], [0.0, 2.0], [0.75, 0.5],
]
REWARD_WEIGHTS = [1.0, 0.5]
SEED_LORA, SEED_OFFSETS = 23, 99  # offsets seed chosen so that both clip sides engage
CASES = [
    dict(loss_type="grpo", scale_rewards="group", beta=0.04, epsilon=0.2, epsilon_high=0.28, has_gradients=True),
    dict(loss_type="bnpo", scale_rewards="batch", beta=0.0, epsilon=0.2, epsilon_high=0.2, has_gradients=False),
    dict(loss_type="dr_grpo", scale_rewards="none", beta=0.04, epsilon=0.2, epsilon_high=0.2, has_gradients=True),
    dict(loss_type="dapo", scale_rewards="group", beta=0.0, epsilon=0.2, epsilon_high=0.28, has_gradients=True),
    # KL without the importance-sampling factor (use_bias_correction_kl=False)
    dict(loss_type="grpo", scale_rewards="group", beta=0.04, epsilon=0.2, epsilon_high=0.28, has_gradients=True,
         use_bias_correction_kl=False),
    # mask_truncated_completions: the truncated rows leave the mask (and num_items_in_batch)
    dict(loss_type="dapo", scale_rewards="group", beta=0.04, epsilon=0.2, epsilon_high=0.28, has_gradients=True,
         mask_truncated_completions=True),
]
for _c in CASES:
    _c.setdefault("use_bias_correction_kl", True)
    _c.setdefault("mask_truncated_completions", False)


# MARK: - rollouts (TRL's inline code)

def completion_mask_rule(raw):
    """grpo_trainer.py 1880-1887 (_generate_single_turn): mask everything after the first EOS,
    then keep each row's ids up to and including it as a list."""
    completion_ids = torch.tensor(raw)
    is_eos = torch.isin(completion_ids, torch.tensor([EOS]))
    eos_idx = torch.full((is_eos.size(0),), is_eos.size(1), dtype=torch.long)
    eos_idx[is_eos.any(dim=1)] = is_eos.int().argmax(dim=1)[is_eos.any(dim=1)]
    sequence_indices = torch.arange(is_eos.size(1)).expand(is_eos.size(0), -1)
    completion_mask = (sequence_indices <= eos_idx.unsqueeze(1)).int()
    return [c[m].tolist() for c, m in zip(completion_ids, completion_mask.bool(), strict=True)]


def trl_batch(completion_ids_list, mask_truncated):
    """grpo_trainer.py 2436-2498: left-padded prompts, right-padded completions, the mask,
    mask_truncated_completions and num_items_in_batch."""
    from trl.trainer.utils import pad
    prompt_ids_list = [PROMPTS[r // G] for r in range(len(completion_ids_list))]
    prompt_ids = pad([torch.tensor(p) for p in prompt_ids_list], padding_value=PAD, padding_side="left")
    prompt_mask = pad([torch.ones(len(p), dtype=torch.long) for p in prompt_ids_list], padding_value=0,
                      padding_side="left")
    completion_ids = pad([torch.tensor(c) for c in completion_ids_list], padding_value=PAD, padding_side="right")
    completion_mask = pad([torch.ones(len(c), dtype=torch.long) for c in completion_ids_list], padding_value=0,
                          padding_side="right")
    if mask_truncated:  # 2488-2492
        is_truncated = torch.tensor([ids[-1] not in [EOS, PAD] for ids in completion_ids_list])
        completion_mask = completion_mask * (~is_truncated).unsqueeze(1).int()
    num_items_in_batch = completion_mask.sum()  # 2497-2498 (one process, no tool mask)
    return prompt_ids, prompt_mask, completion_ids, completion_mask, num_items_in_batch


def length_metrics(completion_ids_list):
    """grpo_trainer.py 2282-2310 (_generate): lengths count the kept ids (EOS included)."""
    lengths = torch.tensor([len(ids) for ids in completion_ids_list])
    is_truncated = torch.tensor([ids[-1] not in [EOS, PAD] for ids in completion_ids_list])
    term = lengths[~is_truncated]
    if len(term) == 0:
        term = torch.zeros(1)
    return {
        "completions/mean_length": lengths.float().mean().item(),
        "completions/min_length": lengths.float().min().item(),
        "completions/max_length": lengths.float().max().item(),
        "completions/clipped_ratio": is_truncated.float().mean().item(),
        "completions/mean_terminated_length": term.float().mean().item(),
        "completions/min_terminated_length": term.float().min().item(),
        "completions/max_terminated_length": term.float().max().item(),
    }, is_truncated


def advantages_and_reward_metrics(rewards_per_func, reward_weights, scale_rewards):
    """grpo_trainer.py 2759-2830, multi_objective_aggregation "sum_then_normalize" (the default)."""
    from trl.trainer.utils import nanstd
    num_generations = G
    unscorable_mask = torch.isnan(rewards_per_func).all(dim=1)
    rewards = (rewards_per_func * reward_weights.unsqueeze(0)).nansum(dim=1)
    rewards[unscorable_mask] = torch.nan
    mean_grouped_rewards = torch.nanmean(rewards.view(-1, num_generations), dim=1)
    mean_grouped_rewards = mean_grouped_rewards.repeat_interleave(num_generations, dim=0)
    if scale_rewards in ["group", "none"]:
        std_rewards = nanstd(rewards.view(-1, num_generations), dim=1)
        std_rewards = std_rewards.repeat_interleave(num_generations, dim=0)
    elif scale_rewards == "batch":
        std_rewards = nanstd(rewards).expand_as(rewards)
    else:
        raise ValueError(scale_rewards)
    advantages = rewards - mean_grouped_rewards
    if scale_rewards != "none":
        advantages = advantages / (std_rewards + 1e-4)
    is_std_zero = torch.isclose(std_rewards, torch.zeros_like(std_rewards))
    advantages = torch.nan_to_num(advantages, nan=0.0)
    metrics = {}
    for i, name in enumerate(REWARD_FUNC_NAMES):
        metrics[f"rewards/{name}/mean"] = torch.nanmean(rewards_per_func[:, i]).item()
        metrics[f"rewards/{name}/std"] = nanstd(rewards_per_func[:, i]).item()
    logged = (rewards_per_func * reward_weights.unsqueeze(0)).nansum(dim=1)
    logged[unscorable_mask] = torch.nan
    metrics["reward"] = torch.nanmean(logged).item()
    metrics["reward_std"] = nanstd(logged).item()
    metrics["frac_reward_zero_std"] = is_std_zero.float().mean().item()
    return advantages, metrics, rewards


# MARK: - log-probs

def layout(completion_ids_list):
    """vkfinetune's layout: prompt then the M raw completion ids, right-padded with 0."""
    P = max(len(p) for p in PROMPTS)
    ids = torch.full((len(COMPLETIONS), P + M), PAD, dtype=torch.long)
    targets = torch.full_like(ids, -100)
    starts = []
    for r, comp in enumerate(COMPLETIONS):
        prompt = PROMPTS[r // G]
        p = len(prompt)
        ids[r, :p + M] = torch.tensor(prompt + comp)
        starts.append(p)
        for j in range(len(completion_ids_list[r])):  # the ids the mask keeps
            targets[r, p + j - 1] = comp[j]
    return ids, targets, starts


def our_logps_and_entropies(model, ids, starts, mask):
    """Per-token log-probs and entropies of the completion tokens in vkfinetune's layout,
    0 where mask is 0 (as TRL's fused head, utils.py add_fused_lm_head)."""
    logits = model(input_ids=ids).logits.float() / TEMPERATURE
    logp = torch.log_softmax(logits, dim=-1)
    rows = torch.arange(ids.shape[0]).unsqueeze(1)
    pos = torch.tensor(starts).unsqueeze(1) + torch.arange(M).unsqueeze(0) - 1  # (B, M)
    tok = ids[rows, pos + 1]
    picked = logp[rows, pos, tok]
    entropy = -(logp.exp() * logp).sum(-1)[rows, pos]
    keep = mask.bool()
    return picked.masked_fill(~keep, 0.0), entropy.masked_fill(~keep, 0.0)


def stand_in(case, logps_fn, max_completion_length):
    """The attributes of GRPOTrainer that _compute_loss reads (one process, train mode)."""
    accelerator = SimpleNamespace(num_processes=1, is_main_process=True, autocast=nullcontext,
                                  reduce=lambda t, reduction="sum": t, gather=lambda t: t,
                                  gather_for_metrics=lambda t: t)
    ns = SimpleNamespace(
        aux_loss_enabled=False, top_entropy_quantile=1.0, off_policy_mask_threshold=None,
        importance_sampling_level="token", beta=case["beta"], loss_type=case["loss_type"],
        epsilon_low=case["epsilon"], epsilon_high=case["epsilon_high"],
        args=SimpleNamespace(use_bias_correction_kl=case["use_bias_correction_kl"], delta=None,
                             steps_per_generation=1, gradient_accumulation_steps=1, report_to=[]),
        use_vllm=False, vllm_importance_sampling_correction=True, model=SimpleNamespace(training=True),
        current_gradient_accumulation_steps=1, max_completion_length=max_completion_length,
        accelerator=accelerator, _entropy_bonus_enabled=False,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)}, state=SimpleNamespace(global_step=0))
    ns._get_per_token_logps_and_entropies = logps_fn  # None: set by the caller
    return ns


def main():
    torch.use_deterministic_algorithms(True)
    from trl import GRPOTrainer
    from trl.trainer.utils import add_fused_lm_head, use_adapter

    model, cfg, _, _ = base_model("llama_untied")
    assert max(max(p) for p in PROMPTS) < cfg.vocab_size and max(max(c) for c in COMPLETIONS) < cfg.vocab_size
    peft, named, _, _ = lora_model(model, use_rslora=False, seed=SEED_LORA)
    init = {k: p.detach().clone() for k, p in named.items()}
    # TRL patches the base model's forward (grpo_trainer.py 1068); without fused_lm_head=True the
    # forward is the original one, which our layout uses.
    add_fused_lm_head(peft.get_base_model(), temperature=TEMPERATURE, outputs=("log_probs", "entropy"))

    completion_ids_list = completion_mask_rule(COMPLETIONS)
    ids, targets, starts = layout(completion_ids_list)
    lmetrics, is_truncated = length_metrics(completion_ids_list)
    _, _, _, base_mask, _ = trl_batch(completion_ids_list, mask_truncated=False)
    assert base_mask.shape == (8, M)
    mask_f = base_mask.float()

    g = torch.Generator().manual_seed(SEED_OFFSETS)
    offsets = torch.round((torch.rand(8, M, generator=g) * 0.8 - 0.4) * 100) / 100

    with torch.no_grad():
        policy0, entropy0 = our_logps_and_entropies(peft, ids, starts, base_mask)
        with peft.disable_adapter():
            ref, _ = our_logps_and_entropies(peft, ids, starts, base_mask)
    old = (policy0 + offsets) * mask_f

    rewards_per_func = torch.tensor(REWARDS_PER_FUNC, dtype=torch.float32)
    weights = torch.tensor(REWARD_WEIGHTS, dtype=torch.float32)
    _, rmetrics, _ = advantages_and_reward_metrics(rewards_per_func, weights, "group")
    entropy_metric = ((entropy0 * mask_f).sum() / mask_f.sum()).item()

    out = {"ids": ids.int(), "targets": targets.int()}
    out.update({"init." + k: v for k, v in init.items()})
    out.update({"policy_logps": policy0, "ref_logps": ref, "old_logps": old, "completion_mask": mask_f})

    cases_meta = []
    for i, case in enumerate(CASES, start=1):
        with torch.no_grad():
            for k, p in named.items():
                p.copy_(init[k])
                p.grad = None
        advantages, cmetrics, _ = advantages_and_reward_metrics(rewards_per_func, weights, case["scale_rewards"])
        prompt_ids, prompt_mask, completion_ids, completion_mask, num_items = trl_batch(
            completion_ids_list, case["mask_truncated_completions"])
        cm = completion_mask.float()

        def ours(model_, input_ids, attention_mask, logits_to_keep, compute_entropy=False, **_):
            lp, ent = our_logps_and_entropies(model_, ids, starts, completion_mask)
            return lp, ent, None

        inputs = {"prompt_ids": prompt_ids, "prompt_mask": prompt_mask, "completion_ids": completion_ids,
                  "completion_mask": completion_mask, "advantages": advantages, "num_items_in_batch": num_items,
                  "old_per_token_logps": old * cm}
        if case["beta"] != 0.0:
            inputs["ref_per_token_logps"] = ref * cm
        ns = stand_in(case, ours, M)
        loss = GRPOTrainer._compute_loss(ns, peft, inputs)
        if case["has_gradients"]:
            loss.backward()
            grads = {k: p.grad.detach().clone() for k, p in named.items()}
            out.update({f"case{i}.grad." + k: v for k, v in grads.items()})
        m = {k: v[-1] for k, v in ns._metrics["train"].items()}

        # Check: the same case through TRL's own log-prob path (fused LM head, left-padded prompts).
        ns_trl = stand_in(case, None, M)
        ns_trl._get_per_token_logps_and_entropies = partial(GRPOTrainer._get_per_token_logps_and_entropies, ns_trl)
        trl_inputs = dict(inputs)
        if case["beta"] != 0.0:
            with torch.no_grad(), use_adapter(peft, adapter_name=None):
                trl_ref, _, _ = ns_trl._get_per_token_logps_and_entropies(
                    peft, torch.cat([prompt_ids, completion_ids], 1), torch.cat([prompt_mask, completion_mask], 1), M)
            assert torch.allclose(trl_ref, ref * cm, atol=2e-5), (trl_ref - ref * cm).abs().max()
            trl_inputs["ref_per_token_logps"] = trl_ref
        trl_loss = GRPOTrainer._compute_loss(ns_trl, peft, trl_inputs)
        assert math.isclose(trl_loss.item(), loss.item(), rel_tol=1e-4, abs_tol=1e-6), (trl_loss.item(), loss.item())
        if case["has_gradients"]:
            tg = torch.autograd.grad(trl_loss, [named[k] for k in grads])
            for (k, v), t in zip(grads.items(), tg):
                assert torch.allclose(v, t, rtol=1e-3, atol=1e-6), (k, (v - t).abs().max())

        coef = torch.exp((policy0 - old) * cm)
        adv = advantages.unsqueeze(1)
        # No ratio within 1e-3 of a clip bound, so float rounding cannot flip a clip decision.
        for bound in (1 - case["epsilon"], 1 + case["epsilon_high"]):
            assert ((coef - bound).abs()[cm.bool()] > 1e-3).all(), bound
        n_low = int((((coef < 1 - case["epsilon"]) & (adv < 0)) * cm.bool()).sum())
        n_high = int((((coef > 1 + case["epsilon_high"]) & (adv > 0)) * cm.bool()).sum())
        print(f"case{i} {case['loss_type']:8s} {case['scale_rewards']:5s} β={case['beta']}: loss "
              f"{loss.item():+.6f} (TRL layout {trl_loss.item():+.6f}), clipped low {n_low} high {n_high} "
              f"of {int(cm.sum())}", file=sys.stderr)
        meta = dict(case)
        meta.update({
            "advantages": advantages.tolist(), "loss": loss.item(),
            "kl": m.get("kl"), "entropy": m["entropy"],
            "clip_ratio_low": m["clip_ratio/low_mean"], "clip_ratio_high": m["clip_ratio/high_mean"],
            "clip_ratio_region": m["clip_ratio/region_mean"],
            "clip_ratio_low_min": m["clip_ratio/low_min"], "clip_ratio_high_max": m["clip_ratio/high_max"],
            "clipped_tokens_low": n_low, "clipped_tokens_high": n_high,
            "num_items_in_batch": int(num_items), "frac_reward_zero_std": cmetrics["frac_reward_zero_std"],
            "delta": None, "importance_sampling_level": "token", "temperature": TEMPERATURE,
        })
        cases_meta.append(meta)

    assert any(c["clipped_tokens_low"] > 0 and c["clipped_tokens_high"] > 0 for c in cases_meta)
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT, "grpo_golden.safetensors"))

    def clean(x):  # NaN → null
        if isinstance(x, float) and math.isnan(x):
            return None
        if isinstance(x, list):
            return [clean(v) for v in x]
        if isinstance(x, dict):
            return {k: clean(v) for k, v in x.items()}
        return x

    import trl
    meta = {
        "prompts": PROMPTS, "prompt_of_row": [r // G for r in range(8)], "completions": COMPLETIONS,
        "completion_lengths": [len(c) for c in completion_ids_list], "truncated": is_truncated.tolist(),
        "eos_token_id": EOS, "pad_token_id": PAD, "num_generations": G, "max_completion_length": M,
        "seq_length": ids.shape[1], "temperature": TEMPERATURE,
        "reward_func_names": REWARD_FUNC_NAMES, "rewards_per_func": REWARDS_PER_FUNC,
        "reward_weights": REWARD_WEIGHTS, "old_logp_offsets": offsets.tolist(),
        "metrics": {**rmetrics, **lmetrics, "entropy": entropy_metric},
        "cases": cases_meta, "lora_seed": SEED_LORA,
        "trl": trl.__version__, "torch": torch.__version__,
    }
    with open(os.path.join(OUT, "grpo_golden.json"), "w") as f:
        json.dump(clean(meta), f, indent=1)
    print(json.dumps(clean(meta["metrics"])), file=sys.stderr)


if __name__ == "__main__":
    main()
