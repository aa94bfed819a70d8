#!/usr/bin/env python3
"""Makes the safetensors fixture the Swift reader must read exactly.

Writes Tests/VKFModelTests/Fixtures/safetensors/python_small.safetensors with the
reference `safetensors` library (its Rust serializer), and prints the expected values
as Swift literals for Tests/VKFModelTests/SafetensorsFixtureTests.swift.

Setup (not part of the test suite):
    python3 -m venv /tmp/stvenv && /tmp/stvenv/bin/pip install safetensors==0.8.0 numpy
    /tmp/stvenv/bin/python tools/make_safetensors_fixtures.py

`--check FILE` instead loads a Swift-written FILE with the library and prints each tensor,
to confirm once by hand that our writer's output is readable by Python.
"""
import os
import sys

import numpy as np
from safetensors import _safetensors_rust as rust
from safetensors.numpy import load_file

OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "VKFModelTests", "Fixtures",
                   "safetensors", "python_small.safetensors")


def bf16_bits(x):
    """f32 -> bf16 bits, round to nearest even (as torch and BFloat16.fromFloat do)."""
    u = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    return ((u + 0x7FFF + ((u >> 16) & 1)) >> 16).astype(np.uint16)


def main():
    arrays = {
        "model.embed.weight": np.array([[1.5, -2.25, 3.0e-5], [1e10, -0.0, 65504.0]], np.float32),
        "model.norm.f16": np.array([0.1, -1.0, 6.1e-5, 65504.0], np.float16),
        "model.bf16": bf16_bits([0.1, -3.14159, 1e-20, 300.5]),  # stored as BF16 below
        "scalar": np.array(0.5, np.float32),
        "ids.i64": np.array([[0, -1], [2**40, 7]], np.int64),
        "ids.i32": np.array([5, -6, 2**30], np.int32),
        "bytes.u8": np.array([0, 255, 7], np.uint8),
        "wide.f64": np.array([1.0 / 3.0], np.float64),
    }
    dtypes = {"model.bf16": "bfloat16"}
    specs = {
        name: rust.TensorSpec(dtype=dtypes.get(name, a.dtype.name), shape=list(a.shape),
                              data_ptr=a.ctypes.data, data_len=a.nbytes)
        for name, a in arrays.items()
    }
    # One metadata key: the Rust library stores metadata in a HashMap, so one key keeps
    # the file byte-for-byte reproducible.
    data = rust.serialize(specs, {"format": "pt"})
    with open(OUT, "wb") as f:
        f.write(data)
    print(f"wrote {OUT} ({len(data)} bytes)")

    def lit(values):
        return "[" + ", ".join(repr(float(v)) for v in np.asarray(values).ravel()) + "]"

    bf = (arrays["model.bf16"].astype(np.uint32) << 16).view(np.float32)
    print("embed:", lit(arrays["model.embed.weight"]))
    print("f16:", lit(arrays["model.norm.f16"].astype(np.float32)))
    print("bf16:", lit(bf))
    print("i64:", lit(arrays["ids.i64"].astype(np.float32)))
    print("f64:", lit(arrays["wide.f64"].astype(np.float32)))


def check(path):
    """Loads `path` with the library's own parser (which validates the whole header) and
    prints each tensor converted to f32."""
    with open(path, "rb") as f:
        entries = rust.deserialize(f.read())
    kinds = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64,
             "I32": np.int32, "U8": np.uint8, "I8": np.int8, "BF16": np.uint16}
    for name, t in entries:
        raw = np.frombuffer(bytes(t["data"]), kinds[t["dtype"]])
        values = ((raw.astype(np.uint32) << 16).view(np.float32) if t["dtype"] == "BF16"
                  else raw.astype(np.float32))
        print(name, t["dtype"], t["shape"], values[:8].tolist())


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--check":
        check(sys.argv[2])
    else:
        main()
