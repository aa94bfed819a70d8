#!/usr/bin/env python3
"""Golden fixtures for the GGUF block quantisers Q4_K, Q5_K, Q6_K, Q5_0, Q5_1 (and Q8_0, Q4_0 as a
cross-check against quant_golden.json): the bytes ggml's reference quantisers write, obtained by
calling ggml itself through ctypes. Nothing of ggml is re-implemented here. The library is
llama-cpp-python's libggml-base.so (<site-packages>/llama_cpp/lib/, found with
importlib.util.find_spec("llama_cpp"); llama_cpp is not imported) and the call is
    size_t ggml_quantize_chunk(type, src, dst, start = 0, nrows, n_per_row, imatrix = NULL)
which, with no importance matrix, runs quantize_row_<type>_ref over the nrows·n_per_row values
(checked here: the bytes equal a direct call of the exported quantize_row_<type>_ref).
ggml_quantize_init(type) is called first although ggml_quantize_chunk calls it itself; it only
allocates tables for the IQ types, so it changes nothing for these seven types.

Inputs: 16 rows of 256 f32 values, seeded (numpy default_rng, SEED), each one Q4_K/Q5_K/Q6_K
super-block and eight 32-value blocks of Q5_0/Q5_1/Q8_0/Q4_0; each row is quantised on its own as
one row of 256 (nrows 1, n_per_row 256). Labels:
  normal_1_a, normal_1_b        standard normal, two draws
  normal_0.02_a, normal_0.02_b  0.02·normal (typical LLM weights)
  outliers                      0.02·normal with 1.0, −0.75, 2.0, −1.5 at [5, 70, 140, 250]
  shifted                       0.1 + 0.02·normal (all positive, far from 0)
  zeros                         all +0.0
  positive                      uniform [0.5, 1)
  negative                      −uniform [0.5, 1)
  constant                      0.3 everywhere (not exact in f32)
  constant_negative             −2.5 everywhere
  one_nonzero                   zeros but x[77] = 1.5
  tiny                          1e-30·normal with f32 subnormals 1e-40, −3e-42, 1.4e-45 (the
                                smallest), −1.4e-45, 1e-39, 5e-44 at [3, 40, 77, 130, 200, 255]
  large                         1e4·normal
  mixed_magnitudes              32-value groups 0, 1e-3·normal, 10·normal, 0, 1e-3·normal,
                                10·normal, normal, 1e-3 + 1e-3·uniform[0, 1)
  ties                          groups built so the 32-blocked formulas land exactly on k + 0.5:
                                g0 127, 0, ±(k + 0.5) for k < 15 (Q8_0: d = 1, id = 1); g1 8, −8,
                                ±(k + 0.5) for k < 8 and 14 others (Q4_0: d = −1, x·id + 8.5
                                integral; −8 → 16 clipped to 15); g2 16, −16, ±(k + 0.5) for k < 15
                                (Q5_0: d = −1; −16 → 32 clipped to 31); g3 0, 31, k + 0.5 for
                                k < 30 (Q5_1: d = 1, min 0); g4 the integers 0…31; g5 0…15 twice;
                                g6 −8, −7.5, …, 7.5; g7 −0.0 then 0.25·k, k = −15…15 (0.0 at k = 0)
Every 32-value group has amax = 0 or amax ≥ 1e-35 (asserted), so the f32 reciprocal of the block
scale (1/d, d = amax/127 for Q8_0) is finite in the 32-blocked types: a group of only subnormals
would make it ±inf and the reference's float → int conversion undefined, not something to pin.
Multi-row: a (3, 512) matrix, row r = s_r·normal with s = (1, 0.02, 5), quantised in one call as
3 rows of 512 (two super-blocks / 16 blocks per row); checked equal to quantising each row alone
(ggml_quantize_chunk with start = r·512, writing at r·row_size) and to one row of 1536.

Checks (the script stops on failure):
  block sizes from ggml_type_size / ggml_blck_size: Q4_K 144, Q5_K 176, Q6_K 210 bytes per 256;
    Q5_0 22, Q5_1 24, Q8_0 34, Q4_0 18 per 32; ggml_quantize_chunk returns nrows·row_size;
    ggml_quantize_requires_imatrix is false for all seven;
  every output byte is written (dst prefilled with 0x00 and with 0xff gives the same bytes) and
    nothing past the row is (guard bytes intact);
  gguf-py's gguf.quants.dequantize of ggml's bytes is finite and within
    max|x_row|·{Q4_*: 0.6, Q5_*: 0.35, Q6_K: 0.2, Q8_0: 0.05} + 1e-6 of the input per row (the 1e-6
    for rows whose f16 scale underflows, "tiny": it dequantises to 0).
Not a stop: gguf-py's own gguf.quants.quantize (Q8_0, Q4_0, Q5_0, Q5_1; it has no K-quant
quantiser) is compared with ggml's bytes for every 256-value row and the multi-row rows; every
differing 32-value block is printed and stored in "gguf_py_disagreements" (empty when they agree).
With llama-cpp-python 0.3.36 (ggml 0.25.3) and gguf-py 0.19.0 they agree on every block, the
ties, tiny and zeros rows included: the list is empty.

Notable (llama-cpp-python 0.3.36's ggml; d, dmin, 6-bit scale sc and min m of sub-block j as in
the K-quant dequantisation x = d·sc_j·q − dmin·m_j, resp. Q6_K's x = d·sc_j·(q − 32)):
  zeros: Q4_K, Q5_K, Q6_K, Q5_1, Q8_0 are all-zero bytes; Q4_0 and Q5_0 have d = 0/−8 resp. 0/−16
    = −0.0 (f16 00 80), so Q4_0's nibbles are 8 and Q5_0's q is 16 (qh ff ff ff ff).
  constant 0.3: Q4_K/Q5_K carry it in the scale, not the min (the fitted min is never above 0):
    dmin = 0, every m = 0, every sc = 63, every q the largest (15 resp. 31), d = f16(0.3/(63·15))
    resp. f16(0.3/(63·31)). Q6_K: every q = 0 (ql and qh all zero bytes), every sc = −128,
    d = f16(0.3/4096) > 0.
  constant_negative −2.5: the mirror in Q4_K/Q5_K: d = 0, every sc = 0, every q = 0,
    dmin = f16(2.5/63), every m = 63 (Q4_K and Q5_K bytes equal up to Q5_K's extra qh, all zero);
    Q6_K as for 0.3 with d = f16(−2.5/4096) < 0.
  positive (all x ≥ 0.5): Q4_K's m is 0 for sub-blocks 0, 2, 5, 6, 7 and 47, 63, 58 for 1, 3, 4 (a
    grid that starts below the data fits better there); dmin ≠ 0 although no x is negative.
  Q6_K's sc are signed int8, the largest in magnitude stored as −128, and d carries the sign:
    d < 0 for "negative", "constant_negative", "large", "mixed_magnitudes", d = 0 for "zeros" and
    "tiny", d > 0 for the others.
  tiny: every type dequantises to zeros (the f16 d underflows), but the bytes differ: Q4_K and
    Q5_K have d = dmin = +0 with nonzero 6-bit sc/m (identical in the two) and nonzero q, computed
    from the f32 values (whose squares underflow f32 to 0); Q6_K is all zero bytes (groups with
    max|x| < 1e-15 are taken as zero); the 32-blocked types store d = ±0 with q from the f32 1/d.
  mixed_magnitudes: in Q4_K/Q5_K/Q6_K the 1e-3 groups get sc = m = 0 (too small next to the 10
    groups for 6-bit resp. 8-bit scales) and dequantise to 0; the 32-blocked types keep them.
  libggml-base.so has no FMA (vfmadd*) or F16C (vcvtps2ph) instructions (objdump): every
    product and sum is rounded to f32 on its own and f16 conversion is done in software (round to
    nearest even), and subnormal f32 arithmetic is not flushed — what a port must reproduce.

JSON layout (kquant_golden.json), floats written as float(np.float32(x)): a double equal to the
f32, so parsing the JSON number as a double and narrowing it is exact (−0.0 kept; checked here by
re-parsing the file); number lists and flat objects are on one line each.
  {"generator", "ggml_library": "libggml-base.so (llama-cpp-python V, ggml V, commit C)",
   "gguf_version",
   "types": {"<t>": {"ggml_type": enum value, "block_values": 256 or 32, "block_bytes"}},
   "labels": [name of each row],
   "inputs": [[256 f32 values per row]],
   "<t>": [hex of the bytes of each row quantised alone],  for t in q4_K, q5_K, q6_K, q5_0, q5_1,
          q8_0, q4_0: one super-block (144 / 176 / 210 bytes) resp. 8 consecutive blocks
          (8 × 22 / 24 / 34 / 18 bytes), in ggml's block layout (all multi-byte fields
          little-endian):
            q4_K f16 d, f16 dmin, 12 bytes packed 6-bit scales/mins, 128 bytes nibbles
            q5_K f16 d, f16 dmin, 12 bytes scales/mins, 32 bytes qh (5th bits), 128 bytes nibbles
            q6_K 128 bytes ql (low 4 bits), 64 bytes qh (high 2 bits), 16 × int8 scales, f16 d
            q5_0 f16 d, u32 qh, 16 bytes nibbles;  q5_1 f16 d, f16 m, u32 qh, 16 bytes nibbles
            q8_0 f16 d, 32 × int8;  q4_0 f16 d, 16 bytes nibbles
   "multirow": {"rows": 3, "columns": 512, "inputs": [1536 f32 values, row-major],
                "<t>": hex of the 3 rows' bytes, concatenated (row r at r·row_size)},
   "dequantized": {"q5_0": [[256 f32 per row]], "q5_1": [[...]]},  gguf-py's dequantize of the
          bytes above, for the two types VKFModel's GGUF reader does not dequantise yet (the
          K-types, Q8_0 and Q4_0 are already tested against gguf-py elsewhere); not for the
          multi-row case
   "gguf_py_disagreements": [{"case": label or "multirow[r]", "type", "block": index in the row,
          "ggml": hex, "gguf_py": hex}]}

Writes Tests/VKFPEFTTests/Fixtures/gguf/kquant_golden.json. Run with the reference venv (numpy,
gguf 0.19.0, llama-cpp-python 0.3.36), default /root/.cache/vkf-ref/venv:
  $VKF_REF_VENV/bin/python tools/make_gguf_kquant_golden.py
"""
import ctypes
import importlib.metadata
import importlib.util
import json
import os

import numpy as np

from gguf import GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "VKFPEFTTests", "Fixtures", "gguf", "kquant_golden.json")
SEED = 20240607
F32 = np.float32
N = 256
# name: (ggml enum value = gguf-py's GGMLQuantizationType, values per block, bytes per block,
#        dequantisation error bound as a fraction of the row's max |x|)
TYPES = {
    "q4_K": (T.Q4_K, 256, 144, 0.6),
    "q5_K": (T.Q5_K, 256, 176, 0.35),
    "q6_K": (T.Q6_K, 256, 210, 0.2),
    "q5_0": (T.Q5_0, 32, 22, 0.35),
    "q5_1": (T.Q5_1, 32, 24, 0.35),
    "q8_0": (T.Q8_0, 32, 34, 0.05),
    "q4_0": (T.Q4_0, 32, 18, 0.6),
}
GGUF_PY_QUANTISERS = ["q5_0", "q5_1", "q8_0", "q4_0"]
DEQUANTIZED = ["q5_0", "q5_1"]
ABS_TOL = 1e-6
GUARD = 64


# ---------------------------------------------------------------- ggml through ctypes

def load_ggml():
    spec = importlib.util.find_spec("llama_cpp")
    assert spec is not None and spec.submodule_search_locations, "llama_cpp is not installed"
    path = os.path.join(list(spec.submodule_search_locations)[0], "lib", "libggml-base.so")
    lib = ctypes.CDLL(path)
    c_type = ctypes.c_int  # enum ggml_type
    lib.ggml_quantize_init.argtypes = [c_type]
    lib.ggml_quantize_init.restype = None
    lib.ggml_quantize_requires_imatrix.argtypes = [c_type]
    lib.ggml_quantize_requires_imatrix.restype = ctypes.c_bool
    lib.ggml_quantize_chunk.argtypes = [c_type, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_type_size.argtypes = [c_type]
    lib.ggml_type_size.restype = ctypes.c_size_t
    lib.ggml_blck_size.argtypes = [c_type]
    lib.ggml_blck_size.restype = ctypes.c_int64
    lib.ggml_row_size.argtypes = [c_type, ctypes.c_int64]
    lib.ggml_row_size.restype = ctypes.c_size_t
    for name in TYPES:
        ref = getattr(lib, f"quantize_row_{name}_ref")
        ref.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
        ref.restype = None
    lib.ggml_version.restype = ctypes.c_char_p
    lib.ggml_commit.restype = ctypes.c_char_p
    return lib, path


def ggml_quantize(lib, name, x, nrows, n_per_row, start=0, dst=None):
    """ggml_quantize_chunk of x (f32, nrows·n_per_row values from index start) into dst (the
    whole matrix's bytes); returns dst. Checks the return value and the guard bytes."""
    qtype = int(TYPES[name][0])
    x = np.ascontiguousarray(x, dtype=F32).reshape(-1)
    row_size = lib.ggml_row_size(qtype, n_per_row)
    total = (x.size // n_per_row) * row_size
    if dst is None:
        dst = np.zeros(total + GUARD, dtype=np.uint8)
    lib.ggml_quantize_init(qtype)
    got = lib.ggml_quantize_chunk(qtype, x.ctypes.data, dst.ctypes.data, start, nrows, n_per_row,
                                  None)
    assert got == nrows * row_size, (name, got, nrows * row_size)
    return dst


def ggml_bytes(lib, name, x, nrows, n_per_row):
    """The quantised bytes, checked to be fully written (two prefills) and bounded (guard)."""
    x = np.ascontiguousarray(x, dtype=F32).reshape(-1)
    assert x.size == nrows * n_per_row
    total = nrows * lib.ggml_row_size(int(TYPES[name][0]), n_per_row)
    outs = []
    for fill in (0x00, 0xFF):
        dst = np.full(total + GUARD, fill, dtype=np.uint8)
        ggml_quantize(lib, name, x, nrows, n_per_row, dst=dst)
        assert np.all(dst[total:] == fill), f"{name}: bytes written past the row"
        outs.append(dst[:total].copy())
    assert np.array_equal(outs[0], outs[1]), f"{name}: some output bytes are not written"
    ref = np.zeros(total, dtype=np.uint8)  # the reference row quantiser, called directly
    getattr(lib, f"quantize_row_{name}_ref")(x.ctypes.data, ref.ctypes.data, x.size)
    assert np.array_equal(ref, outs[0]), f"{name}: ggml_quantize_chunk is not quantize_row_ref"
    return outs[0]


# ---------------------------------------------------------------- inputs

def rows():
    rng = np.random.default_rng(SEED)
    r = []
    r.append(("normal_1_a", rng.standard_normal(N)))
    r.append(("normal_1_b", rng.standard_normal(N)))
    r.append(("normal_0.02_a", 0.02 * rng.standard_normal(N)))
    r.append(("normal_0.02_b", 0.02 * rng.standard_normal(N)))
    out = 0.02 * rng.standard_normal(N)
    out[[5, 70, 140, 250]] = [1.0, -0.75, 2.0, -1.5]
    r.append(("outliers", out))
    r.append(("shifted", 0.1 + 0.02 * rng.standard_normal(N)))
    r.append(("zeros", np.zeros(N)))
    r.append(("positive", rng.uniform(0.5, 1.0, N)))
    r.append(("negative", -rng.uniform(0.5, 1.0, N)))
    r.append(("constant", np.full(N, 0.3)))
    r.append(("constant_negative", np.full(N, -2.5)))
    one = np.zeros(N)
    one[77] = 1.5
    r.append(("one_nonzero", one))
    tiny = 1e-30 * rng.standard_normal(N)
    tiny[[3, 40, 77, 130, 200, 255]] = [1e-40, -3e-42, 1.4e-45, -1.4e-45, 1e-39, 5e-44]
    r.append(("tiny", tiny))
    r.append(("large", 1e4 * rng.standard_normal(N)))
    g = [np.zeros(32), 1e-3 * rng.standard_normal(32), 10 * rng.standard_normal(32), np.zeros(32),
         1e-3 * rng.standard_normal(32), 10 * rng.standard_normal(32), rng.standard_normal(32),
         1e-3 + 1e-3 * rng.uniform(0.0, 1.0, 32)]
    r.append(("mixed_magnitudes", np.concatenate(g)))
    halves = [s * (k + 0.5) for k in range(15) for s in (1.0, -1.0)]  # 30 values
    ties = [
        [127.0, 0.0] + halves,
        [8.0, -8.0] + [s * (k + 0.5) for k in range(8) for s in (1.0, -1.0)]
        + [0.0, 1.0, -1.0, 7.0, -7.0, 3.0, -2.0, 0.25, -0.25, 7.75, -7.75, 4.5, -4.5, 6.0],
        [16.0, -16.0] + halves,
        [0.0, 31.0] + [k + 0.5 for k in range(30)],
        [float(k) for k in range(32)],
        [float(k % 16) for k in range(32)],
        [0.5 * k for k in range(-16, 16)],
        [-0.0] + [0.25 * k for k in range(-15, 16)],
    ]
    assert all(len(t) == 32 for t in ties)
    r.append(("ties", np.array(sum(ties, []))))

    labels = [name for name, _ in r]
    data = np.stack([np.asarray(x, dtype=np.float64).astype(F32) for _, x in r])
    assert data.shape == (len(r), N) and len(set(labels)) == len(labels)
    amax = np.abs(data.reshape(-1, 32)).max(axis=1)
    assert np.all((amax == 0) | (amax >= 1e-35)), "a 32-value group of only subnormals"
    assert np.signbit(data[labels.index("ties"), 224])  # −0.0 kept
    return labels, data


def multirow_input():
    rng = np.random.default_rng(SEED + 1)
    scales = np.array([1.0, 0.02, 5.0])[:, None]
    return (scales * rng.standard_normal((3, 512))).astype(F32)


# ---------------------------------------------------------------- checks against gguf-py

def compare_gguf_py(case, name, x, got, disagreements):
    qtype, blk, bsize, _ = TYPES[name]
    with np.errstate(all="ignore"):
        mine = quantize(x.reshape(1, -1).astype(F32), qtype).reshape(-1)
    assert mine.size == got.size, (case, name)
    for b in range(got.size // bsize):
        a, m = got[b * bsize:(b + 1) * bsize], mine[b * bsize:(b + 1) * bsize]
        if not np.array_equal(a, m):
            d = {"case": case, "type": name, "block": b, "ggml": bytes(a).hex(),
                 "gguf_py": bytes(m).hex()}
            print("  gguf-py disagrees:", d)
            disagreements.append(d)


def dequant_check(case, name, x, got):
    qtype, _, _, frac = TYPES[name]
    y = dequantize(got.reshape(1, -1), qtype).reshape(-1)
    assert y.dtype == F32 and y.size == x.size, (case, name)
    assert np.all(np.isfinite(y)), f"{case} {name}: non-finite dequantised values"
    err = float(np.max(np.abs(y.astype(np.float64) - x.astype(np.float64))))
    amax = float(np.max(np.abs(x)))
    bound = frac * amax + ABS_TOL
    assert err <= bound, f"{case} {name}: max error {err} > {bound}"
    return y, (err / amax if amax > 0 else 0.0)


# ---------------------------------------------------------------- JSON

def floats(a):
    return [float(F32(v)) for v in np.asarray(a, dtype=F32).reshape(-1)]


def dump(obj, level=0):
    """JSON with number lists and flat objects on one line (small file), indented otherwise."""
    pad, inner = " " * level, " " * (level + 1)
    if isinstance(obj, dict):
        if all(isinstance(v, (int, float, str)) for v in obj.values()):
            return json.dumps(obj, separators=(", ", ": "))
        items = [f"{inner}{json.dumps(k)}: {dump(v, level + 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n" + pad + "}"
    if isinstance(obj, list):
        if not obj:
            return "[]"
        if all(isinstance(v, (int, float)) for v in obj):
            return json.dumps(obj, separators=(",", ":"))
        return "[\n" + ",\n".join(inner + dump(v, level + 1) for v in obj) + "\n" + pad + "]"
    return json.dumps(obj)


def main():
    lib, path = load_ggml()
    version = importlib.metadata.version("llama_cpp_python")
    library = (f"{os.path.basename(path)} (llama-cpp-python {version}, "
               f"ggml {lib.ggml_version().decode()}, commit {lib.ggml_commit().decode()})")
    for name, (qtype, blk, bsize, _) in TYPES.items():
        assert lib.ggml_blck_size(int(qtype)) == blk, name
        assert lib.ggml_type_size(int(qtype)) == bsize, name
        assert lib.ggml_row_size(int(qtype), N) == N // blk * bsize, name
        assert not lib.ggml_quantize_requires_imatrix(int(qtype)), name

    labels, data = rows()
    disagreements = []
    doc = {
        "generator": "tools/make_gguf_kquant_golden.py (ggml_quantize_chunk via ctypes)",
        "ggml_library": library,
        "gguf_version": importlib.metadata.version("gguf"),
        "types": {n: {"ggml_type": int(t[0]), "block_values": t[1], "block_bytes": t[2]}
                  for n, t in TYPES.items()},
        "labels": labels,
        "inputs": [floats(x) for x in data],
    }
    dequantized = {n: [] for n in DEQUANTIZED}
    ratios = {n: [] for n in TYPES}
    for name in TYPES:
        hexes = []
        for label, x in zip(labels, data):
            got = ggml_bytes(lib, name, x, 1, N)
            hexes.append(bytes(got).hex())
            if name in GGUF_PY_QUANTISERS:
                compare_gguf_py(label, name, x, got, disagreements)
            y, ratio = dequant_check(label, name, x, got)
            ratios[name].append(ratio)
            if name in DEQUANTIZED:
                dequantized[name].append(floats(y))
        # The rows quantised together as 16 rows of 256 give the same bytes.
        together = ggml_bytes(lib, name, data, len(labels), N)
        assert bytes(together).hex() == "".join(hexes), name
        doc[name] = hexes

    m = multirow_input()
    multi = {"rows": 3, "columns": 512, "inputs": floats(m)}
    for name in TYPES:
        got = ggml_bytes(lib, name, m, 3, 512)
        row_size = lib.ggml_row_size(int(TYPES[name][0]), 512)
        dst = np.zeros(3 * row_size + GUARD, dtype=np.uint8)
        for r in range(3):  # each row alone, through start = r·512
            ggml_quantize(lib, name, m, 1, 512, start=r * 512, dst=dst)
        assert np.array_equal(dst[:3 * row_size], got), f"{name}: rows are not independent"
        assert np.array_equal(ggml_bytes(lib, name, m, 1, 1536), got), name
        for r in range(3):
            part = got[r * row_size:(r + 1) * row_size]
            if name in GGUF_PY_QUANTISERS:
                compare_gguf_py(f"multirow[{r}]", name, m[r], part, disagreements)
            dequant_check(f"multirow[{r}]", name, m[r], part)
        multi[name] = bytes(got).hex()
    doc["multirow"] = multi
    doc["dequantized"] = dequantized
    doc["gguf_py_disagreements"] = disagreements

    text = dump(doc) + "\n"
    with open(OUT, "w") as f:
        f.write(text)
    with open(OUT) as f:  # the numbers come back as the same f32 bits (−0.0 included)
        back = json.load(f)
    assert back == json.loads(json.dumps(doc))
    def same(a, b):  # bit equality after narrowing the parsed doubles
        a = np.array(a, dtype=np.float64).astype(F32)
        return np.array_equal(a.view(np.uint32), np.asarray(b, F32).view(np.uint32))
    assert same(back["inputs"], data)
    assert same(back["multirow"]["inputs"], m.reshape(-1))
    for n in DEQUANTIZED:
        ys = [dequantize(np.frombuffer(bytes.fromhex(h), np.uint8).reshape(1, -1), TYPES[n][0])
              for h in back[n]]
        assert same(back["dequantized"][n], np.concatenate(ys))
    for n in TYPES:
        assert all(len(h) == 2 * N // TYPES[n][1] * TYPES[n][2] for h in back[n]), n

    print(f"{os.path.relpath(OUT)}: {len(text)} bytes, {len(labels)} rows; {library}")
    print("max |dequant − x| / max|x| per row:")
    print("  " + " " * 18 + "".join(f"{n:>8s}" for n in TYPES))
    for i, label in enumerate(labels):
        print(f"  {label:18s}" + "".join(f"{ratios[n][i]:8.4f}" for n in TYPES))
    print("first 16 bytes of the K-types:")
    for label in ("zeros", "constant", "constant_negative", "tiny", "positive", "one_nonzero"):
        i = labels.index(label)
        for n in ("q4_K", "q5_K", "q6_K"):
            h = doc[n][i]
            tail = f"  …  last 16: {h[-32:]}" if n == "q6_K" else ""
            print(f"  {label:18s} {n}: {h[:32]}{tail}")
    print("gguf-py disagreements:", len(disagreements))


if __name__ == "__main__":
    main()
