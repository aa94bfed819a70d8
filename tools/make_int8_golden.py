#!/usr/bin/env python3
"""Golden fixtures for `vkfinetune quantize`: int8 weight-only (W8A16) post-training quantisation
written as a Hugging Face directory in the compressed-tensors format (what vLLM and transformers
read), exactly as compressed-tensors itself quantises, packs and saves it. Nothing of the
quantiser is re-implemented for the fixture: compressed-tensors' own code is imported and called
(QuantizationArgs / QuantizationScheme / QuantizationConfig, apply_quantization_config,
calculate_qparams, quantize, dequantize, pack_to_int32, ModelCompressor), and the directories are
read back with transformers' AutoModelForCausalLM. The one piece not in compressed-tensors is the
weight observer (the min/max reduction that feeds calculate_qparams), which lives in llm-compressor;
observe_minmax() below mirrors llm-compressor 0.14.0.1's MemorylessMinMaxObserver, the default weight
observer (llmcompressor/observers/min_max.py and helpers.py _flatten_weight), line for line:
    tensor:  weight.reshape(1, 1, -1)                   → amin/amax over dims (0, −1) → (1,)
    channel: weight.unsqueeze(-2).unsqueeze(0)          → (out, 1)
    group:   weight.unflatten(-1, (-1, g)).unsqueeze(0) → (out, in/g)
then compressed_tensors.quantization.utils.calculate_qparams(min, max, args). With --llmcompressor
DIR (a folder holding llm-compressor's llmcompressor/ package, e.g. its wheel unzipped) the real
observer classes are imported from there (only observers/: the package's __init__ is skipped, its
pins — compressed-tensors 0.19, transformers ≤ 5.17 — do not fit this venv) and must agree.
Cross-checks besides (the script stops on any failure): for tensor and group, compressed-tensors'
own compute_dynamic_scales_and_zp gives the same scale and zero point; and an independent numpy
implementation of the arithmetic below (spec_qparams / spec_quantize / spec_pack) reproduces every
stored byte of every setting, every edge row, the bf16 block and the packing block.

The arithmetic (compressed-tensors 0.20.1, weight dtype f32; every op is one IEEE f32 op, RNE):
  lo = min(amin(block), 0), hi = max(amax(block), 0)      (0 is always representable)
  symmetric:  scale = max(|lo|, |hi|) / 127.5              (bit range 255 / 2, not 127)
              zp = 0 (not stored)
  asymmetric: scale = (hi − lo) / 255
              zp = rint_even(clamp(−128 − lo / scale, −128, 127)) as int8, NaN → 0
              (computed with the scale before the eps fix below: an all-zero block has
              0 / 0 = NaN → 0; a scale that underflows to 0 with lo < 0 gives +inf → 127)
  scale == 0 → scale = 2^−23 (torch.finfo(f32).eps)
  q = int8(rint_even(clamp(x / scale + f32(zp), −128, 127)))   (a true division, not × 1/scale;
      the range is the full −128…127 also for symmetric: x = −amax gives x/scale ≈ −127.5,
      which may round to −128)
  dequantised weight = (f32(q) − f32(zp)) × scale
For bf16 weights every one of these ops is rounded to bf16 (scale and zp computed in bf16,
x / scale rounded to bf16 before + zp and rint; eps = 2^−7) on the CPU path used here; the bf16
block records that. (compressed-tensors' CUDA/Triton quantize kernel computes x / scale + zp in
f32 instead, so bf16 results there may differ; f32 weights are unaffected.)

Model: the tiny llama_untied of tools/make_fixtures.py (hidden 64, 2 layers, 4 heads, 2 kv heads,
intermediate 96, vocab 97, untied), its committed weights
Tests/VKFModelTests/Fixtures/golden/llama_untied.weights.safetensors (f32) and the ids of
llama_untied.expected.safetensors (2 × 7); the Swift test loads the same files.

Settings (targets ["Linear"], ignore ["lm_head"], num_bits 8, type int, dynamic false, no
activation quantisation; weights.observer "memoryless_minmax", as llm-compressor writes it):
  sym_tensor, sym_channel, sym_group32, asym_tensor, asym_channel, asym_group32
in the format compressed-tensors infers (pack-quantized), plus two forced to "naive-quantized"
(sym_channel_naive, asym_group32_naive) to document the unpacked int8 layout. Each one: a fresh
model, apply_quantization_config (status initialized), observe_minmax per quantised Linear copied
into weight_scale / weight_zero_point (status frozen), then llm-compressor's save sequence
(save_pretrained_wrapper without the recipe/accelerate parts):
    c = ModelCompressor.from_pretrained_model(model, quantization_format=fmt)
    c.compress_model(model, skip_compressed=True); model.save_pretrained(dir); c.update_config(dir)
Quantised: the 7 projections of both layers (14 Linears); embed_tokens, norms and lm_head stay f32.
Every saved directory is loaded back with AutoModelForCausalLM.from_pretrained(dir,
attn_implementation="eager") twice: as is (compressed-tensors decompresses on the first forward)
and with quantization_config=CompressedTensorsConfig(dequantize=True); its logits on the ids must
equal, bit for bit, the f32 model whose projections are the dequantised weights above. Known
failure, recorded and allowed: the as-is load of asym channel/group pack-quantized stops
("size mismatch" on weight_zero_point: compressed-tensors 0.20.1 compresses the empty model on the
meta device without packing the zero point, (out, G) int8 vs the checkpoint's (out/4, G) int32);
dequantize=True loads them.

Writes Tests/VKFPEFTTests/Fixtures/int8/:
  config_example.json   the config.json written for sym_channel (a byte copy)
  int8_golden.json
  {"generator", "versions": {compressed_tensors, transformers, torch, llmcompressor_observer},
   "model": {"config", "weights": repo paths, "weights_fnv1a64", "ids": [[int]] (2 × 7)},
   "settings": [{"name", "symmetric", "strategy", "group_size" (null unless group), "format",
       "quantization_config": the dict under config.json's "quantization_config", as written,
       "files": [file names in the saved directory],
       "tensors": [{"name", "dtype" (safetensors: "F32", "I32", "I64", "I8"), "shape",
                    "fnv1a64": of the stored bytes, "hex": the stored bytes (little-endian) —
                    for every quantised module's tensors in asym_group32 (group scales and the
                    packed zero point: the layout with the most to get wrong), and for
                    FULL_MODULE's tensors in every setting}]
                  every tensor of model.safetensors, in the order of their data in the file
                  (safetensors' own order: by dtype, I64 then F32 then I32 then I8, then name),
       "modules": {"<module>": {"shape": [out, in], "q_fnv1a64": int8 q (out, in) row-major,
                    "scale_fnv1a64": f32 (scale shape), "zero_point_fnv1a64": int8 (scale shape)
                    or null (symmetric)}}  the logical values before packing,
       "load_back": {"as_is": "equal" | "error: …", "dequantize": "equal"},
       "logits_fnv1a64": f32 bytes of the logits (2, 7, 97) of the dequantised model,
       "logits_max_abs_diff_vs_f32": against the unquantised model (for choosing tolerances)}],
   "full_module": FULL_MODULE,
   "logits": {"setting": "sym_channel", "shape": [2, 7, 97], "values": flat f32 list},
   "edge": {"columns": 64, "labels": [...], "inputs": [[64 f32 per row]],
       "results": {"<setting>": [{"q": hex of 64 int8, "scale": hex f32 (1 value; group: 2),
                    "zero_point": hex int8 (same count; symmetric: zeros), "deq": hex of 64 f32
                    dequantised values}]}}   each row quantised on its own as a (1, 64) weight
                    (tensor and channel then agree, checked); group = 2 groups of 32
   "bf16": {"shape": [4, 64], "inputs": hex of bf16 (u16 LE), "results": {"sym_channel",
       "sym_group32", "asym_channel", "asym_group32": {"q", "scale" (bf16 hex), "zero_point",
       "deq" (bf16 hex)}}},
   "packing": {"q": [[int8]] (5 × 7), "packed_dim1": hex of int32 (5, 2), "packed_dim0": hex of
       int32 (2, 7)}  compressed-tensors' pack_to_int32 with padding (7 and 5 not multiples of 4)}
  Floats in "inputs" and "values" are written as float(np.float32(x)): doubles equal to the f32
  (−0.0 kept); checked by re-parsing. fnv1a64: FNV-1a 64 (offset basis 0xcbf29ce484222325, prime
  0x100000001b3) as 16 lowercase hex digits.

Stored layout (pack-quantized): <m>.weight_packed int32 (out, ceil(in/4)): the bytes, little-endian,
are u8(q + 128) in row-major order (each word holds 4 consecutive columns, column j in bits
8(j mod 4)…; a row's padding to a multiple of 32 columns is 0 bytes, cut after ceil(in/4) words);
<m>.weight_scale, dtype of the weight: (1,) tensor, (out, 1) channel, (out, in/g) group;
<m>.weight_shape int64 (2,) = [out, in]; asymmetric only: <m>.weight_zero_point, int8 (1,) for
tensor, else int32 (ceil(out/4), G) packed along dim 0 (word [r, g] holds u8(zp + 128) of rows
4r…4r+3 of column g). naive-quantized: <m>.weight int8 (out, in), weight_scale as above,
asymmetric weight_zero_point int8 of the scale's shape. No g_idx. Safetensors metadata
{"format": "pt"}; generation_config.json is written too.

Run with the reference venv (torch, transformers 5.25, compressed-tensors 0.20.1):
  $VKF_REF_VENV/bin/python tools/make_int8_golden.py [--llmcompressor DIR]
"""
import argparse
import importlib.metadata
import json
import os
import struct
import sys
import tempfile
import types

import numpy as np
import torch

from compressed_tensors.compressors import ModelCompressor
from compressed_tensors.compressors.pack_quantized.helpers import pack_to_int32, unpack_from_int32
from compressed_tensors.quantization import (QuantizationArgs, QuantizationConfig, QuantizationScheme,
                                             QuantizationStatus, apply_quantization_config)
from compressed_tensors.quantization.lifecycle.forward import dequantize, quantize
from compressed_tensors.quantization.utils import (calculate_qparams, compute_dynamic_scales_and_zp,
                                                   is_module_quantized)
from transformers import AutoModelForCausalLM, CompressedTensorsConfig

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_peft_fixtures import base_model  # noqa: E402  (the committed tiny model, checked)

OUT = os.path.join(HERE, "..", "Tests", "VKFPEFTTests", "Fixtures", "int8")
BASE = "llama_untied"
MODEL_FIXTURES_REL = "Tests/VKFModelTests/Fixtures/golden"
GROUP = 32
SETTINGS = [  # (name, symmetric, strategy, group_size, forced format or None)
    ("sym_tensor", True, "tensor", None, None),
    ("sym_channel", True, "channel", None, None),
    ("sym_group32", True, "group", GROUP, None),
    ("asym_tensor", False, "tensor", None, None),
    ("asym_channel", False, "channel", None, None),
    ("asym_group32", False, "group", GROUP, None),
    ("sym_channel_naive", True, "channel", None, "naive-quantized"),
    ("asym_group32_naive", False, "group", GROUP, "naive-quantized"),
]
FULL_SETTINGS = ("asym_group32",)  # every quantised tensor's bytes in the JSON
FULL_MODULE = "model.layers.0.mlp.down_proj"     # (64, 96): 3 groups, 24 packed words per row
LOGITS_SETTING = "sym_channel"
CONFIG_EXAMPLE = "sym_channel"
PROJECTIONS = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
               "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
EDGE_SETTINGS = [s for s in SETTINGS if s[4] is None]
SEED_EDGE = 11
F32 = np.float32
EPS32 = F32(2.0 ** -23)


# ---------------------------------------------------------------- helpers

FNV_OFFSET, FNV_PRIME, MASK64 = 0xcbf29ce484222325, 0x100000001b3, (1 << 64) - 1


def fnv1a64(data):
    h = FNV_OFFSET
    for b in bytes(data):
        h = ((h ^ b) * FNV_PRIME) & MASK64
    return f"{h:016x}"


def check_fnv():
    assert fnv1a64(b"") == "cbf29ce484222325"
    assert fnv1a64(b"a") == "af63dc4c8601ec8c"
    assert fnv1a64(b"foobar") == "85944171f73967e8"


def le_bytes(a):
    """The little-endian bytes of a numpy array, row-major."""
    a = np.ascontiguousarray(a)
    return a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes()


def f32_list(a):
    return [float(F32(x)) for x in np.asarray(a, dtype=F32).reshape(-1)]


def read_safetensors_raw(path):
    """[(name, dtype, shape, raw bytes)] in data order, and the metadata, straight from the file."""
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    meta = header.pop("__metadata__", None)
    base = 8 + n
    items = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    out = [(k, v["dtype"], v["shape"], blob[base + v["data_offsets"][0]:base + v["data_offsets"][1]])
           for k, v in items]
    return out, meta, list(header)


# ---------------------------------------------------------------- compressed-tensors calls

def weight_args(symmetric, strategy, group_size):
    args = QuantizationArgs(num_bits=8, type="int", symmetric=symmetric, strategy=strategy,
                            group_size=group_size, dynamic=False)
    # llm-compressor's QuantizationMixin assigns the default weight observer after construction,
    # which marks the field as user-set, so it is serialised into config.json.
    args.observer = "memoryless_minmax"
    return args


def observe_minmax(weight, args):
    """llm-compressor 0.14.0.1 MemorylessMinMaxObserver on a weight, then calculate_qparams."""
    if args.strategy == "tensor":
        flat = weight.reshape((1, 1, -1))
    elif args.strategy == "channel":
        flat = weight.unsqueeze(-2).unsqueeze(0)
    elif args.strategy == "group":
        flat = weight.unflatten(-1, (-1, args.group_size)).unsqueeze(0)
    else:
        raise ValueError(args.strategy)
    lo = torch.amin(flat, dim=(0, -1))
    hi = torch.amax(flat, dim=(0, -1))
    return calculate_qparams(min_vals=lo, max_vals=hi, quantization_args=args)


class LLMCompressorObserver:
    """The real observer, imported from an unpacked llm-compressor (observers/ only)."""

    def __init__(self, root):
        pkg = os.path.join(os.path.abspath(root), "llmcompressor")
        assert os.path.isfile(os.path.join(pkg, "observers", "min_max.py")), pkg
        for name, path in (("llmcompressor", pkg), ("llmcompressor.observers", os.path.join(pkg, "observers"))):
            m = types.ModuleType(name)
            m.__path__ = [path]
            sys.modules[name] = m
        import llmcompressor.observers.base as base  # noqa: E402
        import llmcompressor.observers.min_max  # noqa: F401,E402  (registers memoryless_minmax)
        self.Observer = base.Observer
        self.version = "unknown"
        for d in os.listdir(os.path.abspath(root)):
            if d.startswith("llmcompressor-") and d.endswith(".dist-info"):
                self.version = d[len("llmcompressor-"):-len(".dist-info")]

    def __call__(self, weight, args):
        obs = self.Observer.load_from_registry("memoryless_minmax", base_name="weight", args=args.model_copy())
        obs(weight)
        qp = obs.get_qparams()
        return qp["scale"], qp["zero_point"]


def cross_check_qparams(weight, args, scale, zp, real_observer):
    if args.strategy in ("tensor", "group"):  # compressed-tensors' own min-max (dynamic quant)
        s2, z2 = compute_dynamic_scales_and_zp(weight, args, module=None)
        assert torch.equal(s2.reshape(scale.shape), scale) and torch.equal(z2.reshape(zp.shape), zp)
    else:
        lo = weight.amin(dim=-1, keepdim=True)
        hi = weight.amax(dim=-1, keepdim=True)
        s2, z2 = calculate_qparams(lo, hi, args)
        assert torch.equal(s2, scale) and torch.equal(z2, zp)
    if real_observer is not None:
        s3, z3 = real_observer(weight, args)
        assert torch.equal(s3, scale) and torch.equal(z3, zp), "llm-compressor's observer disagrees"


# ---------------------------------------------------------------- the spec, in numpy

def spec_qparams(w, symmetric, strategy, group_size):
    """scale f32 and zp int8, shaped (1,), (out, 1) or (out, G), as specified in the docstring."""
    w = np.asarray(w, dtype=F32)
    if strategy == "tensor":
        blocks = w.reshape(1, -1)
    elif strategy == "channel":
        blocks = w.reshape(w.shape[0], 1, -1)
    else:
        blocks = w.reshape(w.shape[0], -1, group_size)
    lo = np.minimum(blocks.min(axis=-1), F32(0))
    hi = np.maximum(blocks.max(axis=-1), F32(0))
    with np.errstate(all="ignore"):
        if symmetric:
            scale = np.maximum(np.abs(lo), np.abs(hi)) / F32(127.5)
            zp = np.zeros(scale.shape, dtype=np.int8)
        else:
            scale = (hi - lo) / F32(255.0)
            z = F32(-128.0) - lo / scale
            z = np.rint(np.clip(z, F32(-128), F32(127)))
            zp = np.where(np.isnan(z), F32(0), z).astype(np.int8)
    scale = np.where(scale == 0, EPS32, scale).astype(F32)
    if strategy == "tensor":
        scale, zp = scale.reshape(1), zp.reshape(1)
    return scale, zp


def expand(p, strategy, group_size, cols):
    if strategy == "group":
        return np.repeat(p, group_size, axis=1)
    return p  # (1,) or (out, 1): broadcasts


def spec_quantize(w, scale, zp, strategy, group_size):
    w = np.asarray(w, dtype=F32)
    s = expand(scale, strategy, group_size, w.shape[1])
    z = expand(zp, strategy, group_size, w.shape[1]).astype(F32)
    with np.errstate(all="ignore"):
        return np.rint(np.clip(w / s + z, F32(-128), F32(127))).astype(np.int8)


def spec_dequantize(q, scale, zp, strategy, group_size):
    s = expand(scale, strategy, group_size, q.shape[1])
    z = expand(zp, strategy, group_size, q.shape[1]).astype(F32)
    with np.errstate(all="ignore"):
        return ((q.astype(F32) - z) * s).astype(F32)


def spec_pack(q, dim=1):
    """compressed-tensors' 8-bit pack_to_int32: u8(q + 128) bytes, 4 per little-endian int32."""
    u = (q.astype(np.int16) + 128).astype(np.uint8)
    if dim == 0:
        u = u.T
    rows, cols = u.shape
    words = -(-cols // 4)
    padded = np.zeros((rows, -(-cols // 32) * 32), dtype=np.uint8)
    padded[:, :cols] = u
    packed = padded[:, :words * 4].copy().view("<i4").reshape(rows, words)
    return np.ascontiguousarray(packed.T if dim == 0 else packed)


# ---------------------------------------------------------------- whole-model settings

def quantise_and_save(name, symmetric, strategy, group_size, fmt, out_dir, real_observer):
    model, cfg, ids, _ = base_model(BASE)
    args = weight_args(symmetric, strategy, group_size)
    scheme = QuantizationScheme(targets=["Linear"], weights=args)
    config = QuantizationConfig(config_groups={"group_0": scheme}, kv_cache_scheme=None,
                                quantization_status=QuantizationStatus.INITIALIZED, ignore=["lm_head"])
    originals = {k: v.detach().clone() for k, v in model.state_dict().items()}
    apply_quantization_config(model, config, show_progress=False)
    expected = {}
    for mname, module in model.named_modules():
        if not is_module_quantized(module):
            continue
        w = module.weight.detach()
        margs = module.quantization_scheme.weights
        scale, zp = observe_minmax(w, margs)
        cross_check_qparams(w, margs, scale, zp, real_observer)
        assert scale.dtype == torch.float32 and zp.dtype == torch.int8, (scale.dtype, zp.dtype)
        assert module.weight_scale.shape == scale.shape and module.weight_zero_point.shape == zp.shape
        with torch.no_grad():
            module.weight_scale.copy_(scale)
            module.weight_zero_point.copy_(zp)
        module.quantization_status = QuantizationStatus.FROZEN
        s_np, z_np = spec_qparams(w.numpy(), symmetric, strategy, group_size)
        assert np.array_equal(s_np.view(np.uint32), scale.numpy().view(np.uint32)), mname
        assert np.array_equal(z_np, zp.numpy()), mname
        q_np = spec_quantize(w.numpy(), s_np, z_np, strategy, group_size)
        q_ct = quantize(w, scale, zp, margs, dtype=torch.int8)
        assert np.array_equal(q_np, q_ct.numpy()), mname
        expected[mname] = (q_np, s_np, z_np)
    want = sorted(f"model.layers.{i}.{p}" for i in range(cfg.num_hidden_layers) for p in PROJECTIONS)
    assert sorted(expected) == want, sorted(expected)
    compressor = ModelCompressor.from_pretrained_model(model, quantization_format=fmt)
    compressor.compress_model(model, skip_compressed=True)
    model.save_pretrained(out_dir)
    compressor.update_config(out_dir)
    return expected, originals, ids


def check_saved(out_dir, symmetric, strategy, group_size, fmt, expected, originals):
    """Every stored tensor equals the spec's bytes; returns (config, tensors, meta)."""
    with open(os.path.join(out_dir, "config.json")) as f:
        qc = json.load(f)["quantization_config"]
    fmt_name = fmt or "pack-quantized"
    assert qc["format"] == fmt_name and qc["quant_method"] == "compressed-tensors", qc
    assert qc["quantization_status"] == "compressed" and qc["ignore"] == ["lm_head"], qc
    g = qc["config_groups"]["group_0"]
    assert g["format"] == fmt_name and g["targets"] == ["Linear"] and g["input_activations"] is None
    assert g["weights"]["symmetric"] == symmetric and g["weights"]["strategy"] == strategy
    tensors, meta, _ = read_safetensors_raw(os.path.join(out_dir, "model.safetensors"))
    assert meta == {"format": "pt"}, meta
    stored = {k: (dt, shape, raw) for k, dt, shape, raw in tensors}
    seen = set()
    for mname, (q, s, z) in expected.items():
        out, cols = q.shape
        names = {f"{mname}.weight_scale": ("F32", list(s.shape), le_bytes(s))}
        if fmt_name == "pack-quantized":
            names[f"{mname}.weight_packed"] = ("I32", [out, -(-cols // 4)], le_bytes(spec_pack(q)))
            names[f"{mname}.weight_shape"] = ("I64", [2], le_bytes(np.array([out, cols], dtype=np.int64)))
            if not symmetric:
                if strategy == "tensor":
                    names[f"{mname}.weight_zero_point"] = ("I8", [1], le_bytes(z))
                else:
                    pz = spec_pack(z, dim=0)
                    names[f"{mname}.weight_zero_point"] = ("I32", list(pz.shape), le_bytes(pz))
        else:
            names[f"{mname}.weight"] = ("I8", [out, cols], le_bytes(q))
            if not symmetric:
                names[f"{mname}.weight_zero_point"] = ("I8", list(z.shape), le_bytes(z))
        for key, want in names.items():
            assert key in stored, key
            assert stored[key] == want, (key, stored[key][:2], want[:2])
            seen.add(key)
        if fmt_name == "pack-quantized":  # compressed-tensors' own unpacking gives q back
            dt, shape, raw = stored[f"{mname}.weight_packed"]
            packed = torch.from_numpy(np.frombuffer(raw, dtype="<i4").reshape(shape).copy())
            assert np.array_equal(unpack_from_int32(packed, 8, torch.Size([out, cols])).numpy(), q)
    for key, (dt, shape, raw) in stored.items():
        if key in seen:
            continue
        assert key in originals, f"unexpected tensor {key}"
        ref = originals[key].numpy()
        assert dt == "F32" and shape == list(ref.shape) and raw == le_bytes(ref), key
        seen.add(key)
    assert seen == set(stored)
    replaced = {f"{m}.weight" for m in expected} if fmt_name == "pack-quantized" else set()
    assert set(originals) - set(stored) == replaced
    return qc, tensors


def dense_logits(expected, strategy, group_size, ids):
    """The f32 model with every projection replaced by its dequantised weight."""
    model, _, _, _ = base_model(BASE)
    with torch.no_grad():
        for mname, (q, s, z) in expected.items():
            deq = spec_dequantize(q, s, z, strategy, group_size)
            model.get_submodule(mname).weight.copy_(torch.from_numpy(deq))
        return model(input_ids=ids).logits


def load_back(out_dir, ids, ref_logits):
    result = {}
    for mode in ("as_is", "dequantize"):
        kw = {} if mode == "as_is" else {"quantization_config": CompressedTensorsConfig(dequantize=True)}
        try:
            m = AutoModelForCausalLM.from_pretrained(out_dir, dtype=torch.float32,
                                                     attn_implementation="eager", **kw)
        except RuntimeError as e:
            result[mode] = "error: " + str(e).strip().splitlines()[0][:160]
            continue
        m.train(False)
        with torch.no_grad():
            logits = m(input_ids=ids).logits
        assert torch.equal(logits, ref_logits), f"{out_dir} {mode}: logits differ from the dequantised model"
        result[mode] = "equal"
    return result


def run_settings(tmp, real_observer):
    out, logits_values, config_example = [], None, None
    f32_model, _, ids, _ = base_model(BASE)
    with torch.no_grad():
        f32_logits = f32_model(input_ids=ids).logits
    for name, symmetric, strategy, group_size, fmt in SETTINGS:
        out_dir = os.path.join(tmp, name)
        expected, originals, ids = quantise_and_save(name, symmetric, strategy, group_size, fmt,
                                                     out_dir, real_observer)
        qc, tensors = check_saved(out_dir, symmetric, strategy, group_size, fmt, expected, originals)
        ref = dense_logits(expected, strategy, group_size, ids)
        loaded = load_back(out_dir, ids, ref)
        assert loaded["dequantize"] == "equal", loaded
        if loaded["as_is"] != "equal":  # the known compressed-tensors 0.20.1 meta-path failure only
            assert (not symmetric and strategy in ("channel", "group") and fmt is None
                    and "mismatch" in loaded["as_is"]), (name, loaded)
        full = name in FULL_SETTINGS
        rows = []
        for key, dt, shape, raw in tensors:
            row = {"name": key, "dtype": dt, "shape": shape, "fnv1a64": fnv1a64(raw)}
            quantised = key.rsplit(".", 1)[0] in expected
            if quantised and (full or key.startswith(FULL_MODULE + ".")):
                row["hex"] = raw.hex()
            rows.append(row)
        modules = {}
        for mname, (q, s, z) in sorted(expected.items()):
            modules[mname] = {"shape": list(q.shape), "q_fnv1a64": fnv1a64(le_bytes(q)),
                              "scale_fnv1a64": fnv1a64(le_bytes(s)),
                              "zero_point_fnv1a64": None if symmetric else fnv1a64(le_bytes(z))}
        ref_np = ref.numpy().astype(F32)
        out.append({"name": name, "symmetric": symmetric, "strategy": strategy, "group_size": group_size,
                    "format": fmt or "pack-quantized", "quantization_config": qc,
                    "files": sorted(os.listdir(out_dir)), "tensors": rows, "modules": modules,
                    "load_back": loaded, "logits_fnv1a64": fnv1a64(le_bytes(ref_np)),
                    "logits_max_abs_diff_vs_f32": float((ref - f32_logits).abs().max())})
        if name == LOGITS_SETTING:
            logits_values = {"setting": name, "shape": list(ref_np.shape), "values": f32_list(ref_np)}
        if name == CONFIG_EXAMPLE:
            with open(os.path.join(out_dir, "config.json"), "rb") as f:
                config_example = f.read()
        print(f"{name:20s} {fmt or 'pack-quantized':15s} tensors {len(tensors):3d}  as_is: {loaded['as_is'][:60]}"
              f"  dequantize: {loaded['dequantize']}  max|Δlogits| vs f32 {out[-1]['logits_max_abs_diff_vs_f32']:.3g}")
    return out, logits_values, config_example, ids


# ---------------------------------------------------------------- edge rows, bf16, packing

def edge_rows():
    rng = np.random.default_rng(SEED_EDGE)
    n, half = 64, 32
    rows = []

    z = np.zeros(n)
    z[[3, 17, 40, 63]] = -0.0
    rows.append(("zeros", z))
    rows.append(("constant_pos", np.full(n, 0.3)))
    rows.append(("constant_neg", np.full(n, -0.7)))
    rows.append(("normal", 0.02 * rng.standard_normal(n)))
    o = 0.01 * rng.standard_normal(n)
    o[5] = 50.0  # one outlier, in group 0 only
    rows.append(("outlier", o))

    # symmetric: amax 127.5 in both groups → scale = 1 exactly, so k + 0.5 are exact ties
    # (asymmetric: lo −127.5, hi 127.5 → scale 1, zp = −128 + 127.5 = −0.5 → −0 → 0: ties again)
    ties = [127.5, -127.5, 0.5, -0.5, 1.5, -1.5, 2.5, -2.5, 3.5, -3.5, 10.5, -10.5, 63.5, -64.5,
            125.5, -125.5, 126.5, -126.5, 0.0, 1.0, -1.0, 99.5, -100.5, 7.5, -8.5, 44.5, -44.5,
            0.25, -0.75, 0.49999997, -0.50000006, 127.0]
    rows.append(("sym_ties", np.array(ties + ties[::-1])))
    # asymmetric: lo −128, hi 127 in both groups → scale 1, zp 0 (symmetric: scale 128/127.5)
    at = [127.0, -128.0] + ties[2:]
    rows.append(("asym_ties", np.array(at + at[::-1])))
    # asymmetric zero-point ties: lo −64.5, hi 190.5 → scale 1, zp = −63.5 → −64 (half to even);
    # lo −63.5, hi 191.5 → zp = −64.5 → −64
    for label, lo, hi in (("zp_tie_a", -64.5, 190.5), ("zp_tie_b", -63.5, 191.5)):
        r = rng.uniform(lo, hi, n)
        r[[0, half]] = lo
        r[[1, half + 1]] = hi
        r[2:10] = [lo + 0.5, lo + 1.5, 0.5, 1.5, 2.5, -0.5, hi - 0.5, hi - 1.5]
        rows.append((label, r))
    # amax 1 (scale = f32(1/127.5), inexact): the exact half-step points s·(k + 0.5) in f32 and
    # their f32 neighbours, where x / s (a division) decides the rounding
    s = F32(1.0) / F32(127.5)
    pts = [F32(s * F32(k + 0.5)) for k in (0, 1, 2, 5, 17, 63, 100, 125, 126)]
    near = []
    for i, p in enumerate(pts):
        near += [np.nextafter(p, F32(np.inf), dtype=F32), np.nextafter(p, F32(-np.inf), dtype=F32)]
    g0 = [1.0, -1.0] + pts + near + [-p for p in pts[:3]]
    g0 = (g0 + [0.0] * half)[:half]
    g1 = [-1.0, 1.0] + [-p for p in pts] + [-x for x in near] + pts[:3]
    g1 = (g1 + [0.0] * half)[:half]
    rows.append(("inexact_division", np.array(g0 + g1, dtype=F32)))
    t = 1e-40 * rng.standard_normal(n)
    t[[3, 40]] = [-3e-42, 1.4e-45]
    rows.append(("tiny_subnormal", t))
    p = np.zeros(n)
    p[[0, half]] = 1.4e-45  # hi − lo = smallest subnormal: scale underflows to 0 (asym: zp 0/0)
    rows.append(("min_subnormal_pos", p))
    rows.append(("min_subnormal_neg", -p))  # asym: zp = −128 − (lo / 0) = +inf → 127
    rows.append(("large", 1e4 * rng.standard_normal(n)))
    ov = 1e37 * rng.standard_normal(n)
    ov[[0, half]] = 3e38
    ov[[1, half + 1]] = -3e38  # asym: hi − lo overflows f32 → scale inf (dequantised NaN)
    rows.append(("f32_overflow", ov))
    rows.append(("negative_only", rng.uniform(-1.0, -0.5, n)))
    rows.append(("positive_only", rng.uniform(0.5, 1.0, n)))

    labels = [r[0] for r in rows]
    data = np.stack([np.asarray(r[1], dtype=np.float64).astype(F32) for r in rows])
    assert data.shape == (len(rows), n)
    return labels, data


def nan_equal_bits(a, b):
    """f32 arrays equal bit for bit, except that any NaN matches any NaN."""
    a, b = np.asarray(a, dtype=F32), np.asarray(b, dtype=F32)
    both = np.isnan(a) & np.isnan(b)
    return np.array_equal(np.where(both, F32(0), a).view(np.uint32), np.where(both, F32(0), b).view(np.uint32))


def quantise_rows(data, symmetric, strategy, group_size, real_observer):
    """Each row quantised on its own as a (1, cols) weight with compressed-tensors' functions."""
    args = weight_args(symmetric, strategy, group_size)
    out = []
    for row in data:
        w = torch.from_numpy(row.reshape(1, -1).copy())
        scale, zp = observe_minmax(w, args)
        cross_check_qparams(w, args, scale, zp, real_observer)
        q = quantize(w, scale, zp, args, dtype=torch.int8)
        deq = dequantize(q, scale, zp, args)
        s_np, z_np = spec_qparams(w.numpy(), symmetric, strategy, group_size)
        assert np.array_equal(s_np.view(np.uint32), scale.numpy().view(np.uint32))
        assert np.array_equal(z_np, zp.numpy())
        q_np = spec_quantize(w.numpy(), s_np, z_np, strategy, group_size)
        assert np.array_equal(q_np, q.numpy())
        d_np = spec_dequantize(q_np, s_np, z_np, strategy, group_size)
        assert deq.dtype == torch.float32 and nan_equal_bits(d_np, deq.numpy())
        out.append({"q": le_bytes(q.numpy()).hex(), "scale": le_bytes(scale.numpy()).hex(),
                    "zero_point": le_bytes(zp.numpy()).hex(), "deq": le_bytes(deq.numpy()).hex()})
    return out


def run_edge(real_observer):
    labels, data = edge_rows()
    results = {}
    for name, symmetric, strategy, group_size, _ in EDGE_SETTINGS:
        results[name] = quantise_rows(data, symmetric, strategy, group_size, real_observer)
    for sym in ("sym", "asym"):  # a one-row tensor is one channel
        assert results[f"{sym}_tensor"] == results[f"{sym}_channel"]
    print("\nedge rows (channel; scale, zp):")
    for i, label in enumerate(labels):
        cells = []
        for name in ("sym_channel", "asym_channel"):
            r = results[name][i]
            s = np.frombuffer(bytes.fromhex(r["scale"]), dtype="<f4")[0]
            z = np.frombuffer(bytes.fromhex(r["zero_point"]), dtype=np.int8)[0]
            cells.append(f"{float(s)!r:>24s} {int(z):4d}")
        print(f"  {label:18s} sym {cells[0]}   asym {cells[1]}")
    return {"columns": int(data.shape[1]), "labels": labels,
            "inputs": [f32_list(r) for r in data], "results": results}, data


def bf16_bits_to_f32(u16):
    return (u16.astype(np.uint32) << 16).view(F32)


def bf(x):
    """Round f32 to bf16 (RNE) and back: torch's rounding, one step."""
    return torch.from_numpy(np.ascontiguousarray(x, dtype=F32)).to(torch.bfloat16).float().numpy()


def run_bf16():
    rng = np.random.default_rng(SEED_EDGE + 1)
    x = rng.standard_normal((4, 64)) * np.array([[0.02], [1.0], [37.0], [0.3]])
    x[3, 5] = -9.0  # one outlier
    w = torch.from_numpy(x.astype(F32)).to(torch.bfloat16)
    results = {}
    for symmetric in (True, False):
        for strategy, gs in (("channel", None), ("group", GROUP)):
            name = f"{'sym' if symmetric else 'asym'}_{'channel' if gs is None else 'group32'}"
            args = weight_args(symmetric, strategy, gs)
            scale, zp = observe_minmax(w, args)
            assert scale.dtype == torch.bfloat16 and zp.dtype == torch.int8
            q = quantize(w, scale, zp, args, dtype=torch.int8)
            deq = dequantize(q, scale, zp, args)
            assert deq.dtype == torch.bfloat16
            # the spec with every op rounded to bf16
            wf = w.float().numpy()
            blocks = wf.reshape(4, 1, -1) if gs is None else wf.reshape(4, -1, gs)
            lo = np.minimum(blocks.min(-1), 0).astype(F32)
            hi = np.maximum(blocks.max(-1), 0).astype(F32)
            with np.errstate(all="ignore"):
                if symmetric:
                    s = bf(np.maximum(-lo, hi) / F32(127.5))
                    z = np.zeros_like(s)
                else:
                    s = bf(bf(hi - lo) / F32(255.0))
                    z = np.rint(np.clip(bf(F32(-128) - bf(lo / s)), -128, 127))
                    z = np.where(np.isnan(z), 0, z).astype(F32)
                s = np.where(s == 0, F32(2.0 ** -7), s).astype(F32)
                se, ze = expand(s, strategy, gs, 64), expand(z, strategy, gs, 64)
                q_np = np.rint(np.clip(bf(bf(wf / se) + ze), -128, 127)).astype(np.int8)
                d_np = bf(bf(q_np.astype(F32) - ze) * se)
                q_f32 = np.rint(np.clip(wf / se + ze, -128, 127)).astype(np.int8)
            assert np.array_equal(s, scale.float().numpy()) and np.array_equal(z, zp.numpy().astype(F32))
            assert np.array_equal(q_np, q.numpy()) and np.array_equal(d_np, deq.float().numpy())
            print(f"bf16 {name:14s}: {(q_f32 != q_np).sum()} of {q_np.size} q differ if x/scale is not rounded to bf16")
            results[name] = {"q": le_bytes(q.numpy()).hex(),
                             "scale": le_bytes(scale.view(torch.int16).numpy()).hex(),
                             "zero_point": le_bytes(zp.numpy()).hex(),
                             "deq": le_bytes(deq.view(torch.int16).numpy()).hex()}
    bits = w.view(torch.int16).numpy()
    assert np.array_equal(bf16_bits_to_f32(bits.view(np.uint16)), w.float().numpy())
    return {"shape": [4, 64], "inputs": le_bytes(bits).hex(), "results": results}


def run_packing():
    rng = np.random.default_rng(SEED_EDGE + 2)
    q = rng.integers(-128, 128, size=(5, 7)).astype(np.int8)
    q[0, :3] = [-128, 127, 0]
    p1 = pack_to_int32(torch.from_numpy(q), 8).numpy()
    p0 = pack_to_int32(torch.from_numpy(q), 8, packed_dim=0).numpy()
    assert p1.shape == (5, 2) and p0.shape == (2, 7), (p1.shape, p0.shape)
    assert np.array_equal(p1, spec_pack(q)) and np.array_equal(p0, spec_pack(q, dim=0))
    assert np.array_equal(unpack_from_int32(torch.from_numpy(p1), 8, torch.Size([5, 7])).numpy(), q)
    assert np.array_equal(unpack_from_int32(torch.from_numpy(p0), 8, torch.Size([5, 7]), packed_dim=0).numpy(), q)
    return {"q": q.tolist(), "packed_dim1": le_bytes(p1).hex(), "packed_dim0": le_bytes(p0).hex()}


# ---------------------------------------------------------------- main

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llmcompressor", metavar="DIR",
                    help="folder holding llm-compressor's llmcompressor/ package (e.g. its wheel "
                         "unzipped): cross-check against its real MemorylessMinMaxObserver")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    check_fnv()
    real_observer = LLMCompressorObserver(args.llmcompressor) if args.llmcompressor else None
    os.makedirs(OUT, exist_ok=True)

    weights_path = os.path.join(HERE, "..", MODEL_FIXTURES_REL, BASE + ".weights.safetensors")
    with open(weights_path, "rb") as f:
        weights_fnv = fnv1a64(f.read())
    with tempfile.TemporaryDirectory() as tmp:
        settings, logits, config_example, ids = run_settings(tmp, real_observer)
    edge, _ = run_edge(real_observer)
    bf16 = run_bf16()
    packing = run_packing()

    doc = {
        "generator": "tools/make_int8_golden.py (compressed-tensors ModelCompressor, calculate_qparams, quantize)",
        "versions": {"compressed_tensors": importlib.metadata.version("compressed-tensors"),
                     "transformers": importlib.metadata.version("transformers"),
                     "torch": torch.__version__,
                     "llmcompressor_observer": ("checked against " + real_observer.version) if real_observer
                     else "mirrored from 0.14.0.1 (not imported)"},
        "model": {"config": f"{MODEL_FIXTURES_REL}/{BASE}.config.json",
                  "weights": f"{MODEL_FIXTURES_REL}/{BASE}.weights.safetensors",
                  "weights_fnv1a64": weights_fnv, "ids": ids.tolist()},
        "settings": settings,
        "full_module": FULL_MODULE,
        "logits": logits,
        "edge": edge,
        "bf16": bf16,
        "packing": packing,
    }
    path = os.path.join(OUT, "int8_golden.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    with open(os.path.join(OUT, "config_example.json"), "wb") as f:
        f.write(config_example)

    with open(path) as f:  # floats come back as the same f32 bits (−0.0 included)
        back = json.load(f)
    _, data = edge_rows()
    assert np.array_equal(np.array(back["edge"]["inputs"], dtype=np.float64).astype(F32).view(np.uint32),
                          data.view(np.uint32))
    lg = np.array(back["logits"]["values"], dtype=np.float64).astype(F32)
    assert fnv1a64(le_bytes(lg)) == next(s["logits_fnv1a64"] for s in settings if s["name"] == LOGITS_SETTING)
    print(f"\nwrote {path} ({os.path.getsize(path)} bytes), config_example.json "
          f"({os.path.getsize(os.path.join(OUT, 'config_example.json'))} bytes)")


if __name__ == "__main__":
    main()
