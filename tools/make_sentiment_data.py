#!/usr/bin/env python3
"""Binary sentiment data set (SST-2 style) for fine-tuning a BERT classifier.

Source: the rotten-tomatoes movie-review snippets that VADER's authors rated by hand
(C.J. Hutto & E. Gilbert, ICWSM 2014): 10,605 sentences from the Pang & Lee reviews that
SST was also built from, each with the mean of at least 20 human ratings on -4..+4.
The file ships inside the PyPI sdist vaderSentiment==3.3.2 (MIT licence), at
additional_resources/hutto_ICWSM_2014.tar.gz -> hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt.

Labels: 1 if the mean score > 0, 0 if < 0; scores with |score| <= --min-abs-score are
dropped (the default 0.0 drops only exact zeros), as SST-2 drops neutral sentences.
Text is normalised minimally: '' becomes ", whitespace runs collapse to one space.
Duplicate texts are dropped (first kept), then a seeded shuffle splits off the test set.

Writes OUT_DIR/train.jsonl, OUT_DIR/test.jsonl (one {"text": ..., "label": 0|1} per line)
and OUT_DIR/README.md. Standard library only:

    python3 tools/make_sentiment_data.py OUT_DIR [--sdist PATH] [--test-fraction 0.1]
                                                 [--seed 0] [--min-abs-score 0.0]

Without --sdist the sdist is fetched with pip (needs network). Its SHA-256 is checked
either way. Errors print one line on stderr and exit with status 2.
"""
import argparse
import glob
import hashlib
import io
import json
import math
import os
import random
import re
import shlex
import subprocess
import sys
import tarfile
import tempfile

PACKAGE = "vaderSentiment==3.3.2"
SDIST_NAME = "vaderSentiment-3.3.2.tar.gz"
# SHA-256 of vaderSentiment-3.3.2.tar.gz as served by PyPI.
SDIST_SHA256 = "5d7c06e027fc8b99238edb0d53d970cf97066ef97654009890b83703849632f9"
INNER_TAR = "vaderSentiment-3.3.2/additional_resources/hutto_ICWSM_2014.tar.gz"
LICENSE_MEMBER = "vaderSentiment-3.3.2/LICENSE.txt"
GROUND_TRUTH = "hutto_ICWSM_2014/movieReviewSnippets_GroundTruth.txt"


class DataError(Exception):
    """An expected failure: reported as one line on stderr, exit status 2."""


def fetch_sdist(tmpdir):
    """Download the sdist with pip into tmpdir; return its path."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
           PACKAGE, "-d", tmpdir]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except subprocess.TimeoutExpired:
        raise DataError(f"pip download of {PACKAGE} timed out")
    if proc.returncode != 0:
        lines = [l.strip() for l in (proc.stderr or proc.stdout).splitlines() if l.strip()]
        last = lines[-1] if lines else f"exit status {proc.returncode}"
        raise DataError(f"pip download of {PACKAGE} failed: {last}")
    # pip may normalise the file name's case, so match loosely.
    found = [p for p in glob.glob(os.path.join(tmpdir, "*"))
             if os.path.basename(p).lower() == SDIST_NAME.lower()]
    if not found:
        raise DataError(f"pip download of {PACKAGE} produced no {SDIST_NAME} in {tmpdir}")
    return found[0]


def read_sdist(path):
    """Check the sdist's hash; return (ground-truth bytes, licence text)."""
    try:
        with open(path, "rb") as f:
            blob = f.read()
    except OSError as e:
        raise DataError(f"cannot read sdist {path}: {e.strerror}")
    digest = hashlib.sha256(blob).hexdigest()
    if digest != SDIST_SHA256:
        raise DataError(f"SHA-256 mismatch for {path}: got {digest}, expected {SDIST_SHA256}")
    # Both tarballs are read in memory; nothing is extracted to disk.
    with tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz") as outer:
        inner_blob = member_bytes(outer, INNER_TAR, path)
        licence = member_bytes(outer, LICENSE_MEMBER, path).decode("utf-8", "replace")
    with tarfile.open(fileobj=io.BytesIO(inner_blob), mode="r:gz") as inner:
        truth = member_bytes(inner, GROUND_TRUTH, f"{path}:{INNER_TAR}")
    return truth, licence


def member_bytes(tar, name, where):
    try:
        f = tar.extractfile(name)
    except KeyError:
        f = None
    if f is None:
        raise DataError(f"member {name} missing from {where}")
    return f.read()


def decode_line(raw):
    """UTF-8 if valid, else cp1252 (undefined bytes replaced): deterministic per line."""
    try:
        return raw.decode("utf-8"), False
    except UnicodeDecodeError:
        return raw.decode("cp1252", "replace"), True


def normalise(text):
    # The file writes a double quote as two single quotes.
    text = text.replace("''", '"')
    return re.sub(r"\s+", " ", text).strip()


def parse(truth):
    """Return ([(text, score)] in file order, unparsable count, cp1252-decoded count)."""
    rows, bad, fallback = [], 0, 0
    for raw in truth.splitlines():  # handles the file's CRLF endings
        if not raw.strip():
            continue
        line, used_fallback = decode_line(raw)
        fallback += used_fallback
        parts = line.strip().split("\t", 2)
        if len(parts) != 3:
            bad += 1
            continue
        try:
            score = float(parts[1])
        except ValueError:
            bad += 1
            continue
        text = normalise(parts[2])
        if not math.isfinite(score) or not text:
            bad += 1
            continue
        rows.append((text, score))
    return rows, bad, fallback


def label_and_dedupe(rows, min_abs):
    """Return ([(text, label)], neutral dropped, duplicates dropped)."""
    out, seen, neutral, dups = [], set(), 0, 0
    for text, score in rows:
        if abs(score) <= min_abs:
            neutral += 1
            continue
        if text in seen:
            dups += 1
            continue
        seen.add(text)
        out.append((text, 1 if score > 0 else 0))
    return out, neutral, dups


def write_atomic(path, content):
    """Write to a temp file beside path, then rename over it."""
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path), prefix=".tmp-", suffix=".part")
    try:
        # mkstemp makes the file 0600; give it the usual umask-based mode instead.
        umask = os.umask(0)
        os.umask(umask)
        os.fchmod(fd, 0o666 & ~umask)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(content)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def jsonl(examples):
    return "".join(json.dumps({"text": t, "label": l}, ensure_ascii=False) + "\n"
                   for t, l in examples)


def counts(examples):
    pos = sum(l for _, l in examples)
    return len(examples), pos, len(examples) - pos


def readme(args, command, licence, stats, splits):
    copyright_line = next((l.strip() for l in licence.splitlines()
                           if l.strip().lower().startswith("copyright")), "Copyright (c) C.J. Hutto")
    table = ["| split | examples | positive (1) | negative (0) |",
             "|-------|---------:|-------------:|-------------:|"]
    for name, ex in splits:
        n, pos, neg = counts(ex)
        table.append(f"| {name} | {n} | {pos} | {neg} |")
    return f"""# Movie-review sentence sentiment (binary, SST-2 style)

Made by `tools/make_sentiment_data.py`. Each line of `train.jsonl` / `test.jsonl` is
`{{"text": ..., "label": 0|1}}` (1 = positive, 0 = negative).

## Source

`{GROUND_TRUTH}` from `{INNER_TAR}` in the PyPI sdist
`{PACKAGE}` (`{SDIST_NAME}`, SHA-256 `{SDIST_SHA256}`).
It holds {stats['lines']} rotten-tomatoes movie-review snippets (the Pang & Lee sentences SST
was built from), each with the mean sentiment of at least 20 human raters on -4..+4, from
C.J. Hutto & E. Gilbert, "VADER: A Parsimonious Rule-based Model for Sentiment Analysis of
Social Media Text", ICWSM 2014.

## Licence

MIT, as the vaderSentiment package: {copyright_line}.

## Labelling

- label 1 if the mean score > 0, label 0 if it is < 0;
  sentences with |score| <= {args.min_abs_score} are dropped as neutral ({stats['neutral']} dropped).
- Text: `''` turned into `"`, whitespace runs collapsed to one space; nothing else changed.
- Exact duplicate texts dropped, first kept ({stats['dups']} dropped).
- Unparsable lines skipped: {stats['bad']}; lines decoded as cp1252 rather than UTF-8: {stats['fallback']}.
- Shuffled with `random.Random({args.seed})`; a fraction {args.test_fraction} split off as test.

## Counts

{chr(10).join(table)}

## Command

```
{command}
```
"""


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out_dir", metavar="OUT_DIR")
    ap.add_argument("--sdist", help=f"local {SDIST_NAME} (default: fetch with pip)")
    ap.add_argument("--test-fraction", type=float, default=0.1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--min-abs-score", type=float, default=0.0)
    args = ap.parse_args(argv)
    if not 0.0 <= args.test_fraction < 1.0:
        ap.error("--test-fraction must be in [0, 1)")
    if not args.min_abs_score >= 0.0:
        ap.error("--min-abs-score must be >= 0")

    if args.sdist:
        truth, licence = read_sdist(args.sdist)
    else:
        with tempfile.TemporaryDirectory(prefix="vader-sdist-") as tmpdir:
            truth, licence = read_sdist(fetch_sdist(tmpdir))

    rows, bad, fallback = parse(truth)
    print(f"read {len(rows) + bad} lines: {bad} unparsable skipped, "
          f"{fallback} decoded as cp1252")
    examples, neutral, dups = label_and_dedupe(rows, args.min_abs_score)
    if not examples:
        raise DataError("no labelled sentences left after filtering")

    random.Random(args.seed).shuffle(examples)
    n_test = round(len(examples) * args.test_fraction)
    test, train = examples[:n_test], examples[n_test:]

    # Recorded with the repo-relative script path so it can be rerun from the repo root.
    command = shlex.join(["python3", "tools/make_sentiment_data.py"]
                         + list(sys.argv[1:] if argv is None else argv))
    stats = dict(lines=len(rows) + bad, bad=bad, fallback=fallback, neutral=neutral, dups=dups)
    os.makedirs(args.out_dir, exist_ok=True)
    write_atomic(os.path.join(args.out_dir, "train.jsonl"), jsonl(train))
    write_atomic(os.path.join(args.out_dir, "test.jsonl"), jsonl(test))
    write_atomic(os.path.join(args.out_dir, "README.md"),
                 readme(args, command, licence, stats, [("train", train), ("test", test)]))

    parts = []
    for name, ex in (("train", train), ("test", test)):
        n, pos, neg = counts(ex)
        share = 100.0 * pos / n if n else 0.0
        parts.append(f"{name} {n} (pos {pos} / neg {neg}, {share:.1f}% pos)")
    print(f"wrote {args.out_dir}: " + "; ".join(parts)
          + f"; dropped {neutral} neutral, {dups} duplicate")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except DataError as e:
        print(f"make_sentiment_data: error: {e}", file=sys.stderr)
        sys.exit(2)
    except (OSError, tarfile.TarError, EOFError, ValueError) as e:
        print(f"make_sentiment_data: error: {type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("make_sentiment_data: interrupted", file=sys.stderr)
        sys.exit(2)
