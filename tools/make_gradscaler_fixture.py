#!/usr/bin/env python3
"""Golden trajectory of torch.amp.GradScaler for GradScalerTests: a parameter whose gradient
is finite or inf on a planted schedule goes through scaler.scale(loss).backward(),
scaler.step(opt) and scaler.update() each step; the fixture records, per step, whether the
optimizer stepped and the scale afterwards. Two scalers: torch's defaults (init 2^16, growth
2, backoff 0.5, interval 2000) over 4100 steps with overflows at chosen steps, and a short
growth interval (3) so growth after backoff shows in a few steps.

  $VKF_REF_VENV/bin/python tools/make_gradscaler_fixture.py \
      > Tests/VKFTrainTests/Fixtures/gradscaler.json

Runs on the CPU (torch.amp.GradScaler("cpu"), torch ≥ 2.3)."""
import json
import torch


def trajectory(steps, overflow, **kw):
    p = torch.nn.Parameter(torch.ones(4))
    opt = torch.optim.SGD([p], lr=0.0)
    scaler = torch.amp.GradScaler("cpu", **kw)
    stepped, scales = [], []
    for i in range(1, steps + 1):
        opt.zero_grad()
        loss = (p * (float("inf") if i in overflow else 1.0)).sum()
        scaler.scale(loss).backward()
        before = scaler.get_scale()
        scaler.step(opt)
        scaler.update()
        after = scaler.get_scale()
        # GradScaler.step skips optimizer.step() when found_inf; update() then backs off.
        stepped.append(not (i in overflow))
        scales.append(after)
        assert (after < before) == (i in overflow)
    return {"options": kw, "steps": steps, "overflow": sorted(overflow), "stepped": stepped, "scales": scales}


def main():
    cases = [
        trajectory(4100, {3, 4, 10, 2500}),
        trajectory(20, {2, 9, 10, 17}, init_scale=8.0, growth_factor=2.0, backoff_factor=0.5, growth_interval=3),
    ]
    print(json.dumps({"torch": torch.__version__, "cases": cases}))


if __name__ == "__main__":
    main()
