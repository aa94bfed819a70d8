"""GGUF file comparison for tools/check_gguf_export.py: metadata key by key and tensors byte by
byte through gguf-py's GGUFReader, and for a mismatching tensor how far each side's dequantisation
is from the f32 source."""
from collections import Counter

import numpy as np

# Keys a writer names after the model or its run, not its content: the converter derives them from
# the directory name / config, vkfinetune from its --model argument.
IGNORED_KEYS = {"general.name", "general.basename", "general.size_label", "general.finetune"}
# Errors of a dequantised tensor are only analysed for this many mismatching tensors per outtype.
MAX_ANALYSED = 64


def field_value(field):
    import gguf
    types = tuple(t.name for t in field.types)
    value = field.contents()
    if field.types and field.types[0] == gguf.GGUFValueType.ARRAY and isinstance(value, list):
        value = tuple(value)
    return types, value


def short(v, n=80):
    s = repr(v)
    return s if len(s) <= n else s[:n] + f"… ({len(v) if hasattr(v, '__len__') else '?'} items)"


def compare_metadata(ours, theirs):
    """Differences between two GGUFReaders' key/values (IGNORED_KEYS and GGUF.* left out)."""
    ka = [k for k in ours.fields if not k.startswith("GGUF.") and k not in IGNORED_KEYS]
    kb = [k for k in theirs.fields if not k.startswith("GGUF.") and k not in IGNORED_KEYS]
    diffs = [f"key only in ours: {k}" for k in ka if k not in theirs.fields]
    diffs += [f"key only in theirs: {k}" for k in kb if k not in ours.fields]
    common_a = [k for k in ka if k in theirs.fields]
    common_b = [k for k in kb if k in ours.fields]
    if common_a != common_b:
        diffs.append("key order differs")
    for k in common_a:
        (ta, va), (tb, vb) = field_value(ours.fields[k]), field_value(theirs.fields[k])
        if ta != tb:
            diffs.append(f"{k}: type {ta} vs {tb}")
        elif va != vb:
            if isinstance(va, tuple) and isinstance(vb, tuple) and len(va) == len(vb):
                first = [i for i, (x, y) in enumerate(zip(va, vb)) if x != y]
                diffs.append(f"{k}: {len(first)} of {len(va)} elements differ, first "
                             + ", ".join(f"[{i}] {va[i]!r} vs {vb[i]!r}" for i in first[:3]))
            else:
                diffs.append(f"{k}: {short(va)} vs {short(vb)}")
    return diffs


def dequant(t):
    import gguf
    return np.asarray(gguf.quants.dequantize(t.data, t.tensor_type), dtype=np.float64).reshape(-1)


def compare_tensors(ours, theirs, source=None):
    """Tensor-by-tensor comparison. source: a GGUFReader of the f32 weights, for error analysis."""
    import gguf
    ta = {t.name: t for t in ours.tensors}
    tb = {t.name: t for t in theirs.tensors}
    src = {t.name: t for t in source.tensors} if source is not None else {}
    out = {
        "tensors_ours": len(ta), "tensors_theirs": len(tb),
        "order_equal": [t.name for t in ours.tensors] == [t.name for t in theirs.tensors],
        "only_ours": [n for n in ta if n not in tb], "only_theirs": [n for n in tb if n not in ta],
        "types_ours": dict(Counter(t.tensor_type.name for t in ours.tensors).most_common()),
        "types_theirs": dict(Counter(t.tensor_type.name for t in theirs.tensors).most_common()),
        "equal": 0, "mismatches": [],
    }
    analysed = 0
    for t in theirs.tensors:
        u = ta.get(t.name)
        if u is None:
            continue
        shape_a, shape_b = [int(x) for x in u.shape], [int(x) for x in t.shape]
        a, b = np.asarray(u.data).view(np.uint8).reshape(-1), np.asarray(t.data).view(np.uint8).reshape(-1)
        if u.tensor_type == t.tensor_type and shape_a == shape_b and a.size == b.size and np.array_equal(a, b):
            out["equal"] += 1
            continue
        m = {"name": t.name, "ours": u.tensor_type.name, "theirs": t.tensor_type.name, "shape": shape_b}
        if shape_a != shape_b:
            m["shape_ours"] = shape_a
        if u.tensor_type == t.tensor_type and a.size == b.size:
            _, type_size = gguf.GGML_QUANT_SIZES[t.tensor_type]
            blocks = (a.reshape(-1, type_size) != b.reshape(-1, type_size)).any(axis=1)
            m["blocks_differing"] = int(blocks.sum())
            m["blocks"] = int(blocks.size)
            m["block_fraction"] = float(blocks.mean())
        if t.name in src and analysed < MAX_ANALYSED:
            analysed += 1
            try:
                x = dequant(src[t.name])
                den = float((x * x).sum()) or 1.0
                m["rel_err_ours"] = float(((dequant(u) - x) ** 2).sum()) / den
                m["rel_err_theirs"] = float(((dequant(t) - x) ** 2).sum()) / den
            except Exception as e:  # a type gguf-py cannot dequantise: bytes still say enough
                m["rel_err_note"] = f"not analysed: {e}"
        out["mismatches"].append(m)
    out["total"] = len(tb)
    out["ok"] = out["equal"] == len(ta) == len(tb)  # the order is judged by the caller
    return out


def fmt_num(x, spec=".4f"):
    return "—" if x is None else format(x, spec)


def describe_mismatch(m):
    s = f"{m['name']} {m['shape']}: ours {m['ours']}, theirs {m['theirs']}"
    if "shape_ours" in m:
        s += f", our shape {m['shape_ours']}"
    if "block_fraction" in m:
        s += f", {m['blocks_differing']}/{m['blocks']} blocks differ ({100 * m['block_fraction']:.3g}%)"
    if "rel_err_ours" in m:
        s += f", rel. sq. error vs f32: ours {m['rel_err_ours']:.4e} theirs {m['rel_err_theirs']:.4e}"
    return s
