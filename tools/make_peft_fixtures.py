#!/usr/bin/env python3
"""Golden fixtures for VKFPEFT: one and two optimizer steps vs PyTorch + PEFT, and QLoRA's
NF4 quantisation vs bitsandbytes (llm.c's debug-state pattern, as tools/make_fixtures.py).

The base weights are the tiny random models of tools/make_fixtures.py
(Tests/VKFModelTests/Fixtures/golden/<model>.weights.safetensors, with the ids and targets
of <model>.expected.safetensors); nothing here makes new base weights. Everything runs on
the CPU in f32 with deterministic algorithms.

Writes into Tests/VKFPEFTTests/Fixtures/golden/:
  <case>.safetensors   (PEFT keys base_model.model.<module>.lora_A.weight …, or Hugging Face
                        names for full fine-tuning)
      ids, targets        i32 (B, T), copied from the model fixture
      loss                f32 (steps): loss before step 1 (and before step 2)
      grad_norm           f32 (steps): global gradient norm before clipping, per step
      init.<key>          the adapter's values before step 1 (LoRA cases; a case whose
                          init_from names another in peft_golden.json starts from that one's)
      grad.<key>          dL/d<key> at step 1, before clipping
      step1.<key>, step2.<key>   values after AdamW step 1 (and 2)
  qlora_llama_untied.safetensors
      nf4.<W>.packed      u8 (out·in/2): bitsandbytes' packed NF4 indices, high nibble first
      nf4.<W>.absmax      f32 (blocks): absmax after the double-quantisation round trip, each
                          8-bit code the nearest (as bitsandbytes' CUDA kernel)
                          (bitsandbytes' CPU kernel looks codes up in a 65,536-bin table,
                          so a value within ~1.5e-5 of a midpoint may take the farther code;
                          peft_golden.json lists where it does)
      nf4.<W>.absmax_fp32 f32 (blocks): absmax without double quantisation
      nf4.<W>.absmax_q, nf4.<W>.nested_absmax, nf4.<W>.offset: the double-quantised state
      dynamic_map         f32 (256): bitsandbytes' signed dynamic 8-bit map
      ids, targets, loss, grad.<key>: LoRA over the NF4-dequantised projections, starting
                          from lora_llama_untied's init.<key>
  peft_golden.json     hyper-parameters of every case (read by the Swift tests)

AdamW is torch.optim.AdamW (foreach off) after torch.nn.utils.clip_grad_norm_, with the
parameter groups of VKFCore's TrainableTensor.decays: names ending "norm.weight" or ".bias"
take no weight decay. The clip limit is chosen per case so that clipping engages in some
cases and not in others (peft_golden.json records which).

NF4: bitsandbytes (CPU build) is the reference; this script also re-derives its packed bytes
and double-quantised absmax with its own implementation written from shared/REFERENCE.md and
stops if the two disagree, except for two CPU-kernel artefacts it records in
peft_golden.json instead: the 8-bit lookup table above, and `dequantize_4bit`'s C kernel,
which disagrees with bitsandbytes' own pure-torch dequantisation when in_features is not a
multiple of the block (this model's down_proj, in 96); the fixture uses the latter.

Run with the reference venv:  $VKF_REF_VENV/bin/python tools/make_peft_fixtures.py
"""
import json
import os
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_fixtures import COMMON, CONFIGS  # noqa: E402  (the tiny configs, one source)

MODEL_FIXTURES = os.path.join(HERE, "..", "Tests", "VKFModelTests", "Fixtures", "golden")
OUT = os.path.join(HERE, "..", "Tests", "VKFPEFTTests", "Fixtures", "golden")

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
ADAMW = dict(lr=1e-2, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.01)
ADAPTER_INIT_STD = 0.05  # random A and B (B nonzero, so every LoRA gradient is nonzero)

NF4_CODE = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
]


# MARK: - base model

def base_model(name):
    """The tiny model of tools/make_fixtures.py with its committed weights, ids and targets."""
    config_cls, model_cls, extra, _ = CONFIGS[name]
    cfg = config_cls(**COMMON, **extra)
    model = model_cls(cfg).float()
    state = load_file(os.path.join(MODEL_FIXTURES, name + ".weights.safetensors"))
    missing, unexpected = model.load_state_dict(state, strict=False)
    allowed_missing = ["lm_head.weight"] if cfg.tie_word_embeddings else []
    assert sorted(missing) == allowed_missing and not unexpected, (missing, unexpected)
    if cfg.tie_word_embeddings:
        model.tie_weights()
        assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    model.train(False)
    expected = load_file(os.path.join(MODEL_FIXTURES, name + ".expected.safetensors"))
    ids, targets = expected["ids"].long(), expected["targets"].long()
    # The weights loaded here are the ones the model fixture was made with.
    with torch.no_grad():
        loss = lm_loss(model, ids, targets)
    assert torch.allclose(loss, expected["loss"][0], rtol=1e-6), (loss, expected["loss"])
    return model, cfg, ids, targets


def lm_loss(model, ids, targets):
    """Mean cross-entropy over non-ignored targets (as tools/make_fixtures.py)."""
    logits = model(input_ids=ids).logits
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                           ignore_index=-100)


# MARK: - training steps

def decays(name):
    """VKFCore TrainableTensor.decays: no weight decay for norms and biases."""
    return not (name.endswith("norm.weight") or name.endswith(".bias"))


def train(model, named, ids, targets, steps, max_grad_norm):
    """`steps` × (forward, backward, clip_grad_norm_, AdamW.step) over `named` {key: param}.
    Returns losses, grad norms, step-1 gradients and values after each step, by key."""
    keys = sorted(named)
    params = [named[k] for k in keys]
    groups = [
        {"params": [named[k] for k in keys if decays(k)], "weight_decay": ADAMW["weight_decay"]},
        {"params": [named[k] for k in keys if not decays(k)], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    opt = torch.optim.AdamW(groups, lr=ADAMW["lr"], betas=ADAMW["betas"], eps=ADAMW["eps"],
                            foreach=False)
    out = {"loss": [], "grad_norm": [], "grad": {}, "values": []}
    for step in range(1, steps + 1):
        opt.zero_grad(set_to_none=True)
        loss = lm_loss(model, ids, targets)
        loss.backward()
        if step == 1:
            out["grad"] = {k: named[k].grad.detach().clone() for k in keys}
        norm = torch.nn.utils.clip_grad_norm_(params, max_grad_norm, foreach=False)
        opt.step()
        out["loss"].append(loss.item())
        out["grad_norm"].append(norm.item())
        out["values"].append({k: named[k].detach().clone() for k in keys})
    return out


# MARK: - LoRA

def peft_key(param_name):
    """named_parameters name → the key PEFT saves (adapter name "default" dropped)."""
    return param_name.replace(".default.", ".")


def lora_model(model, use_rslora, seed):
    """PEFT LoRA (r 4, alpha 8, all seven projections, dropout 0) with random A and B."""
    from peft import LoraConfig, get_peft_model, get_peft_model_state_dict
    config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=TARGETS,
                        use_rslora=use_rslora, bias="none", task_type="CAUSAL_LM")
    peft = get_peft_model(model, config)
    gen = torch.Generator().manual_seed(seed)
    named = {}
    with torch.no_grad():
        for pname, p in peft.named_parameters():
            if ".lora_A." in pname or ".lora_B." in pname:
                p.copy_(ADAPTER_INIT_STD * torch.randn(p.shape, generator=gen))
                named[peft_key(pname)] = p
            else:
                assert not p.requires_grad, pname
    assert set(named) == set(get_peft_model_state_dict(peft)), "PEFT keys"
    scaling = peft.base_model.model.model.layers[0].self_attn.q_proj.scaling["default"]
    return peft, named, config, scaling


def lora_case(case, model_name, use_rslora, steps, max_grad_norm, seed, init=None):
    model, cfg, ids, targets = base_model(model_name)
    peft, named, config, scaling = lora_model(model, use_rslora, seed)
    if init is not None:  # share another case's initial values (keeps the fixtures small)
        with torch.no_grad():
            for k, p in named.items():
                p.copy_(init[k])
    initial = {k: p.detach().clone() for k, p in named.items()}
    result = train(peft, named, ids, targets, steps, max_grad_norm)
    tensors = {"ids": ids.to(torch.int32), "targets": targets.to(torch.int32),
               "loss": torch.tensor(result["loss"]), "grad_norm": torch.tensor(result["grad_norm"])}
    if init is None:
        tensors.update({"init." + k: v for k, v in initial.items()})
    tensors.update({"grad." + k: v for k, v in result["grad"].items()})
    for s, values in enumerate(result["values"], start=1):
        tensors.update({f"step{s}." + k: v for k, v in values.items()})
    save(case, tensors)
    meta = dict(model=model_name, kind="lora", r=config.r, lora_alpha=config.lora_alpha,
                use_rslora=use_rslora, scaling=scaling, target_modules=TARGETS, seed=seed,
                init_from=None, steps=steps, max_grad_norm=max_grad_norm, **adamw_meta(),
                loss=result["loss"], grad_norm=result["grad_norm"],
                clip_engaged=[n > max_grad_norm for n in result["grad_norm"]],
                trainable=len(named))
    return meta, initial


def adamw_meta():
    return dict(lr=ADAMW["lr"], beta1=ADAMW["betas"][0], beta2=ADAMW["betas"][1],
                eps=ADAMW["eps"], weight_decay=ADAMW["weight_decay"])


# MARK: - full fine-tuning

def full_case(case, model_name, steps, max_grad_norm):
    model, cfg, ids, targets = base_model(model_name)
    named = dict(model.named_parameters())
    if cfg.tie_word_embeddings:
        named.pop("lm_head.weight", None)
    result = train(model, named, ids, targets, steps, max_grad_norm)
    tensors = {"ids": ids.to(torch.int32), "targets": targets.to(torch.int32),
               "loss": torch.tensor(result["loss"]), "grad_norm": torch.tensor(result["grad_norm"])}
    # Step-1 gradients are the model fixture's grad.<name> (checked by ModelGoldenTests).
    for s, values in enumerate(result["values"], start=1):
        tensors.update({f"step{s}." + k: v for k, v in values.items()})
    save(case, tensors)
    return dict(model=model_name, kind="full", steps=steps, max_grad_norm=max_grad_norm,
                **adamw_meta(), loss=result["loss"], grad_norm=result["grad_norm"],
                clip_engaged=[n > max_grad_norm for n in result["grad_norm"]],
                trainable=len(named), no_decay=sorted(k for k in named if not decays(k)))


# MARK: - NF4 (own implementation from shared/REFERENCE.md, checked against bitsandbytes)

def nf4_reference(w, block=64):
    """Packed bytes (high nibble first) and f32 absmax: nearest code by value."""
    flat = w.reshape(-1, block)
    absmax = flat.abs().max(dim=1).values
    scaled = (flat / absmax[:, None]).clamp(-1, 1).reshape(-1)
    code = torch.tensor(NF4_CODE)
    mids = (code[1:] + code[:-1]) / 2
    idx = torch.bucketize(scaled, mids, right=False)  # x > mid → upper code
    idx = idx.to(torch.uint8)
    packed = (idx[0::2] << 4) | idx[1::2]
    return packed, absmax


def blockwise_reference(x, code, block=256):
    """bitsandbytes-style blockwise 8-bit quantisation with a sorted code: per block absmax,
    x/absmax to the nearest code value."""
    n = x.numel()
    pad = (-n) % block
    xp = torch.cat([x, torch.zeros(pad)]).reshape(-1, block)
    absmax = xp.abs().max(dim=1).values
    scaled = (xp / absmax[:, None]).reshape(-1)[:n]
    dist = (scaled[:, None] - code[None, :]).abs()
    q = dist.argmin(dim=1).to(torch.uint8)
    return q, absmax


def nf4_case(case, model_name, seed, init):
    import bitsandbytes
    import bitsandbytes.functional as bnbf
    from bitsandbytes.backends.default.ops import _dequantize_4bit_compute
    from bitsandbytes.backends.utils import _get_4bit_code
    model, cfg, ids, targets = base_model(model_name)
    tensors = {"ids": ids.to(torch.int32), "targets": targets.to(torch.int32),
               "dynamic_map": bnbf.create_dynamic_map(signed=True).float()}
    names = [f"model.layers.{i}.{'self_attn' if t in TARGETS[:4] else 'mlp'}.{t}.weight"
             for i in range(cfg.num_hidden_layers) for t in TARGETS]
    params = dict(model.named_parameters())
    dynamic = bnbf.create_dynamic_map(signed=True).float()
    lut_differences, cpu_kernel_dequant_differs = [], []
    for name in names:
        w = params[name].detach().clone()
        q, st = bnbf.quantize_4bit(w, blocksize=64, compress_statistics=True, quant_type="nf4")
        _, plain = bnbf.quantize_4bit(w, blocksize=64, compress_statistics=False, quant_type="nf4")
        packed = q.reshape(-1)
        # Own implementation: must give the same bytes and absmax.
        ref_packed, ref_absmax = nf4_reference(w)
        assert torch.equal(plain.absmax, ref_absmax), name
        assert torch.equal(packed, ref_packed), f"{name}: packed NF4 differs from bitsandbytes"
        offset = ref_absmax.mean()
        assert torch.equal(offset, st.offset), name
        ref_q, ref_nested = blockwise_reference(ref_absmax - offset, dynamic)
        assert torch.equal(ref_nested, st.state2.absmax), name
        # bitsandbytes' CPU kernel picks the 8-bit code through a 65,536-bin lookup table, so a
        # value within ~1.5e-5 of a midpoint can go to the farther code; its CUDA kernel (and
        # this reference) take the nearest. Record where they differ; the fixture keeps nearest.
        differ = (ref_q != st.absmax)
        for i in differ.nonzero().flatten().tolist():
            scaled = ((ref_absmax[i] - offset) / ref_nested[i // 256]).item()
            lo, hi = sorted([dynamic[int(ref_q[i])].item(), dynamic[int(st.absmax[i])].item()])
            assert abs(scaled - (lo + hi) / 2) < 2 / 65535, (name, i, scaled, lo, hi)
            lut_differences.append(dict(weight=name, block=i, scaled=scaled,
                                        nearest=int(ref_q[i]), bitsandbytes_cpu=int(st.absmax[i])))
        st.absmax = ref_q  # bitsandbytes dequantises the nearest codes from here on
        absmax_dq = bnbf.dequantize_blockwise(st.absmax, st.state2) + st.offset
        ref_absmax_dq = dynamic[ref_q.long()] * ref_nested.repeat_interleave(256)[:ref_q.numel()] + offset
        assert torch.equal(ref_absmax_dq, absmax_dq), name
        idx = torch.stack([ref_packed >> 4, ref_packed & 15], dim=1).reshape(-1).long()
        ref_deq = (torch.tensor(NF4_CODE)[idx].reshape(-1, 64) * absmax_dq[:, None]).reshape(w.shape)
        # bitsandbytes' generic (pure torch) dequantisation must agree exactly. Its CPU C kernel
        # disagrees when in_features is not a multiple of 64 (this model's down_proj, in 96);
        # recorded, not used.
        deq = _dequantize_4bit_compute(q.reshape(-1), absmax_dq, _get_4bit_code("nf4", q.device),
                                       64, w.shape, torch.float32)
        assert torch.equal(deq, ref_deq), f"{name}: dequantised weight differs"
        if not torch.equal(bnbf.dequantize_4bit(q, st), ref_deq):
            cpu_kernel_dequant_differs.append(name)
        with torch.no_grad():
            params[name].copy_(deq)
        tensors[f"nf4.{name}.packed"] = packed
        tensors[f"nf4.{name}.absmax"] = absmax_dq
        tensors[f"nf4.{name}.absmax_fp32"] = plain.absmax
        tensors[f"nf4.{name}.absmax_q"] = ref_q
        tensors[f"nf4.{name}.nested_absmax"] = st.state2.absmax
        tensors[f"nf4.{name}.offset"] = st.offset.reshape(1)
    # LoRA forward/backward over the dequantised base (what a QLoRA layer computes in f32).
    peft, named, config, scaling = lora_model(model, use_rslora=False, seed=seed)
    with torch.no_grad():
        for k, p in named.items():
            p.copy_(init[k])
    loss = lm_loss(peft, ids, targets)
    loss.backward()
    tensors["loss"] = loss.detach().reshape(1)
    tensors.update({"grad." + k: p.grad.detach().clone() for k, p in named.items()})
    save(case, tensors)
    return dict(model=model_name, kind="qlora", r=config.r, lora_alpha=config.lora_alpha,
                use_rslora=False, scaling=scaling, target_modules=TARGETS, seed=seed,
                init_from="lora_llama_untied", block_size=64, double_quant=True, nested_block_size=256,
                bitsandbytes=bitsandbytes.__version__, quantized=names, loss=[loss.item()],
                bitsandbytes_cpu_double_quant_differences=lut_differences,
                bitsandbytes_cpu_dequantize_kernel_differs=cpu_kernel_dequant_differs,
                trainable=len(named))


# MARK: - output

def save(case, tensors):
    tensors = {k: v.detach().contiguous().clone() for k, v in tensors.items()}
    save_file(tensors, os.path.join(OUT, case + ".safetensors"))
    size = os.path.getsize(os.path.join(OUT, case + ".safetensors"))
    print(f"{case}: {len(tensors)} tensors, {size / 1024:.0f} KiB", file=sys.stderr)


if __name__ == "__main__":
    import peft
    import transformers
    os.makedirs(OUT, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    torch.manual_seed(0)
    cases = {}
    # Clip limits: llama's step-1 norm is above 0.5 (clipping engages), qwen2's below 5.
    cases["lora_llama_untied"], llama_init = lora_case(
        "lora_llama_untied", "llama_untied", use_rslora=False, steps=2, max_grad_norm=0.5, seed=11)
    cases["lora_qwen2_tied"], _ = lora_case(
        "lora_qwen2_tied", "qwen2_tied", use_rslora=False, steps=1, max_grad_norm=5.0, seed=12)
    cases["lora_llama_untied_rslora"], _ = lora_case(
        "lora_llama_untied_rslora", "llama_untied", use_rslora=True, steps=1, max_grad_norm=0.5,
        seed=11, init=llama_init)
    cases["lora_llama_untied_rslora"]["init_from"] = "lora_llama_untied"
    cases["full_llama_untied"] = full_case("full_llama_untied", "llama_untied", steps=2,
                                           max_grad_norm=1.0)
    cases["qlora_llama_untied"] = nf4_case("qlora_llama_untied", "llama_untied", seed=11,
                                           init=llama_init)
    meta = dict(generator="tools/make_peft_fixtures.py", torch=torch.__version__,
                peft=peft.__version__, transformers=transformers.__version__, cases=cases)
    with open(os.path.join(OUT, "peft_golden.json"), "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)
        f.write("\n")
    for name, c in cases.items():
        print(f"{name}: loss {c['loss']}, grad norm {c.get('grad_norm')}, "
              f"clipped {c.get('clip_engaged')}", file=sys.stderr)
