#!/usr/bin/env python3
"""Golden values for VKFTrain's PreferenceLoss: DPO-family losses (TRL 1.16 formulas in
torch), their autograd gradients with respect to the summed policy log-probs, the logged
rewards, and the reward-model loss.

Writes Tests/VKFTrainTests/Fixtures/preference_loss.json.
Run with the reference venv:  $VKF_REF_VENV/bin/python tools/make_preference_fixtures.py
"""
import json
import os

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "VKFTrainTests", "Fixtures", "preference_loss.json")


def dpo(kind, beta, eps, pc, pr, rc, rr, lc, lr):
    pc = torch.tensor(pc, dtype=torch.float64, requires_grad=True)
    pr = torch.tensor(pr, dtype=torch.float64, requires_grad=True)
    chosen = pc - rc
    rejected = pr - rr
    delta = chosen - rejected
    if kind == "sigmoid":  # TRL's sigmoid (eps = 0) / cDPO form with label smoothing
        loss = -F.logsigmoid(beta * delta) * (1 - eps) - F.logsigmoid(-beta * delta) * eps
    elif kind == "hinge":
        loss = torch.relu(1 - beta * delta)
    elif kind == "ipo":
        d = chosen / max(lc, 1) - rejected / max(lr, 1)
        loss = (d - 1 / (2 * beta)) ** 2
    elif kind == "robust":
        clean = -(1 - eps) * F.logsigmoid(beta * delta)
        flipped = -eps * F.logsigmoid(-beta * delta)
        loss = (clean - flipped) / (1 - 2 * eps)
    loss.backward()
    return dict(loss=loss.item(), d_policy_chosen=pc.grad.item(), d_policy_rejected=pr.grad.item(),
                reward_chosen=beta * chosen.item(), reward_rejected=beta * rejected.item())


def main():
    g = torch.Generator().manual_seed(7)
    cases = []
    for kind, beta, eps in [("sigmoid", 0.1, 0.0), ("sigmoid", 0.5, 0.2), ("hinge", 0.1, 0.0), ("hinge", 2.0, 0.0),
                            ("ipo", 0.1, 0.0), ("ipo", 0.5, 0.0), ("robust", 0.1, 0.1), ("robust", 1.0, 0.3)]:
        for _ in range(4):
            pc, pr, rc, rr = (-40 * torch.rand(4, generator=g, dtype=torch.float64)).tolist()
            lc, lr = torch.randint(1, 40, (2,), generator=g).tolist()
            out = dpo(kind, beta, eps, pc, pr, rc, rr, lc, lr)
            cases.append(dict(type=kind, beta=beta, label_smoothing=eps, policy_chosen=pc, policy_rejected=pr,
                              reference_chosen=rc, reference_rejected=rr, chosen_tokens=lc, rejected_tokens=lr,
                              **out))
    rewards = []
    for _ in range(6):
        c, r = (4 * torch.randn(2, generator=g, dtype=torch.float64)).tolist()
        m = float(torch.rand(1, generator=g, dtype=torch.float64).item())
        tc = torch.tensor(c, dtype=torch.float64, requires_grad=True)
        tr = torch.tensor(r, dtype=torch.float64, requires_grad=True)
        loss = -F.logsigmoid(tc - tr - m)
        loss.backward()
        rewards.append(dict(chosen=c, rejected=r, margin=m, loss=loss.item(), d_chosen=tc.grad.item(),
                            d_rejected=tr.grad.item()))
    with open(OUT, "w") as f:
        json.dump(dict(torch=torch.__version__, dpo=cases, reward=rewards), f, indent=1)
    print(f"wrote {OUT}: {len(cases)} DPO cases, {len(rewards)} reward cases")


if __name__ == "__main__":
    main()
