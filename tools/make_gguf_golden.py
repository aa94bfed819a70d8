#!/usr/bin/env python3
"""Golden fixtures for GGUF export: the Q8_0 / Q4_0 block quantisers and llama.cpp's PEFT LoRA →
GGUF adapter conversion. The reference code is not reproduced here; it is imported and called:
gguf-py (PyPI `gguf`, `gguf.quants.quantize`) and llama.cpp's `convert_lora_to_gguf.py` (run as
a subprocess from the llama.cpp tree vendored in llama-cpp-python's sdist, see LLAMA_CPP_SDIST).

Part 1, quant_golden.json: a fixed set of f32 blocks of 32 values (random normal; all zeros; the
largest magnitude negative; exact half-step ties of Q8_0's roundf(x·id) with d = 1; Q4_0's
x·id + 8.5 exactly on integers with d = −1, both signs of the largest magnitude (argmax takes the
first) and the clip at 15; Q4_0 with d = 0.875, whose id = 1/d is inexact in f32, around the
half-step points; tiny values, 1e-30 and f32 subnormals, whose scale d underflows in f16; large
values, 1e4; values whose Q4_0 scale overflows f16 to +inf), each quantised on its own with
`quantize(blocks, Q8_0)` and `quantize(blocks, Q4_0)` (blocks shaped (n_blocks, 32) f32; the same
bytes come back when the blocks are quantised as one row, checked here).
  Notable: "zeros" has Q4_0 d = 0/−8 = −0.0 (f16 bytes 00 80) and Q8_0 d = +0; "tiny" stores
  d = 0 while its nibbles/int8s come from the f32 id = 1/d.
  {"generator", "gguf_version",
   "labels": [name of each block],
   "inputs": [[32 f32 values per block]],  each written as float(np.float32(x)): a double equal
             to the f32, so parsing the JSON number as a double and narrowing it is exact
             (−0.0 is kept; checked here by re-parsing the file)
   "q8_0": [hex of the 34 bytes of each block: f16 d little-endian, then 32 × int8],
   "q4_0": [hex of the 18 bytes of each block: f16 d, then 16 bytes, byte j = q[j] | q[j+16] << 4]}

Part 2, a LoRA adapter in both formats. Base: the tiny llama_untied of tools/make_fixtures.py
(hidden 64, 2 layers, 4 heads, 2 kv heads, vocab 97), as a Hugging Face directory in a temporary
folder named llama_untied/ (its committed config.json plus "architectures": ["LlamaForCausalLM"],
which the converter needs to pick its LlamaModel class, and its weights as model.safetensors; the
converter reads only the config). Adapters: PEFT LoRA r = 4, lora_alpha = 8, dropout 0, the seven
projections, A and B random (tools/make_peft_fixtures.py's lora_model: 0.05·randn, B nonzero so
the q/k row permutation shows), base_model_name_or_path "llama_untied"; the rsLoRA one has
use_rslora = true and another seed. `save_pretrained` writes them; its README.md (a model card
template) is not kept, so the GGUF metadata depends only on the committed files and the base
config. Each is converted with
    convert_lora_to_gguf.py <adapter dir> --base <tmp>/llama_untied --outfile <file> [--outtype f16]
and the GGUF read back with gguf's GGUFReader; this script stops unless every GGUF tensor is the
adapter's A or B (exactly, or rounded to f16) with the B of attn_q / attn_k rows permuted as
llama.cpp's rope layout (undone by make_gguf_fixtures.reverse_permute with 4 resp. 2 heads).
What the converter writes (llama-cpp-python 0.3.36's llama.cpp, gguf-py 0.19.0):
  general.architecture "llama", general.type "adapter", adapter.type "lora",
  adapter.lora.alpha f32 = lora_alpha as given: use_rslora is ignored (8 for both adapters, so
  llama.cpp's scale alpha/r = 2 is right for LoRA, not for rsLoRA's alpha/sqrt(r) = 4),
  general.name from the adapter directory's name ("Lora_Adapter", "Lora_Adapter_Rslora"),
  general.quantization_version u32 2; no general.file_type, no general.base_model.* (those come
  from a README.md model card, not from adapter_config.json); tensors, in PEFT's sorted key order,
  blk.<i>.<attn_q|attn_k|attn_v|attn_output|ffn_gate|ffn_up|ffn_down>.weight.lora_a (PEFT's A,
  (r, in) → GGUF ne [in, r]) and .lora_b (B, (out, r) → ne [r, out]), all F32 or all F16.

Writes Tests/VKFPEFTTests/Fixtures/gguf/:
  quant_golden.json
  lora_adapter/, lora_adapter_rslora/     adapter_config.json, adapter_model.safetensors (f32)
  lora_adapter.gguf, lora_adapter_rslora.gguf   converted with the default outtype f32
  lora_adapter.f16.gguf                   lora_adapter converted with --outtype f16

Run with the reference venv (torch, transformers, peft, gguf 0.19.0):
  $VKF_REF_VENV/bin/python tools/make_gguf_golden.py [--llama-cpp DIR]
DIR holds llama.cpp (convert_lora_to_gguf.py, conversion/, gguf-py/); default $VKF_LLAMA_CPP, else
~/.cache/vkf-ref/llama.cpp; when it is missing it is unpacked there from the llama-cpp-python sdist
(`pip download`). The converter imports sentencepiece at the top but never uses it for adapters; a
one-line stand-in module is put on its PYTHONPATH.
"""
import argparse
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile

import numpy as np
import torch
from safetensors.torch import load_file

import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from make_gguf_fixtures import reverse_permute  # noqa: E402
from make_peft_fixtures import base_model, lora_model  # noqa: E402

OUT = os.path.join(HERE, "..", "Tests", "VKFPEFTTests", "Fixtures", "gguf")
MODEL_FIXTURES = os.path.join(HERE, "..", "Tests", "VKFModelTests", "Fixtures", "golden")
BASE = "llama_untied"
BASE_ARCH = "LlamaForCausalLM"
LLAMA_CPP_SDIST = ("llama-cpp-python", "0.3.36")
DEFAULT_LLAMA_CPP = os.path.join(os.path.expanduser("~"), ".cache", "vkf-ref", "llama.cpp")
SEED_QUANT = 7
ADAPTERS = [  # (directory and file stem, use_rslora, seed)
    ("lora_adapter", False, 31),
    ("lora_adapter_rslora", True, 37),
]
CONVERSIONS = [  # (adapter, outtype, GGUF file)
    ("lora_adapter", "f32", "lora_adapter.gguf"),
    ("lora_adapter_rslora", "f32", "lora_adapter_rslora.gguf"),
    ("lora_adapter", "f16", "lora_adapter.f16.gguf"),
]
GGUF_NAMES = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
              "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}
F32 = np.float32


# ---------------------------------------------------------------- part 1: quantiser goldens

def quant_blocks():
    rng = np.random.default_rng(SEED_QUANT)
    blocks = []

    blocks.append(("normal", rng.standard_normal(32)))

    blocks.append(("zeros", np.zeros(32)))

    neg = 0.5 * rng.standard_normal(32)
    neg[7] = -3.0  # the largest magnitude, negative (Q4_0: d = −3/−8 > 0)
    blocks.append(("negative_amax", neg))

    # Q8_0: amax 127 → d = 1, id = 1: x·id = x, so every k + 0.5 is an exact tie of roundf.
    halves = [0.5, -0.5, 1.5, -1.5, 2.5, -2.5, -3.5, 3.5, 10.5, -10.5, 63.5, -64.5,
              125.5, -125.5, 126.5, -126.5]
    rest = [127.0, 0.0, -0.0, 1.0, -1.0, 2.0, 0.25, -0.75, 0.49999997, -0.50000006,
            100.0, -99.5, 7.5, -8.5, 44.5, -120.0]
    blocks.append(("q8_0_ties", np.array(rest[:1] + halves + rest[1:])))

    # Q4_0: largest magnitude +8 first, then −8 (argmax takes the first: d = 8/−8 = −1, id = −1),
    # so x·id + 8.5 = 8.5 − x is an integer for every half-integer x; −8 → 16.5 → 16 → clip 15.
    ties4 = [8.0, -8.0] + [s * (k + 0.5) for k in range(8) for s in (1.0, -1.0)]
    ties4 += [0.0, -0.0, 1.0, -1.0, 7.0, -7.0, 3.0, -2.0, 0.25, -0.25, 7.75, -7.75, 4.5, -4.5]
    blocks.append(("q4_0_ties", np.array(ties4)))

    # Q4_0 with d = −7/−8 = 0.875, id = f32(1/0.875) inexact: the exact half-step points
    # x = 0.875·(n − 8.5) and their f32 neighbours, where f32(x·id) + 8.5 decides the nibble.
    d = F32(0.875)
    pts = [F32(d * F32(n - 8.5)) for n in range(1, 17)]
    near = []
    for i, p in enumerate(pts[:15]):
        toward = np.inf if i % 2 == 0 else -np.inf
        near.append(np.nextafter(p, F32(toward), dtype=F32))
    blocks.append(("q4_0_inexact_id", np.array([-7.0] + pts + near)))

    tiny = 1e-30 * rng.standard_normal(32)
    tiny[[3, 11, 20]] = [1e-40, -3e-42, 1.4e-45]  # f32 subnormals (the last the smallest)
    blocks.append(("tiny", tiny))

    blocks.append(("large", 1e4 * rng.standard_normal(32)))

    huge = 1e5 * rng.standard_normal(32)
    huge[5] = -6e5  # Q4_0: d = 7.5e4 > 65504 → f16 +inf; Q8_0: d ≈ 4724 still finite
    blocks.append(("f16_overflow_q4_0", huge))

    labels = [name for name, _ in blocks]
    data = np.stack([np.asarray(b, dtype=np.float64).astype(F32) for _, b in blocks])
    assert data.shape == (len(blocks), 32) and data.dtype == F32
    return labels, data


def part1():
    labels, data = quant_blocks()
    with np.errstate(over="ignore"):  # the overflow block's f16 scale
        q8 = quantize(data, T.Q8_0)
        q4 = quantize(data, T.Q4_0)
        # One row of all the blocks gives the same bytes (blocks are independent).
        assert np.array_equal(quantize(data.reshape(1, -1), T.Q8_0).reshape(q8.shape), q8)
        assert np.array_equal(quantize(data.reshape(1, -1), T.Q4_0).reshape(q4.shape), q4)
    assert q8.shape == (len(labels), 34) and q4.shape == (len(labels), 18)
    doc = {
        "generator": "tools/make_gguf_golden.py (gguf.quants.quantize)",
        "gguf_version": importlib.metadata.version("gguf"),
        "labels": labels,
        "inputs": [[float(F32(x)) for x in row] for row in data],
        "q8_0": [bytes(row).hex() for row in q8],
        "q4_0": [bytes(row).hex() for row in q4],
    }
    path = os.path.join(OUT, "quant_golden.json")
    with open(path, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    with open(path) as f:  # the numbers come back as the same f32 bits (−0.0 included)
        back = np.array(json.load(f)["inputs"], dtype=np.float64).astype(F32)
    assert np.array_equal(back.view(np.uint32), data.view(np.uint32))
    d8 = np.frombuffer(q8[:, :2].tobytes(), dtype="<f2")
    d4 = np.frombuffer(q4[:, :2].tobytes(), dtype="<f2")
    print("quant_golden.json:", len(labels), "blocks")
    for name, a, b in zip(labels, d8, d4):
        print(f"  {name:20s} d(Q8_0) = {float(a)!r:24s} d(Q4_0) = {float(b)!r}")


# ---------------------------------------------------------------- part 2: GGUF LoRA golden

def unpack_llama_cpp(sdist, dest):
    """Extract <top>/vendor/llama.cpp/ of the llama-cpp-python sdist tarball into dest."""
    with tarfile.open(sdist) as tar:
        members = tar.getmembers()
        top = members[0].name.split("/")[0]
        prefix = f"{top}/vendor/llama.cpp/"
        wanted = [m for m in members if m.name.startswith(prefix) and (m.isfile() or m.isdir())]
        assert wanted, f"no {prefix} in {sdist}"
        with tempfile.TemporaryDirectory() as tmp:
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(tmp, members=wanted, **kwargs)
            os.makedirs(os.path.dirname(os.path.abspath(dest)), exist_ok=True)
            shutil.move(os.path.join(tmp, prefix), dest)


def ensure_llama_cpp(path):
    if os.path.isfile(os.path.join(path, "convert_lora_to_gguf.py")):
        return path
    name, version = LLAMA_CPP_SDIST
    print(f"{path} has no llama.cpp: downloading the {name}=={version} sdist")
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                        f"{name}=={version}", "-d", tmp], check=True)
        sdists = [f for f in os.listdir(tmp) if f.endswith((".tar.gz", ".tgz"))]
        assert len(sdists) == 1, sdists
        unpack_llama_cpp(os.path.join(tmp, sdists[0]), path)
    assert os.path.isfile(os.path.join(path, "convert_lora_to_gguf.py")), path
    return path


def write_base_dir(tmp):
    """A Hugging Face model directory for the tiny base (the converter reads its config.json)."""
    base = os.path.join(tmp, BASE)  # the folder name is fixed: the converter may use it
    os.makedirs(base)
    with open(os.path.join(MODEL_FIXTURES, BASE + ".config.json")) as f:
        config = json.load(f)
    config["architectures"] = [BASE_ARCH]
    with open(os.path.join(base, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    shutil.copyfile(os.path.join(MODEL_FIXTURES, BASE + ".weights.safetensors"),
                    os.path.join(base, "model.safetensors"))
    return base, config


def write_adapter(tmp, name, use_rslora, seed):
    model, cfg, _, _ = base_model(BASE)
    peft, _, config, scaling = lora_model(model, use_rslora, seed)
    expected = config.lora_alpha / (config.r ** 0.5 if use_rslora else config.r)
    assert abs(scaling - expected) < 1e-12, (scaling, expected)
    pcfg = peft.peft_config["default"]
    pcfg.base_model_name_or_path = BASE
    pcfg.target_modules = sorted(pcfg.target_modules)  # a set: its order would vary per run
    saved = os.path.join(tmp, name)
    peft.save_pretrained(saved, save_embedding_layers=False)  # (no hub look-up for BASE)
    out = os.path.join(OUT, name)
    os.makedirs(out, exist_ok=True)
    for f in ("adapter_config.json", "adapter_model.safetensors"):
        shutil.copyfile(os.path.join(saved, f), os.path.join(out, f))
    return out, cfg


def convert(llama_cpp, stub, adapter_dir, base_dir, outtype, outfile):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([os.path.join(llama_cpp, "gguf-py"), stub]))
    env.pop("NO_LOCAL_GGUF", None)
    cmd = [sys.executable, os.path.join(llama_cpp, "convert_lora_to_gguf.py"), adapter_dir,
           "--base", base_dir, "--outfile", outfile, "--outtype", outtype]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if r.returncode != 0:
        sys.stderr.write(r.stdout + r.stderr)
        raise SystemExit(f"convert_lora_to_gguf.py failed ({r.returncode}) for {adapter_dir}")


def field_value(field):
    vtype = field.types[0]
    if vtype == gguf.GGUFValueType.ARRAY:
        return [field.contents(i) for i in range(len(field.data))]
    return field.contents()


def check_gguf(path, adapter_dir, cfg, outtype):
    """Every tensor is the adapter's A or B (q/k B rows in llama.cpp's rope order); report."""
    reader = gguf.GGUFReader(path)
    peft_state = load_file(os.path.join(adapter_dir, "adapter_model.safetensors"))
    with open(os.path.join(adapter_dir, "adapter_config.json")) as f:
        acfg = json.load(f)
    meta = {}
    for name, field in reader.fields.items():
        if name.startswith("GGUF."):
            continue
        types = [t.name for t in field.types]
        meta[name] = (types, field_value(field))
    assert meta["general.type"][1] == "adapter" and meta["adapter.type"][1] == "lora", meta
    assert meta["adapter.lora.alpha"] == (["FLOAT32"], float(acfg["lora_alpha"])), meta
    heads = {"attn_q": cfg.num_attention_heads, "attn_k": cfg.num_key_value_heads}
    want_type = {"f32": T.F32, "f16": T.F16}[outtype]
    tensors = {t.name: t for t in reader.tensors}
    seen, permuted = set(), {}
    for key, value in peft_state.items():
        parts = key.split(".")  # base_model.model.model.layers.<i>.<attn|mlp>.<proj>.lora_<X>.weight
        bid, proj, ab = int(parts[4]), parts[6], parts[7]
        kind = GGUF_NAMES[proj]
        gname = f"blk.{bid}.{kind}.weight.lora_{ab[-1].lower()}"
        t = tensors[gname]
        seen.add(gname)
        assert t.tensor_type == want_type, (gname, t.tensor_type)
        hf = value.numpy()
        assert list(t.shape) == list(hf.shape[::-1]), (gname, t.shape, hf.shape)  # ne is reversed
        data = np.asarray(t.data).reshape(hf.shape).astype(F32)
        ref = hf.astype(np.float16).astype(F32) if outtype == "f16" else hf
        if ab == "lora_B" and kind in heads:
            assert not np.array_equal(data, ref), gname
            data = reverse_permute(data, heads[kind])
            permuted[gname] = heads[kind]
        assert np.array_equal(data, ref), gname
    assert seen == set(tensors), set(tensors) - seen
    return meta, reader.tensors, permuted


def part2(llama_cpp):
    llama_cpp = ensure_llama_cpp(os.path.abspath(os.path.expanduser(llama_cpp)))
    with tempfile.TemporaryDirectory() as tmp:
        stub = os.path.join(tmp, "stub")
        os.makedirs(stub)
        with open(os.path.join(stub, "sentencepiece.py"), "w") as f:
            f.write("class SentencePieceProcessor:\n    pass\n")
        base_dir, _ = write_base_dir(tmp)
        adapters = {}
        for name, use_rslora, seed in ADAPTERS:
            adapters[name] = write_adapter(tmp, name, use_rslora, seed)
        for name, outtype, fname in CONVERSIONS:
            out = os.path.join(OUT, fname)
            adapter_dir, cfg = adapters[name]
            convert(llama_cpp, stub, adapter_dir, base_dir, outtype, out)
            meta, tensors, permuted = check_gguf(out, adapter_dir, cfg, outtype)
            print(f"\n{fname} ({os.path.getsize(out)} bytes) from {name}/, outtype {outtype}")
            for key, (types, value) in meta.items():
                print(f"  {key:36s} {'/'.join(types):16s} {value!r}")
            for t in tensors:
                print(f"  {t.name:32s} {t.tensor_type.name:4s} ne={[int(n) for n in t.shape]}")
            print("  B rows permuted (heads):", permuted)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama-cpp", default=os.environ.get("VKF_LLAMA_CPP", DEFAULT_LLAMA_CPP),
                    help="llama.cpp tree with convert_lora_to_gguf.py (fetched here if missing)")
    args = ap.parse_args()
    torch.use_deterministic_algorithms(True)
    os.makedirs(OUT, exist_ok=True)
    part1()
    part2(args.llama_cpp)


if __name__ == "__main__":
    main()
