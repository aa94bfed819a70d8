#!/usr/bin/env python3
"""Golden fixture for PPO: TRL 0.29.1's real `PPOTrainer.train()` (trl.experimental.ppo; TRL ≥ 1.0
has no PPOTrainer) for exactly ONE update per case, on the tiny fixture model (llama_untied of
tools/make_fixtures.py) with the PEFT LoRA of tools/make_peft_fixtures.py, on FIXED rollouts.

Nothing of TRL's PPO loop is replicated here: the script builds the models, runs `train()` and
records what TRL computed. Three module-level names of ppo_trainer.py are patched:
  batch_generation  returns the fixed rollouts instead of sampling: for each left-padded query it
                    finds the row (the query with its left PAD stripped), appends the row's W raw
                    completion ids, and returns as "generation logits" what HF's `generate` would
                    report as scores: TRL's own `forward(policy, query_responses, PAD)` (adapter on,
                    no grad), logits[:, context_length − 1 : −1] ÷ (temperature + 1e-7) (HF's
                    temperature warper at TRL's generation temperature; top_k 0, top_p 1 add none)
  forward           passed through; on its first call with the PolicyAndValueWrapper (the first
                    training micro-batch, after the rollout phase) the caller's locals are copied:
                    TRL's rollout tensors (logprobs … non_score_reward below)
  np.random.permutation   passed through; each permutation (one per PPO epoch) is recorded
`trainer.log` is wrapped to record the metrics dict; the inner torch optimizer's `step` is wrapped
to count the steps that really update (accelerate's AcceleratedOptimizer skips `step` and
`zero_grad` while it is accumulating).

Models (every case starts from the same values; they are rebuilt per case):
  policy     PeftModel (LoRA r 4, alpha 8, dropout 0, the seven projections; A and B random, seed
             SEED_LORA) over llama_untied. ref_model None: TRL's reference is the policy with the
             adapter disabled (ppo_trainer.py null_ref_context, 572-583).
  value      {model: the policy's own LlamaModel (the same module object, LoRA injected),
             score: Linear(64, 1, bias False) = VALUE_HEAD}. TRL's PolicyAndValueWrapper (284-295)
             runs model(**kw) and score(hidden_states[-1]) for the value, so the value loss's
             gradient reaches the shared LoRA too. The optimizer holds the LoRA A/B and
             score.weight, each once.
  reward     {model: a separate copy of the base LlamaModel (no LoRA), score: REWARD_HEAD}.
  hidden_states[-1] of transformers' LlamaModel is the final (RMS-normed) hidden state; the
  script asserts it equals last_hidden_state.

What TRL computes (ppo_trainer.py 0.29.1 line numbers), with B rows, W = response_length:
  logprobs[r,t]     log_softmax(logits/(T+1e-7))[response token], from the "generation" scores (694-699)
  ref_logprobs      the same with the adapter off, TRL forward (positions = cumsum(mask) − 1,
                    PAD masked out of attention) (701-709)
  postprocessed     response with PAD after the first stop token (EOS) (712-719)
  sequence_lengths  first PAD index of postprocessed − 1 (W − 1 when none) (723)
  values[r,t]       value head at position context_length − 1 + t (raw query_response) (724-728)
  scores[r]         reward head at the last non-PAD position of the postprocessed row (729-731;
                    utils.get_reward), − missing_eos_penalty when the row has no EOS (752-755)
  padding_mask      t > sequence_length; padding_mask_p1: t > sequence_length + 1 (757-765)
  logprobs, ref_logprobs := 1.0 (INVALID_LOGPROB) where padding_mask; values := 0 where p1
  kl                k1: logprobs − ref;  k3: e^(ref−lp) − 1 − (ref−lp) (767-770); 0 on padding_mask
  non_score_reward  −kl_coef·kl; rewards = that, + scores at t = sequence_length + 1 (the slot after
                    the EOS) when that is < W, else at t = sequence_length (771-775)
  whiten_rewards    masked_whiten(rewards, ~padding_mask_p1, shift_mean False), 0 on p1 (778-780)
  GAE               over all W columns, no mask (783-791); returns = advantages + values;
                    advantages whitened over ~padding_mask (unbiased var), 0 on padding_mask
                    (792-794)
  per epoch: b_inds = np.random.permutation(local_batch_size); mini-batches of
  local_mini_batch_size; micro-batches of per_device_train_batch_size inside
  accelerator.accumulate (797-846):
    loss = masked_mean(max(−A·ρ, −A·clip(ρ, 1±cliprange)), ~padding_mask)
         + vf_coef · 0.5 · masked_mean(max((v−R)², (clip(v, v_old ± cliprange_value) − R)²), ~p1)
    accelerator.backward(loss) (÷ gradient_accumulation_steps when > 1), optimizer.step(),
    optimizer.zero_grad(); no gradient clipping anywhere in the PPO loop (asserted from the
    source). The optimizer is transformers' AdamW ("adamw_torch"), lr constant during the update
    (linear schedule, stepped once after the update, 907).

Writes Tests/VKFTrainTests/Fixtures/ppo_golden.safetensors (f32 unless said):
  init.<key>            the LoRA A/B before training (PEFT keys, as grpo_golden's init.<key>)
  value_head, reward_head   (1, 64)
  case<i>.logprobs, .ref_logprobs, .values, .rewards, .advantages, .returns, .kl,
  case<i>.non_score_reward   (rows, W), rows in TRL's order (row_order in the JSON)
  case<i>.scores        (rows)
  case<i>.sequence_lengths   i32 (rows)
  case<i>.padding_mask, .padding_mask_p1   f32 0/1 (rows, W)
  case<i>.final.<key>, case<i>.final.value_head   after the update
and ppo_golden.json: PAD, EOS, W, ROWS, the LoRA config, and per case the settings (every PPOConfig
value set here), row_order (indices into ROWS as TRL's shuffled dataloader delivered them),
permutations (one per PPO epoch), optimizer (torch class and defaults), optimizer_steps (inner
steps that ran), micro_batches_sync_gradients (accelerate's flag at each training micro-batch),
and metrics (TRL's logged dict without "eps").

Gradient accumulation: the dataloader holds one batch (num_total_batches = 1), so accelerate marks
it end_of_dataloader while train() runs, and accumulate() then syncs on EVERY micro-batch: with
gradient_accumulation_steps 2 (case0) each micro-batch is its own AdamW step on loss ÷ 2, i.e.
num_ppo_epochs × num_mini_batches × gradient_accumulation_steps steps (4), not epochs × mini-batches.
TRL never seeds numpy, so the script seeds it (NUMPY_SEED) before train().
Check: the first training micro-batch's log-probs equal the stand-in rollout's (ratio 1, 1e-5).

Run with the reference venv:  $VKF_REF_VENV/bin/python tools/make_ppo_golden.py
(VKF_TRL_PPO may name a directory holding an unpacked `trl` 0.29.1 package; otherwise
~/.cache/vkf-ref/trl-0.29.1, downloaded with pip on first use.)
"""
import copy
import glob
import inspect
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile

import numpy as np
import torch
import torch.nn as nn
from safetensors.torch import save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_peft_fixtures import TARGETS, base_model, lora_model  # noqa: E402

OUT = os.path.join(HERE, "..", "Tests", "VKFTrainTests", "Fixtures")
TRL_VERSION = "0.29.1"

PAD, EOS = 0, 2
W = 6  # response_length
ROWS = [  # (prompt ids, W raw completion ids as `generate` returns them: PAD after the first EOS)
    ([5, 17, 42], [11, 23, 2, 0, 0, 0]),              # EOS at 2
    ([9, 33, 61, 7, 88], [45, 12, 67, 31, 54, 19]),   # no EOS (truncated)
    ([14, 3], [71, 36, 14, 90, 25, 2]),               # EOS as the last of W ids (no slot after it)
    ([8, 60, 21, 4], [2, 0, 0, 0, 0, 0]),             # only the EOS
    ([30, 6, 77], [38, 77, 29, 2, 0, 0]),
    ([19, 52], [60, 13, 85, 41, 3, 66]),              # truncated
    ([44, 10, 93, 27], [27, 94, 50, 2, 0, 0]),
    ([81, 15, 36, 58, 12], [9, 2, 0, 0, 0, 0]),
]
HIDDEN = 64
SEED_LORA = 23
# The final hidden state is RMS-normed (|h| ≈ 8 here), so these stds give values of O(0.1–1)
# and scores of O(1).
SEED_VALUE_HEAD, VALUE_HEAD_STD = 31, 0.1
SEED_REWARD_HEAD, REWARD_HEAD_STD = 37, 0.15
SEED = 42  # PPOConfig.seed: TRL seeds torch with it (the dataloader shuffle)
NUMPY_SEED = 3  # numpy's global seed before train(): two different, non-identity permutations per case
LEARNING_RATE = 5e-3  # large enough that policy/clipfrac_avg and val/clipfrac_avg are > 0 in every case
COMMON = dict(
    learning_rate=LEARNING_RATE, weight_decay=0.0, lr_scheduler_type="linear", warmup_steps=0,
    optim="adamw_torch", adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8, max_grad_norm=1e9,
    seed=SEED, bf16=False, fp16=False, gradient_checkpointing=False, stop_token="eos",
    response_length=W, num_sample_generations=0, local_rollout_forward_batch_size=64,
)
CASES = [
    dict(rows=4, per_device_train_batch_size=2, gradient_accumulation_steps=2, num_mini_batches=1,
         num_ppo_epochs=2, kl_estimator="k1", kl_coef=0.05, cliprange=0.2, cliprange_value=0.2, vf_coef=0.1,
         gamma=1.0, lam=0.95, whiten_rewards=False, missing_eos_penalty=1.0, temperature=0.7),
    dict(rows=8, per_device_train_batch_size=8, gradient_accumulation_steps=1, num_mini_batches=1,
         num_ppo_epochs=2, kl_estimator="k3", kl_coef=0.2, cliprange=0.2, cliprange_value=0.2, vf_coef=0.1,
         gamma=0.99, lam=0.9, whiten_rewards=True, missing_eos_penalty=None, temperature=1.0),
    dict(rows=4, per_device_train_batch_size=4, gradient_accumulation_steps=1, num_mini_batches=2,
         num_ppo_epochs=2, kl_estimator="k1", kl_coef=0.05, cliprange=0.1, cliprange_value=0.05, vf_coef=0.5,
         gamma=1.0, lam=0.95, whiten_rewards=False, missing_eos_penalty=2.0, temperature=1.0),
]
CAPTURED = ["logprobs", "ref_logprobs", "values", "scores", "rewards", "advantages", "returns",
            "padding_mask", "padding_mask_p1", "sequence_lengths", "contain_eos_token", "kl",
            "non_score_reward"]
PER_TOKEN = ["logprobs", "ref_logprobs", "values", "rewards", "advantages", "returns", "kl", "non_score_reward"]


# MARK: - TRL 0.29.1 on sys.path

def trl_ppo_dir():
    """A directory holding an unpacked `trl` 0.29.1 package (VKF_TRL_PPO, else a cached download)."""
    d = os.environ.get("VKF_TRL_PPO")
    if d:
        return d
    d = os.path.expanduser(f"~/.cache/vkf-ref/trl-{TRL_VERSION}")
    if not os.path.isdir(os.path.join(d, "trl")):
        with tempfile.TemporaryDirectory() as tmp:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", f"trl=={TRL_VERSION}",
                            "-d", tmp], check=True)
            (wheel,) = glob.glob(os.path.join(tmp, "trl-*.whl"))
            os.makedirs(d, exist_ok=True)
            with zipfile.ZipFile(wheel) as z:
                z.extractall(d)
    return d


def import_ppo():
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    sys.path.insert(0, trl_ppo_dir())
    import trl
    assert trl.__version__ == TRL_VERSION, trl.__version__
    from trl.experimental.ppo import PPOConfig, PPOTrainer, ppo_trainer
    # No gradient clipping in the PPO loop (max_grad_norm is never read there).
    src = inspect.getsource(ppo_trainer.PPOTrainer.train)
    assert "clip_grad" not in src and "max_grad_norm" not in src
    return trl, PPOConfig, PPOTrainer, ppo_trainer


# MARK: - models

class ScoredBackbone(nn.Module):
    """What TRL's get_reward and PolicyAndValueWrapper read: `.model` (base_model_prefix) and `.score`."""
    base_model_prefix = "model"

    def __init__(self, backbone, head, config):
        super().__init__()
        self.model = backbone
        self.score = nn.Linear(HIDDEN, 1, bias=False)
        with torch.no_grad():
            self.score.weight.copy_(head)
        self.config = config


def heads():
    value = VALUE_HEAD_STD * torch.randn(1, HIDDEN, generator=torch.Generator().manual_seed(SEED_VALUE_HEAD))
    reward = REWARD_HEAD_STD * torch.randn(1, HIDDEN, generator=torch.Generator().manual_seed(SEED_REWARD_HEAD))
    return value, reward


def build_models(value_head, reward_head):
    model, cfg, _, _ = base_model("llama_untied")
    reward_backbone = copy.deepcopy(model.model)  # before the LoRA layers are injected
    policy, named, lcfg, scaling = lora_model(model, use_rslora=False, seed=SEED_LORA)
    backbone = policy.base_model.model.model
    assert any(".lora_A." in n for n, _ in backbone.named_parameters())
    value_model = ScoredBackbone(backbone, value_head, cfg)
    reward_model = ScoredBackbone(reward_backbone, reward_head, cfg)
    for p in reward_model.parameters():
        p.requires_grad_(False)
    return policy, named, value_model, reward_model, cfg, lcfg, scaling


def tokenizer():
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast
    tok = Tokenizer(WordLevel({f"t{i}": i for i in range(97)}, unk_token="t1"))
    tok.pre_tokenizer = WhitespaceSplit()
    t = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="t0", eos_token="t2", unk_token="t1",
                                padding_side="left")
    assert t.pad_token_id == PAD and t.eos_token_id == EOS
    return t


# MARK: - one case

def run_case(case, value_head, reward_head, init, trl_mods):
    from datasets import Dataset
    trl, PPOConfig, PPOTrainer, ppo_trainer = trl_mods
    n = case["rows"]
    rows = ROWS[:n]
    policy, named, value_model, reward_model, cfg, _, _ = build_models(value_head, reward_head)
    for k, p in named.items():
        assert torch.equal(p, init[k]), k
    # hidden_states[-1] is the normed final state (what score() reads in TRL).
    with torch.no_grad():
        ids = torch.tensor([rows[0][0] + rows[0][1][:2]])
        o = value_model.model(input_ids=ids, output_hidden_states=True, return_dict=True)
        assert torch.equal(o.hidden_states[-1], o.last_hidden_state)

    settings = {k: v for k, v in case.items() if k != "rows"}
    tmp = tempfile.mkdtemp(prefix="vkf_ppo_")  # output_dir; nothing is saved (save_strategy "no")
    args = PPOConfig(output_dir=tmp, total_episodes=n, logging_steps=1, save_strategy="no", report_to=[],
                     **COMMON, **settings)
    dataset = Dataset.from_dict({"input_ids": [p for p, _ in rows]})
    trainer = PPOTrainer(args=args, processing_class=tokenizer(), model=policy, ref_model=None,
                         reward_model=reward_model, train_dataset=dataset, value_model=value_model,
                         peft_config=None)
    assert args.num_total_batches == 1 and args.local_batch_size == n

    # The optimizer holds exactly the LoRA A/B and the value head, each once.
    opt = trainer.optimizer.optimizer
    params = [p for g in opt.param_groups for p in g["params"]]
    want = list(named.values()) + [value_model.score.weight]
    assert len(params) == len(want) == len({id(p) for p in params})
    assert {id(p) for p in params} == {id(p) for p in want}
    assert all(g["weight_decay"] == 0.0 for g in opt.param_groups)

    rec = {"row_order": [], "permutations": [], "metrics": None, "captured": None,
           "optimizer_steps": 0, "sync_gradients": []}
    by_prompt = {tuple(p): i for i, (p, _) in enumerate(rows)}

    def fixed_batch_generation(model, queries, local_rollout_forward_batch_size, pad_token_id, generation_config):
        # TRL's generate(): cat(queries, new ids) and the warped scores (temperature only).
        context_length = queries.shape[1]
        order = []
        for q in queries.tolist():
            first = next(j for j, t in enumerate(q) if t != pad_token_id)  # left PAD stripped
            order.append(by_prompt[tuple(q[first:])])
        rec["row_order"].extend(order)
        completions = torch.tensor([rows[i][1] for i in order], dtype=queries.dtype)
        query_responses = torch.cat([queries, completions], 1)
        with torch.no_grad():
            logits = ppo_trainer.forward(model, query_responses, pad_token_id).logits
        logits = logits[:, context_length - 1:-1] / generation_config.temperature
        assert generation_config.temperature == args.temperature + 1e-7
        return query_responses, logits

    orig_forward = ppo_trainer.forward

    def recording_forward(model, query_responses, pad_token_id):
        if not isinstance(model, ppo_trainer.PolicyAndValueWrapper):
            return orig_forward(model, query_responses, pad_token_id)
        rec["sync_gradients"].append(trainer.accelerator.sync_gradients)
        result = orig_forward(model, query_responses, pad_token_id)
        if rec["captured"] is None:
            f = sys._getframe(1).f_locals
            rec["captured"] = {k: f[k].detach().clone() for k in CAPTURED}
            # Check of the stand-in generation: the first training micro-batch sees the rollout's
            # log-probs (ratio 1 up to rounding), as after a real `generate`.
            with torch.no_grad():
                ctx = f["context_length"]
                lp = torch.log_softmax(result[0].logits[:, ctx - 1:-1] / (args.temperature + 1e-7), -1)
                lp = lp.gather(-1, f["mb_responses"].unsqueeze(-1)).squeeze(-1)
                keep = ~f["padding_mask"][f["micro_batch_inds"]]
                assert (lp - f["mb_logprobs"])[keep].abs().max() < 1e-5
        return result

    orig_perm = np.random.permutation

    def recording_permutation(x):
        p = orig_perm(x)
        rec["permutations"].append(p.tolist())
        return p

    orig_step = opt.step

    def counting_step(*a, **kw):
        rec["optimizer_steps"] += 1
        return orig_step(*a, **kw)

    opt.step = counting_step

    orig_log = trainer.log

    def recording_log(logs, *a, **kw):
        rec["metrics"] = {k: v for k, v in logs.items() if k != "eps"}
        return orig_log(logs, *a, **kw)

    trainer.log = recording_log
    saved = (ppo_trainer.batch_generation, ppo_trainer.forward, ppo_trainer.np.random.permutation)
    ppo_trainer.batch_generation = fixed_batch_generation
    ppo_trainer.forward = recording_forward
    ppo_trainer.np.random.permutation = recording_permutation
    # TRL never seeds numpy (PPOTrainer does not run Trainer.__init__'s set_seed), so the PPO-epoch
    # permutations would differ run to run; seed it for a reproducible fixture.
    np.random.seed(NUMPY_SEED)
    try:
        trainer.train()
    finally:
        ppo_trainer.batch_generation, ppo_trainer.forward, ppo_trainer.np.random.permutation = saved
        shutil.rmtree(tmp, ignore_errors=True)
    rec["optimizer"] = dict(cls=type(opt).__module__ + "." + type(opt).__name__,
                            param_groups=len(opt.param_groups),
                            weight_decay=sorted({g["weight_decay"] for g in opt.param_groups}),
                            **{k: opt.defaults[k] for k in ("lr", "betas", "eps", "amsgrad", "foreach", "fused",
                                                           "maximize") if k in opt.defaults})

    assert sorted(rec["row_order"]) == list(range(n)), rec["row_order"]
    assert len(rec["permutations"]) == case["num_ppo_epochs"]
    c = rec["captured"]
    final = {k: p.detach().clone() for k, p in named.items()}
    final_head = value_model.score.weight.detach().clone()
    return rec, c, final, final_head


# MARK: - main

def main():
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    trl_mods = import_ppo()
    trl = trl_mods[0]
    for p, c in ROWS:
        assert len(c) == W and 0 not in p and max(p + c) < 97
        e = c.index(EOS) if EOS in c else W
        assert all(t == PAD for t in c[e + 1:]) and PAD not in c[:e + 1]

    value_head, reward_head = heads()
    policy, named, _, _, cfg, lcfg, scaling = build_models(value_head, reward_head)
    init = {k: p.detach().clone() for k, p in named.items()}
    del policy

    out = {"init." + k: v for k, v in init.items()}
    out["value_head"] = value_head
    out["reward_head"] = reward_head
    cases_meta = []
    for i, case in enumerate(CASES):
        rec, c, final, final_head = run_case(case, value_head, reward_head, init, trl_mods)
        pre = f"case{i}."
        for k in PER_TOKEN:
            assert c[k].shape == (case["rows"], W), (k, c[k].shape)
            out[pre + k] = c[k].float()
        out[pre + "scores"] = c["scores"].float()
        out[pre + "sequence_lengths"] = c["sequence_lengths"].to(torch.int32)
        out[pre + "padding_mask"] = c["padding_mask"].float()
        out[pre + "padding_mask_p1"] = c["padding_mask_p1"].float()
        out.update({pre + "final." + k: v for k, v in final.items()})
        out[pre + "final.value_head"] = final_head
        m = rec["metrics"]
        delta = max((final[k] - init[k]).abs().max().item() for k in init)
        dhead = (final_head - value_head).abs().max().item()
        print(f"case{i}: row_order {rec['row_order']} permutations {rec['permutations']} "
              f"optimizer steps {rec['optimizer_steps']} sync {rec['sync_gradients']}", file=sys.stderr)
        print(f"  max|final−init| LoRA {delta:.3e}, value head {dhead:.3e}", file=sys.stderr)
        print("  " + json.dumps(m), file=sys.stderr)
        cases_meta.append(dict(
            settings={**COMMON, **case, "total_episodes": case["rows"], "numpy_seed": NUMPY_SEED},
            row_order=rec["row_order"], permutations=rec["permutations"],
            contain_eos_token=c["contain_eos_token"].tolist(),
            optimizer=rec["optimizer"], optimizer_steps=rec["optimizer_steps"],
            micro_batches_sync_gradients=rec["sync_gradients"],
            max_abs_lora_change=delta, max_abs_value_head_change=dhead, metrics=m))

    assert any(cm["metrics"]["policy/clipfrac_avg"] > 0 for cm in cases_meta)
    assert any(cm["metrics"]["val/clipfrac_avg"] > 0 for cm in cases_meta)
    save_file({k: v.detach().contiguous() for k, v in out.items()}, os.path.join(OUT, "ppo_golden.safetensors"))
    import peft
    import transformers
    meta = {
        "generator": "tools/make_ppo_golden.py", "PAD": PAD, "EOS": EOS, "W": W,
        "ROWS": [{"prompt": p, "completion": c} for p, c in ROWS],
        "lora": {"r": lcfg.r, "lora_alpha": lcfg.lora_alpha, "lora_dropout": lcfg.lora_dropout,
                 "scaling": scaling, "target_modules": TARGETS, "seed": SEED_LORA, "use_rslora": False},
        "value_head_seed": SEED_VALUE_HEAD, "value_head_std": VALUE_HEAD_STD,
        "reward_head_seed": SEED_REWARD_HEAD, "reward_head_std": REWARD_HEAD_STD,
        "invalid_logprob": 1.0, "model": "llama_untied",
        "cases": cases_meta,
        "trl": trl.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
        "peft": peft.__version__,
    }
    with open(os.path.join(OUT, "ppo_golden.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
