#!/usr/bin/env python3
"""Generate the GGUF test fixtures in Tests/VKFModelTests/Fixtures/gguf/.

Uses PyPI's `gguf` package (llama.cpp's gguf-py: GGUFWriter, GGUFReader and the numpy
reference quantizers/dequantizers in `gguf.quants`) and numpy. The Swift tests only read
the files written here; they never run Python.

    python3 -m venv /tmp/ggufvenv && /tmp/ggufvenv/bin/pip install gguf numpy
    /tmp/ggufvenv/bin/python tools/make_gguf_fixtures.py [--model PATH/model.Q4_1.gguf]

Outputs:
  synthetic.gguf / synthetic.json  small tensors of every supported ggml type with the
                                   f32 values gguf-py dequantises them to, typed metadata
                                   (all scalar types, strings, nested arrays), and llama
                                   q/k tensors with their un-permuted (HF) values.
  smollm2_reference.json           selected rows and f64 sums of real tensors of the shared
                                   SmolLM2-135M Q4_1 GGUF, as stored and in HF layout.
"""
import argparse
import json
import os

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.quants import quantize, dequantize

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "VKFModelTests", "Fixtures", "gguf")
DEFAULT_MODEL = "/work/shared/models/smollm2-135m-instruct/model.Q4_1.gguf"


def reverse_permute(w, n_head):
    """transformers' GGUF loader `_reverse_permute_weights` (undoes convert_hf_to_gguf's
    LlamaModel.permute): reshape(n_head, dim, 2, ...).swapaxes(2, 1)."""
    dim = w.shape[0] // n_head // 2
    return w.reshape(n_head, dim, 2, *w.shape[1:]).swapaxes(2, 1).reshape(w.shape)


def floats(a):
    # float(np.float32) is exact in a double; JSON keeps it exactly.
    return [float(x) for x in np.asarray(a, dtype=np.float32).reshape(-1)]


def random_kquant_bytes(rng, qtype, rows, cols):
    """Random K-quant blocks with finite, moderate f16 scales at ggml's scale offsets."""
    block_elems, block_bytes = gguf.GGML_QUANT_SIZES[qtype]
    n_blocks = rows * cols // block_elems
    raw = rng.integers(0, 256, size=(n_blocks, block_bytes), dtype=np.uint8)
    def put_f16(offset, lo, hi):
        v = rng.uniform(lo, hi, size=n_blocks).astype(np.float16)
        raw[:, offset:offset + 2] = v.view(np.uint8).reshape(n_blocks, 2)
    if qtype in (T.Q4_K, T.Q5_K):
        put_f16(0, 1e-4, 1e-2)    # d
        put_f16(2, 1e-4, 1e-2)    # dmin
    elif qtype == T.Q6_K:
        put_f16(block_bytes - 2, -1e-2, 1e-2)
    elif qtype == T.Q8_K:
        d = rng.uniform(1e-4, 1e-2, size=n_blocks).astype(np.float32)
        raw[:, 0:4] = d.view(np.uint8).reshape(n_blocks, 4)
    return raw.reshape(rows, cols // block_elems * block_bytes)


def dequant_q8_k(raw, rows, cols):
    # gguf-py has no Q8_K dequantizer: block = f32 d, 256 int8 q, 16 int16 sums; x = d*q.
    blocks = raw.reshape(-1, 292)
    d = blocks[:, 0:4].copy().view(np.float32)
    q = blocks[:, 4:260].copy().view(np.int8).astype(np.float32)
    return (d * q).reshape(rows, cols)


def make_synthetic():
    rng = np.random.default_rng(1234)
    path = os.path.join(OUT, "synthetic.gguf")
    w = gguf.GGUFWriter(path, "llama")
    # Metadata of every type (the arch key is written by GGUFWriter).
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4000000000)
    w.add_int32("test.i32", -2000000000)
    w.add_uint64("test.u64", 2**63 + 5)
    w.add_int64("test.i64", -(2**62))
    w.add_float32("test.f32", 0.1)
    w.add_float64("test.f64", 0.1)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo ✓")
    w.add_array("test.strings", ["a", "", "ü"])
    w.add_array("test.floats", [1.5, -2.25])
    w.add_key_value("test.nested", [[1, 2], [3]], gguf.GGUFValueType.ARRAY)
    w.add_uint32("llama.attention.head_count", 2)
    w.add_uint32("llama.attention.head_count_kv", 1)
    w.add_uint32("llama.embedding_length", 8)
    w.add_uint32("llama.block_count", 1)
    w.add_uint32("llama.feed_forward_length", 16)

    expected = {}

    def add(name, qtype, rows, cols, values=None, raw=None):
        if raw is None:
            x = values if values is not None else rng.standard_normal((rows, cols)).astype(np.float32)
            if qtype == T.F32:
                w.add_tensor(name, x)
                deq = x
            elif qtype == T.F16:
                h = x.astype(np.float16)
                w.add_tensor(name, h)
                deq = h.astype(np.float32)
            else:
                q = quantize(x, qtype)
                w.add_tensor(name, q, raw_dtype=qtype)
                deq = dequantize(q, qtype)
        else:
            w.add_tensor(name, raw, raw_dtype=qtype)
            deq = dequant_q8_k(raw, rows, cols) if qtype == T.Q8_K else dequantize(raw, qtype)
        expected[name] = {"type": qtype.name, "shape": [rows, cols], "values": floats(deq)}
        return deq

    add("t.f32", T.F32, 2, 32)
    add("t.f16", T.F16, 2, 32)
    add("t.bf16", T.BF16, 2, 32)
    add("t.q8_0", T.Q8_0, 2, 64)
    add("t.q4_0", T.Q4_0, 2, 64)
    add("t.q4_1", T.Q4_1, 2, 64)
    for qt in (T.Q4_K, T.Q5_K, T.Q6_K, T.Q8_K):
        add("t." + qt.name.lower(), qt, 2, 256, raw=random_kquant_bytes(rng, qt, 2, 256))

    # llama q/k in the converter's permuted order, with their HF (un-permuted) values.
    q = add("blk.0.attn_q.weight", T.F32, 8, 4)
    k = add("blk.0.attn_k.weight", T.F32, 4, 4)
    expected["blk.0.attn_q.weight"]["hf_values"] = floats(reverse_permute(q, 2))
    expected["blk.0.attn_k.weight"]["hf_values"] = floats(reverse_permute(k, 1))
    add("rope_freqs.weight", T.F32, 1, 4)  # no HF counterpart

    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with open(os.path.join(OUT, "synthetic.json"), "w") as f:
        json.dump({"tensors": expected}, f, separators=(",", ":"))
    print("wrote", path, os.path.getsize(path), "bytes")


def make_reference(model_path):
    if not os.path.exists(model_path):
        print("skipping reference: no", model_path)
        return
    r = gguf.GGUFReader(model_path)
    meta = lambda k: r.fields[k].contents()
    n_head, n_kv = meta("llama.attention.head_count"), meta("llama.attention.head_count_kv")
    hf_names = {
        "token_embd.weight": "model.embed_tokens.weight",
        "blk.0.attn_q.weight": "model.layers.0.self_attn.q_proj.weight",
        "blk.0.attn_k.weight": "model.layers.0.self_attn.k_proj.weight",
        "blk.0.ffn_down.weight": "model.layers.0.mlp.down_proj.weight",
        "blk.29.attn_v.weight": "model.layers.29.self_attn.v_proj.weight",
        "output_norm.weight": "model.norm.weight",
    }
    out = {"tensor_count": len(r.tensors), "tensors": []}
    for t in r.tensors:
        if t.name not in hf_names:
            continue
        stored = dequantize(t.data, t.tensor_type).astype(np.float32)
        stored = stored.reshape(list(reversed([int(d) for d in t.shape])))  # HF order
        hf = stored
        if t.name.endswith("attn_q.weight"):
            hf = reverse_permute(stored, n_head)
        elif t.name.endswith("attn_k.weight"):
            hf = reverse_permute(stored, n_kv)
        if hf.ndim == 1:
            hf2, st2 = hf.reshape(1, -1), stored.reshape(1, -1)
        else:
            hf2, st2 = hf, stored
        rows = sorted({0, 1, 2, 31, 32, 33, 63, 64, hf2.shape[0] - 1} & set(range(hf2.shape[0])))
        out["tensors"].append({
            "gguf_name": t.name,
            "hf_name": hf_names[t.name],
            "type": t.tensor_type.name,
            "hf_shape": list(hf.shape),
            "rows": rows,
            # First and last 16 values of each selected row, HF layout and as stored.
            "hf_head": [floats(hf2[i, :16]) for i in rows],
            "hf_tail": [floats(hf2[i, -16:]) for i in rows],
            "stored_head": [floats(st2[i, :16]) for i in rows],
            "hf_row_sums": [float(hf2[i].astype(np.float64).sum()) for i in rows],
            "sum": float(hf.astype(np.float64).sum()),
            "sum_squares": float((hf.astype(np.float64) ** 2).sum()),
        })
    path = os.path.join(OUT, "smollm2_reference.json")
    with open(path, "w") as f:
        json.dump(out, f, separators=(",", ":"))
    print("wrote", path, os.path.getsize(path), "bytes")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=DEFAULT_MODEL)
    args = ap.parse_args()
    os.makedirs(OUT, exist_ok=True)
    make_synthetic()
    make_reference(args.model)
