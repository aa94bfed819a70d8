#!/usr/bin/env python3
"""Golden fixtures for preference tuning on the tiny fixture model (llama_untied of
tools/make_fixtures.py): one DPO step per loss type with PEFT LoRA (reference = the same
model with the adapter disabled, as TRL does for PEFT models), and one reward-model step
with transformers' LlamaForSequenceClassification + PEFT LoRA (score in modules_to_save).

Writes Tests/VKFTrainTests/Fixtures/preference_golden.safetensors:
  ids, targets            i32 (4, T): rows chosen₀, rejected₀, chosen₁, rejected₁; padding id 0
                          at the end of rows with target −100; targets are the answer only
  init.<key>              LoRA A/B before the step (PEFT keys), shared by every case
  <case>.loss             f32 (1): the batch's mean loss (+ α·NLL for rpo)
  <case>.policy_logps, <case>.reference_logps   f32 (4): summed answer log-probs per row
  <case>.grad.<key>       dL/d<key>
  reward.init_score       f32 (1, C): score.weight before the step
  reward.scores           f32 (4): transformers' scores (last non-pad token, pad_token_id 0)
  reward.loss, reward.grad.<key> (LoRA keys and base_model.model.score.weight)
and preference_golden.json with each case's settings.
Run with the reference venv:  $VKF_REF_VENV/bin/python tools/make_preference_golden.py
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_fixtures import COMMON, CONFIGS  # noqa: E402
from make_peft_fixtures import base_model, lora_model, peft_key, TARGETS, ADAPTER_INIT_STD  # noqa: E402

OUT = os.path.join(HERE, "..", "Tests", "VKFTrainTests", "Fixtures")
T = 11
PAIRS = [  # (prompt length, chosen length, rejected length)
    (4, 5, 3),
    (3, 4, 7),
]
CASES = [
    dict(name="sigmoid", type="sigmoid", beta=0.1, label_smoothing=0.0, rpo_alpha=None),
    dict(name="sigmoid_rpo", type="sigmoid", beta=0.5, label_smoothing=0.0, rpo_alpha=0.5),
    dict(name="hinge", type="hinge", beta=2.0, label_smoothing=0.0, rpo_alpha=None),
    dict(name="ipo", type="ipo", beta=0.1, label_smoothing=0.0, rpo_alpha=None),
    dict(name="robust", type="robust", beta=0.3, label_smoothing=0.1, rpo_alpha=None),
]
MARGIN = 0.25


def batch(vocab):
    g = torch.Generator().manual_seed(11)
    ids = torch.zeros(2 * len(PAIRS), T, dtype=torch.long)
    targets = torch.full((2 * len(PAIRS), T), -100, dtype=torch.long)
    for i, (p, c, r) in enumerate(PAIRS):
        prompt = torch.randint(1, vocab, (p,), generator=g)
        for row, a in ((2 * i, c), (2 * i + 1, r)):
            answer = torch.randint(1, vocab, (a,), generator=g)
            seq = torch.cat([prompt, answer])
            ids[row, :len(seq)] = seq
            for t in range(p - 1, p + a - 1):
                targets[row, t] = seq[t + 1]
    return ids, targets


def row_logps(model, ids, targets):
    logits = model(input_ids=ids).logits
    logp = torch.log_softmax(logits.float(), dim=-1)
    mask = targets != -100
    picked = torch.gather(logp, 2, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * mask).sum(-1), mask.sum(-1)


def dpo_loss(case, pol, ref, counts):
    beta, eps = case["beta"], case["label_smoothing"]
    pc, pr, rc, rr = pol[0::2], pol[1::2], ref[0::2], ref[1::2]
    chosen, rejected = pc - rc, pr - rr
    delta = chosen - rejected
    kind = case["type"]
    if kind == "sigmoid":
        loss = -F.logsigmoid(beta * delta) * (1 - eps) - F.logsigmoid(-beta * delta) * eps
    elif kind == "hinge":
        loss = torch.relu(1 - beta * delta)
    elif kind == "ipo":
        d = chosen / counts[0::2].clamp(min=1) - rejected / counts[1::2].clamp(min=1)
        loss = (d - 1 / (2 * beta)) ** 2
    elif kind == "robust":
        loss = (-(1 - eps) * F.logsigmoid(beta * delta) + eps * F.logsigmoid(-beta * delta)) / (1 - 2 * eps)
    loss = loss.mean()
    if case["rpo_alpha"]:
        loss = loss + case["rpo_alpha"] * (-pc.sum() / counts[0::2].sum())
    return loss


def main():
    torch.use_deterministic_algorithms(True)
    out, meta = {}, {"cases": CASES, "margin": MARGIN, "pairs": PAIRS, "seq_length": T, "pad_id": 0}
    model, cfg, _, _ = base_model("llama_untied")
    ids, targets = batch(cfg.vocab_size)
    out["ids"], out["targets"] = ids.int(), targets.int()
    peft, named, config, scaling = lora_model(model, use_rslora=False, seed=21)
    for k, p in named.items():
        out["init." + k] = p.detach().clone()
    for case in CASES:
        peft.zero_grad(set_to_none=True)
        with torch.no_grad(), peft.disable_adapter():
            ref, counts = row_logps(peft, ids, targets)
        pol, counts = row_logps(peft, ids, targets)
        loss = dpo_loss(case, pol, ref, counts)
        loss.backward()
        n = case["name"]
        out[n + ".loss"] = loss.detach().reshape(1)
        out[n + ".policy_logps"] = pol.detach()
        out[n + ".reference_logps"] = ref.detach()
        for k, p in named.items():
            out[n + ".grad." + k] = p.grad.detach().clone()
    # Reward model: the same base weights in LlamaForSequenceClassification, pad id 0.
    from transformers import LlamaConfig, LlamaForSequenceClassification
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file
    _, _, extra, _ = CONFIGS["llama_untied"]
    rcfg = LlamaConfig(**COMMON, **extra, num_labels=1, pad_token_id=0)
    rm = LlamaForSequenceClassification(rcfg).float()
    state = load_file(os.path.join(HERE, "..", "Tests", "VKFModelTests", "Fixtures", "golden",
                                   "llama_untied.weights.safetensors"))
    missing, unexpected = rm.load_state_dict(state, strict=False)
    assert missing == ["score.weight"] and unexpected == ["lm_head.weight"], (missing, unexpected)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        rm.score.weight.copy_(0.02 * torch.randn(rm.score.weight.shape, generator=g))
    out["reward.init_score"] = rm.score.weight.detach().clone()
    rm.train(False)
    prm = get_peft_model(rm, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS,
                                        task_type="SEQ_CLS"))
    rnamed = {}
    with torch.no_grad():
        for pname, p in prm.named_parameters():
            if ".lora_A." in pname or ".lora_B." in pname:
                key = peft_key(pname)
                p.copy_(out["init." + key])
                rnamed[key] = p
            elif "score" in pname and p.requires_grad:
                rnamed["base_model.model.score.weight"] = p
    assert "base_model.model.score.weight" in rnamed
    scores = prm(input_ids=ids).logits.squeeze(-1)
    loss = -F.logsigmoid(scores[0::2] - scores[1::2] - MARGIN).mean()
    loss.backward()
    out["reward.scores"] = scores.detach()
    out["reward.loss"] = loss.detach().reshape(1)
    for k, p in rnamed.items():
        out["reward.grad." + k] = p.grad.detach().clone()
    meta["lora"] = dict(r=config.r, lora_alpha=config.lora_alpha, scaling=scaling)
    meta["torch"] = torch.__version__
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT, "preference_golden.safetensors"))
    with open(os.path.join(OUT, "preference_golden.json"), "w") as f:
        json.dump(meta, f, indent=1)
    print("wrote preference_golden.* with", len(out), "tensors")


if __name__ == "__main__":
    main()
