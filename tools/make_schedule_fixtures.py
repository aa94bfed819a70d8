#!/usr/bin/env python3
"""Record Hugging Face learning-rate schedules step by step for the VKFTrain `LRSchedule` tests.

For each case, builds the schedule exactly as `transformers.Trainer.create_scheduler` does
(`get_scheduler(name, optimizer, num_warmup_steps=args.get_warmup_steps(total),
num_training_steps=total, scheduler_specific_kwargs=lr_scheduler_kwargs)`) on an SGD optimizer
over one dummy parameter, then records `scheduler.get_last_lr()[0]` before the first step and
after each of `optimizer.step(); scheduler.step()`, i.e. steps 0...num_training_steps.
Each case's `config` is the JSON the Swift `LRSchedule` decodes. Writes
Tests/VKFTrainTests/Fixtures/schedules.json. The Swift suite never runs Python.

    /root/.cache/vkf-ref/venv/bin/python tools/make_schedule_fixtures.py
    (torch + transformers; if the venv is missing run /work/shared/tools/ref-setup)
"""
import json
import math
from pathlib import Path

import torch
import transformers
from transformers.optimization import get_scheduler

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "Tests/VKFTrainTests/Fixtures/schedules.json"
BASE_LR = 2e-4
TOTAL = 100


def warmup_steps_for(config):
    # TrainingArguments.get_warmup_steps (transformers 5.x): warmup_steps >= 1 is a count
    # (int() truncates), a value in [0, 1) is a ratio of the total, rounded up. The older
    # `warmup_ratio` argument (transformers 4.x) is used only when warmup_steps is 0.
    ws = config.get("warmup_steps", 0)
    if ws >= 1:
        return int(ws)
    if ws > 0:
        return math.ceil(TOTAL * ws)
    return math.ceil(TOTAL * config.get("warmup_ratio", 0.0))


def case(name, schedule, warmup=None, ratio=None, **kwargs):
    config = {"lr_scheduler_type": schedule, "learning_rate": BASE_LR, "num_training_steps": TOTAL}
    if warmup is not None:
        config["warmup_steps"] = warmup
    if ratio is not None:
        config["warmup_ratio"] = ratio
    if kwargs:
        config["lr_scheduler_kwargs"] = kwargs
    return {"name": name, "config": config}


CASES = [
    case("constant", "constant"),
    case("constant_with_warmup_w0", "constant_with_warmup", warmup=0),
    case("constant_with_warmup_w10", "constant_with_warmup", warmup=10),
    case("constant_with_warmup_ratio0.1", "constant_with_warmup", ratio=0.1),
    case("linear_w0", "linear", warmup=0),
    case("linear_w10", "linear", warmup=10),
    case("linear_ratio0.1", "linear", ratio=0.1),
    case("linear_steps0.15_as_ratio", "linear", warmup=0.15),
    case("cosine_w0", "cosine", warmup=0),
    case("cosine_w10", "cosine", warmup=10),
    case("cosine_ratio0.1", "cosine", ratio=0.1),
    case("cosine_w10_cycles1", "cosine", warmup=10, num_cycles=1.0),
    case("cosine_with_restarts_w0_c3", "cosine_with_restarts", warmup=0, num_cycles=3),
    case("cosine_with_restarts_w10_c3", "cosine_with_restarts", warmup=10, num_cycles=3),
    case("cosine_with_restarts_w10_default", "cosine_with_restarts", warmup=10),
    case("polynomial_w0_default", "polynomial", warmup=0),
    case("polynomial_w10_end1e-5_p2", "polynomial", warmup=10, lr_end=1e-5, power=2.0),
    case("polynomial_ratio0.1_p0.5", "polynomial", ratio=0.1, power=0.5),
    case("inverse_sqrt_w0", "inverse_sqrt", warmup=0),
    case("inverse_sqrt_w10", "inverse_sqrt", warmup=10),
    case("inverse_sqrt_w10_t20", "inverse_sqrt", warmup=10, timescale=20),
    case("cosine_with_min_lr_w10_minlr1e-5", "cosine_with_min_lr", warmup=10, min_lr=1e-5),
    case("cosine_with_min_lr_w0_rate0.1", "cosine_with_min_lr", warmup=0, min_lr_rate=0.1),
    case("cosine_with_min_lr_ratio0.1_rate0.05_c1", "cosine_with_min_lr", ratio=0.1, min_lr_rate=0.05, num_cycles=1.0),
    case("wsd_w10_d20_inferred_stable", "warmup_stable_decay", warmup=10, num_decay_steps=20),
    case("wsd_w10_s50_d20_linear_min0.1", "warmup_stable_decay", warmup=10, num_stable_steps=50,
         num_decay_steps=20, decay_type="linear", min_lr_ratio=0.1),
    case("wsd_ratio0.1_d30_1-sqrt", "warmup_stable_decay", ratio=0.1, num_decay_steps=30, decay_type="1-sqrt"),
    case("wsd_w10_d25_cosine_warmup_min0.2", "warmup_stable_decay", warmup=10, num_decay_steps=25,
         warmup_type="cosine", min_lr_ratio=0.2),
    case("wsd_w10_d20_1-sqrt_warmup_linear", "warmup_stable_decay", warmup=10, num_decay_steps=20,
         warmup_type="1-sqrt", decay_type="linear"),
    case("wsd_w0_s40_d40_cosine_c1", "warmup_stable_decay", warmup=0, num_stable_steps=40,
         num_decay_steps=40, num_cycles=1.0),
]


def record(config):
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=config["learning_rate"])
    scheduler = get_scheduler(
        config["lr_scheduler_type"],
        optimizer,
        num_warmup_steps=warmup_steps_for(config),
        num_training_steps=config["num_training_steps"],
        scheduler_specific_kwargs=dict(config.get("lr_scheduler_kwargs", {})),
    )
    lrs = [scheduler.get_last_lr()[0]]
    for _ in range(config["num_training_steps"]):
        param.grad = torch.zeros_like(param)
        optimizer.step()
        scheduler.step()
        lrs.append(scheduler.get_last_lr()[0])
    return lrs


def main():
    for c in CASES:
        c["lrs"] = record(c["config"])
    doc = {
        "source": f"transformers {transformers.__version__}, torch {torch.__version__}",
        "generator": "tools/make_schedule_fixtures.py",
        "cases": CASES,
    }
    OUT.write_text(json.dumps(doc, indent=1) + "\n")
    print(f"wrote {len(CASES)} cases to {OUT}")


if __name__ == "__main__":
    main()
