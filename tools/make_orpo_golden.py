#!/usr/bin/env python3
"""Golden fixture for ORPO (TRL's ORPOTrainer) on the tiny fixture model (llama_untied of
tools/make_fixtures.py) with PEFT LoRA, on the batch of tools/make_preference_golden.py:

    loss = NLL − mean_pairs β·log σ(lo),  lo = (a_c − a_r) − (log(1 − e^a_c) − log(1 − e^a_r))

with a the answer's length-averaged log-prob (`get_batch_logps(…, average_log_prob=True)`) and
NLL the cross-entropy over every real token of the chosen rows, prompt included (TRL:
"orpo chosen nll loss is computed over the full prompt and response"; padding id 0 ends rows).

Writes Tests/VKFTrainTests/Fixtures/orpo_golden.safetensors:
  ids, targets         as preference_golden (targets: the answers only)
  init.<key>           the LoRA A/B before the step (PEFT keys)
  loss, nll            f32 (1)
  logps                f32 (4): the rows' averaged answer log-probs
  log_odds             f32 (2): per pair
  grad.<key>           dL/d<key>
and orpo_golden.json (beta, seq_length).
Run with the reference venv:  $VKF_REF_VENV/bin/python tools/make_orpo_golden.py
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_preference_golden import PAIRS, T, batch  # noqa: E402
from make_peft_fixtures import base_model, lora_model  # noqa: E402

OUT = os.path.join(HERE, "..", "Tests", "VKFTrainTests", "Fixtures")
BETA = 0.25


def log1mexp(x):
    """TRL's log(1 − e^x), branching at −ln 2."""
    return torch.where(x < -0.6931471805599453, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def main():
    torch.use_deterministic_algorithms(True)
    model, cfg, _, _ = base_model("llama_untied")
    ids, targets = batch(cfg.vocab_size)
    peft, named, _, _ = lora_model(model, use_rslora=False, seed=21)
    out = {"ids": ids.int(), "targets": targets.int()}
    for k, p in named.items():
        out["init." + k] = p.detach().clone()
    logits = peft(input_ids=ids).logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    mask = targets != -100
    picked = torch.gather(logp, 2, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    avg = (picked * mask).sum(-1) / mask.sum(-1)
    # The chosen rows' NLL over every real token (each row's real length: prompt + its answer).
    lengths = torch.tensor([p + a for p, c, r in PAIRS for a in (c, r)])
    full = torch.full_like(ids, -100)
    for row in range(ids.shape[0]):
        full[row, :lengths[row] - 1] = ids[row, 1:lengths[row]]
    nll = F.cross_entropy(logits[0::2].reshape(-1, cfg.vocab_size), full[0::2].reshape(-1), ignore_index=-100)
    ac, ar = avg[0::2], avg[1::2]
    lo = (ac - ar) - (log1mexp(ac) - log1mexp(ar))
    loss = nll - (BETA * F.logsigmoid(lo)).mean()
    loss.backward()
    out["loss"], out["nll"] = loss.detach().reshape(1), nll.detach().reshape(1)
    out["logps"], out["log_odds"] = avg.detach(), lo.detach()
    for k, p in named.items():
        out["grad." + k] = p.grad.detach().clone()
    save_file({k: v.contiguous() for k, v in out.items()}, os.path.join(OUT, "orpo_golden.safetensors"))
    with open(os.path.join(OUT, "orpo_golden.json"), "w") as f:
        json.dump({"beta": BETA, "seq_length": T, "torch": torch.__version__}, f, indent=1)
    print(f"loss {loss.item():.6f} = nll {nll.item():.6f} − β·mean logσ(lo), lo {lo.tolist()}", file=sys.stderr)


if __name__ == "__main__":
    main()
