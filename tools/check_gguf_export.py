#!/usr/bin/env python3
"""End-to-end check of `vkfinetune export --format gguf / gguf-lora` against llama.cpp itself.

Run with the reference venv ($VKF_REF_VENV/bin/python, see ../shared/tools/ref-setup), which has
llama-cpp-python (the client: llama.cpp's loader, its CPU kernels and llama-quantize), gguf-py, and
torch/transformers for llama.cpp's converters. Not run in CI: it needs a release binary, a real
model and minutes of CPU. Nothing here re-implements llama.cpp; every reference is llama.cpp's own.

  check_gguf_export.py [--bin BIN] [--model HF_DIR] [--adapter ADAPTER_DIR] [--work DIR] [--keep]
                       [--outtypes f32,f16,...] [--prompts P1 --prompts P2 ...] [--tokens N]
                       [--ppl-texts K] [--ppl-len L] [--val JSON] [--llama-cpp DIR] [--threads N]
                       [--summary FILE.md] [--json FILE.json]

Defaults: --bin <repo>/.build/release/vkfinetune; --model $VKF_REF_MODEL or
$VKF_REF/smollm2-135m-instruct-f32 (VKF_REF defaults to ~/.cache/vkf-ref); --llama-cpp
$VKF_REF/llama.cpp (a checkout: convert_hf_to_gguf.py, convert_lora_to_gguf.py, gguf-py/);
--outtypes all eight (f32 f16 bf16 q8_0 q4_0 q4_k_m q5_k_m q6_k); --prompts the four in PROMPTS;
--tokens 24; --ppl-texts 40 records of --val (../shared/data/alpaca/alpaca_val.json), --ppl-len 256;
--threads 1 (llama.cpp's threads: its workers spin at every barrier, so with more threads than idle
cores, e.g. beside a running `vkfinetune train`, a single-token decode slows 100×; one thread is
also plenty for a 135M model; results do not depend on it);
--work a temporary directory, removed at the end unless --keep (with --work DIR and no --keep the
files written into DIR are removed, DIR itself is left).

Steps (all files under --work: ours/, ref/, logs/ holding every tool's stdout/stderr):
 1. Export.  `vkfinetune export --cpu --format gguf --outtype T --model HF_DIR --output ours/T.gguf
    --overwrite` for every T (no --adapter here), timed (wall seconds of the process). The f32
    export is made even when f32 is not in --outtypes: steps 3 and 6 need it (it is then left out
    of the table).
 2. Converter.  For T in {f32, f16, bf16, q8_0} ∩ outtypes, llama.cpp's converter
    (cd LLAMA_CPP && PYTHONPATH=gguf-py:STUB python convert_hf_to_gguf.py HF_DIR --outtype T
    --outfile ref/convert_T.gguf, STUB a directory holding a dummy sentencepiece module) and a
    comparison with ours/T.gguf through gguf-py's GGUFReader: every key/value except GGUF.* (the
    header) and general.{name,basename,size_label,finetune} present in both, in the same order,
    with equal value types (array element types too) and equal values; the same tensor names in the
    same order; per tensor equal shape, ggml type and raw data bytes. Any difference fails.
 3. llama-quantize.  For T in {q8_0, q4_0, q4_k_m, q5_k_m, q6_k} ∩ outtypes, llama.cpp's
    llama_model_quantize (llama-cpp-python's binding of llama-quantize, no imatrix, default params,
    ftype LLAMA_FTYPE_MOSTLY_T, nthread = CPUs; run in a subprocess so its log goes to logs/) on
    ours/f32.gguf → ref/quantize_T.gguf, compared tensor by tensor with ours/T.gguf: same names and
    order, same shape, same ggml type, same bytes. Reported: tensors equal in type and bytes, the
    type histogram of both files, and every mismatch (name, our type, their type; for a same-type
    mismatch the fraction of differing blocks (ggml blocks: 32 or 256 values; elements for float
    types) and the relative squared error Σ(x̂−x)²/Σx² of each side's dequantisation (gguf-py's
    gguf.quants.dequantize) against the f32 source, i.e. which side is closer to the weights).
    Tensor mismatches fail. Metadata differences are listed but do not fail: llama-quantize edits
    general.file_type and adds general.quantization_version by itself, and it writes the tensors in
    its loader's order (output_norm, token_embd, then per block), so the order is reported, not
    judged. q8_0 goes through both
    step 2 and step 3 (our q8_0 claims the converter's bytes; if ggml's q8_0 quantiser and the
    converter's numpy one disagree, both checks are reported as they are).
 4. Greedy decoding, client vs us.  Every export is loaded in llama_cpp.Llama(n_ctx, logits_all,
    n_threads = n_threads_batch = --threads); each prompt is tokenized by llama.cpp (add_bos=False, special=True) and
    decoded greedily by argmax over llm.scores after llm.eval (not Llama.generate's sampler): up to
    --tokens new tokens, stopping before a token llama.cpp calls end-of-generation
    (llama_vocab_is_eog). Text = llm.detokenize(new ids, special=True) decoded as UTF-8
    (errors=replace). Then `vkfinetune generate --cpu --model ours/T.gguf --prompt P
    --max-new-tokens N` (greedy by default) on the SAME file; its stdout less the one newline it
    always appends is its text. Per prompt: exact match or the common prefix in characters; the
    prompt token counts (llama.cpp's vs vkfinetune's, parsed from its stderr) are recorded and a
    difference is flagged. Also `vkfinetune generate --model HF_DIR` (the safetensors directory
    itself) vs llama.cpp on ours/f32.gguf. For f32, f16, bf16 and the HF directory at least
    ceil(3/4 · #prompts) prompts must match exactly or the check fails; quantised types are only
    reported (llama.cpp's CPU matmuls quantise activations to q8 for quantised weights, so its
    greedy path may part from ours after a near-tie; f16/bf16 weights are multiplied with
    activations rounded to f16/bf16 there too, hence "3 of 4", not 4 of 4).
 5. Perplexity.  The first --ppl-texts records of --val become instruction + "\\n" + input + "\\n" +
    output, tokenized once by llama.cpp (the first export loaded; add_bos=False, special=False),
    truncated to --ppl-len tokens (records with fewer than 2 tokens are skipped). Each text is
    evaluated alone in a fresh context (llm.reset(); llm.eval(ids)), no BOS; the NLL of token i
    given tokens < i, i = 1..n−1, from log-softmax over llm.scores in float64. ppl = exp(Σ NLL /
    #tokens) over all texts (token-weighted). Reported per export with Δ vs f32 (absolute, %) and
    the file size in MiB (2^20 bytes). Every other export re-tokenizes the first text and a
    different id list is flagged.
 6. Adapter (only with --adapter).  `export --format gguf-lora --outtype f32` → ours/adapter_f32.gguf
    and `export --format gguf --outtype f32 --adapter` → ours/merged_f32.gguf. If torch and
    transformers import, llama.cpp's convert_lora_to_gguf.py --base HF_DIR --outtype f32 is run on
    the adapter and compared with ours/adapter_f32.gguf as in step 2 (a difference fails, except
    keys the converter takes from the adapter's model card / base_model_name_or_path, CARD_KEYS,
    which are listed only, and the tensor order: the converter writes them in the adapter file's
    sorted key order, which llama.cpp does not depend on; the converter failing to run is reported
    as skipped). llama.cpp greedy with
    Llama(model_path=ours/f32.gguf, lora_path=ours/adapter_f32.gguf) must equal `vkfinetune
    generate --model HF_DIR --adapter ADAPTER_DIR` and llama.cpp on ours/merged_f32.gguf for at
    least ceil(3/4 · #prompts) prompts each, else fail; vkfinetune generate on merged_f32.gguf is
    reported too. Perplexity of base, base + LoRA (llama.cpp applying the GGUF adapter) and merged.
 7. Summary.  A markdown table (outtype, MiB, export s, byte checks, greedy agreement, ppl, Δppl%)
    plus the mismatch list is printed, and written to --summary; --json writes everything measured.

Exit status 1 when an export or a reference tool fails, any converter or llama-quantize tensor
(or converter metadata) check fails, or a required greedy agreement is not met; else 0.
"""
import argparse
import gc
import json
import math
import os
import shutil
import sys
import tempfile
import time

import numpy as np

from gguf_compare import compare_metadata, compare_tensors, describe_mismatch, fmt_num  # noqa: E402
from vkf_check import Runner, agreement, agreement_cell, mib, vkf_generate  # noqa: E402


def agreement_cell_exact(a):
    return agreement_cell(a, " exact")

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
REF = os.environ.get("VKF_REF", os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "vkf-ref"))
DEFAULT_MODEL = os.environ.get("VKF_REF_MODEL", os.path.join(REF, "smollm2-135m-instruct-f32"))
DEFAULT_VAL = os.path.join(REPO, "..", "shared", "data", "alpaca", "alpaca_val.json")

ALL_OUTTYPES = ["f32", "f16", "bf16", "q8_0", "q4_0", "q4_k_m", "q5_k_m", "q6_k"]
FLOAT_OUTTYPES = {"f32", "f16", "bf16"}
CONVERTER_OUTTYPES = ["f32", "f16", "bf16", "q8_0"]  # convert_hf_to_gguf.py --outtype choices we export
QUANTIZE_FTYPES = {"q8_0": 7, "q4_0": 2, "q4_k_m": 15, "q5_k_m": 17, "q6_k": 18}  # LLAMA_FTYPE_MOSTLY_*
PROMPTS = ["The capital of France is", "def fibonacci(n):", "List three colors:", "Water boils at"]
# Keys convert_lora_to_gguf.py fills from the adapter's model card (PEFT's README.md) and
# adapter_config.json's base_model_name_or_path: provenance, reported but not judged in step 6.
CARD_KEYS = ("general.base_model.", "general.tags", "general.languages", "general.datasets",
             "general.dataset.", "general.license", "general.repo_url", "general.source.")


# MARK: - Processes

# MARK: - llama.cpp client

THREADS = 1  # set from --threads


def load_llama(path, n_ctx, lora=None):
    import llama_cpp
    kw = dict(model_path=path, n_ctx=n_ctx, n_batch=n_ctx, n_ubatch=n_ctx, logits_all=True, verbose=False,
              n_threads=THREADS, n_threads_batch=THREADS, seed=0)
    if lora:
        kw["lora_path"] = lora
    return llama_cpp.Llama(**kw)


def llama_greedy(llm, prompt, n):
    """llama.cpp's greedy continuation: argmax over its logits, stopping before an EOG token."""
    import llama_cpp
    ids = llm.tokenize(prompt.encode(), add_bos=False, special=True)
    llm.reset()
    llm.eval(ids)
    vocab = llm._model.vocab
    new, stop = [], "max tokens"
    for _ in range(n):
        nxt = int(np.argmax(llm.scores[llm.n_tokens - 1]))
        if llama_cpp.llama_vocab_is_eog(vocab, nxt):
            stop = f"EOG {nxt}"
            break
        new.append(nxt)
        if len(new) < n:
            llm.eval([nxt])
    text = llm.detokenize(new, special=True).decode("utf-8", errors="replace")
    return {"prompt_tokens": len(ids), "ids": new, "text": text, "stop": stop}


def llama_ppl(llm, texts):
    """Token-weighted perplexity; each text alone in a fresh context, no BOS."""
    total, count = 0.0, 0
    for ids in texts:
        llm.reset()
        llm.eval(ids)
        logits = np.asarray(llm.scores[: len(ids) - 1], dtype=np.float64)
        mx = logits.max(axis=1, keepdims=True)
        lse = (mx[:, 0] + np.log(np.exp(logits - mx).sum(axis=1)))
        target = logits[np.arange(len(ids) - 1), ids[1:]]
        total += float((lse - target).sum())
        count += len(ids) - 1
    return math.exp(total / count), count


# MARK: - vkfinetune generate



# MARK: - Steps

def export(runner, binary, model, outtype, output, adapter=None, fmt="gguf"):
    cmd = [binary, "export", "--cpu", "--format", fmt, "--outtype", outtype, "--model", model,
           "--output", output, "--overwrite"]
    if adapter:
        cmd += ["--adapter", adapter]
    rc, out, err, dt = runner.run(f"export-{fmt}-{outtype}{'-adapter' if adapter else ''}", cmd)
    r = {"rc": rc, "seconds": dt, "path": output}
    if rc == 0 and os.path.exists(output):
        r["mib"] = mib(output)
    else:
        r["error"] = (err or out).decode("utf-8", errors="replace").strip()[-800:]
    return r


def converter_env(work):
    stub = os.path.join(work, "stub")
    os.makedirs(stub, exist_ok=True)
    with open(os.path.join(stub, "sentencepiece.py"), "w") as f:
        f.write("class SentencePieceProcessor: pass\n")  # the converter imports it; llama BPE never uses it
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([os.path.join(LLAMA_CPP, "gguf-py"), stub])
    env["HF_HUB_OFFLINE"] = "1"
    return env


def run_quantize(runner, src, dst, ftype):
    code = ("import ctypes, os, sys, llama_cpp\n"
            "p = llama_cpp.llama_model_quantize_default_params()\n"
            f"p.ftype = {ftype}\n"
            "p.nthread = os.cpu_count()\n"
            "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))\n")
    return runner.run(f"llama-quantize-{ftype}", [sys.executable, "-c", code, src, dst])


def main():
    global LLAMA_CPP, THREADS
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=os.path.join(REPO, ".build", "release", "vkfinetune"))
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--adapter")
    p.add_argument("--work")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--outtypes", default=",".join(ALL_OUTTYPES))
    p.add_argument("--prompts", action="append")
    p.add_argument("--tokens", type=int, default=24)
    p.add_argument("--ppl-texts", type=int, default=40)
    p.add_argument("--ppl-len", type=int, default=256)
    p.add_argument("--val", default=DEFAULT_VAL)
    p.add_argument("--llama-cpp", default=os.path.join(REF, "llama.cpp"))
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--summary")
    p.add_argument("--json")
    args = p.parse_args()
    LLAMA_CPP = os.path.abspath(args.llama_cpp)
    THREADS = args.threads

    import gguf
    import llama_cpp

    t_start = time.time()
    outtypes = [t.strip() for t in args.outtypes.split(",") if t.strip()]
    for t in outtypes:
        if t not in ALL_OUTTYPES:
            sys.exit(f"unknown outtype {t} (one of {', '.join(ALL_OUTTYPES)})")
    prompts = args.prompts or PROMPTS
    need_exact = math.ceil(0.75 * len(prompts))
    binary = os.path.abspath(args.bin)
    model = os.path.abspath(args.model)
    if not os.access(binary, os.X_OK):
        sys.exit(f"no vkfinetune binary at {binary} (swift build -c release)")
    made_work = args.work is None
    work = tempfile.mkdtemp(prefix="vkf-gguf-") if made_work else os.path.abspath(args.work)
    ours_dir, ref_dir = os.path.join(work, "ours"), os.path.join(work, "ref")
    os.makedirs(ours_dir, exist_ok=True)
    os.makedirs(ref_dir, exist_ok=True)
    runner = Runner(work)
    failures = []
    R = {"config": {"bin": binary, "model": model, "adapter": args.adapter, "outtypes": outtypes,
                    "prompts": prompts, "tokens": args.tokens, "ppl_texts": args.ppl_texts, "ppl_len": args.ppl_len,
                    "llama_cpp_python": llama_cpp.__version__, "threads": THREADS, "work": work},
         "exports": {}, "converter": {}, "quantize": {}, "greedy": {}, "ppl": {}, "adapter": None}
    log = lambda s: print(s, flush=True)  # noqa: E731

    # 1. Exports.
    export_types = outtypes + ([] if "f32" in outtypes else ["f32"])
    for t in export_types:
        r = export(runner, binary, model, t, os.path.join(ours_dir, f"{t}.gguf"))
        R["exports"][t] = r
        if r["rc"] != 0:
            failures.append(f"export {t} failed: {r.get('error', '')}")
            log(f"[export] {t}: FAILED rc {r['rc']}: {r.get('error', '')}")
        else:
            log(f"[export] {t}: {r['mib']:.1f} MiB in {r['seconds']:.1f} s")
    ok_types = [t for t in export_types if R["exports"][t]["rc"] == 0]
    ours_path = {t: os.path.join(ours_dir, f"{t}.gguf") for t in ok_types}
    f32_reader = gguf.GGUFReader(ours_path["f32"]) if "f32" in ours_path else None

    # 2. Converter.
    env = converter_env(work)
    for t in [t for t in CONVERTER_OUTTYPES if t in outtypes and t in ours_path]:
        dst = os.path.join(ref_dir, f"convert_{t}.gguf")
        rc, _, err, dt = runner.run(f"convert_hf_to_gguf-{t}",
                                    [sys.executable, "convert_hf_to_gguf.py", model, "--outtype", t, "--outfile", dst],
                                    cwd=LLAMA_CPP, env=env)
        if rc != 0:
            failures.append(f"convert_hf_to_gguf.py --outtype {t} failed (rc {rc})")
            R["converter"][t] = {"rc": rc, "error": err.decode(errors="replace")[-800:]}
            log(f"[converter] {t}: converter FAILED rc {rc}")
            continue
        ours, theirs = gguf.GGUFReader(ours_path[t]), gguf.GGUFReader(dst)
        c = compare_tensors(ours, theirs, f32_reader)
        c["metadata_diffs"] = compare_metadata(ours, theirs)
        c["converter_seconds"] = dt
        c["ok"] = c["ok"] and c["order_equal"] and not c["metadata_diffs"]
        R["converter"][t] = c
        log(f"[converter] {t}: {c['equal']}/{c['total']} tensors byte-identical, "
            f"{len(c['metadata_diffs'])} metadata differences{'' if c['ok'] else '  FAIL'}")
        for d in c["metadata_diffs"]:
            log(f"    meta: {d}")
        for m in c["mismatches"]:
            log(f"    tensor: {describe_mismatch(m)}")
        if not c["order_equal"]:
            log(f"    tensor order differs; only ours {c['only_ours'][:5]}, only theirs {c['only_theirs'][:5]}")
        if not c["ok"]:
            failures.append(f"converter {t}: {c['equal']}/{c['total']} tensors identical, "
                            f"{len(c['metadata_diffs'])} metadata differences")
        del ours, theirs

    # 3. llama-quantize.
    for t in [t for t in QUANTIZE_FTYPES if t in outtypes and t in ours_path and "f32" in ours_path]:
        dst = os.path.join(ref_dir, f"quantize_{t}.gguf")
        rc, _, err, dt = run_quantize(runner, ours_path["f32"], dst, QUANTIZE_FTYPES[t])
        if rc != 0:
            failures.append(f"llama_model_quantize {t} failed (rc {rc})")
            R["quantize"][t] = {"rc": rc, "error": err.decode(errors="replace")[-800:]}
            log(f"[quantize] {t}: llama-quantize FAILED rc {rc}")
            continue
        ours, theirs = gguf.GGUFReader(ours_path[t]), gguf.GGUFReader(dst)
        c = compare_tensors(ours, theirs, f32_reader)
        c["metadata_diffs"] = compare_metadata(ours, theirs)
        c["quantize_seconds"] = dt
        c["mib_theirs"] = mib(dst)
        R["quantize"][t] = c
        log(f"[quantize] {t}: {c['equal']}/{c['total']} tensors equal in type and bytes{'' if c['ok'] else '  FAIL'}")
        log(f"    types ours   {c['types_ours']}")
        log(f"    types theirs {c['types_theirs']}")
        for m in c["mismatches"]:
            log(f"    tensor: {describe_mismatch(m)}")
        if not c["order_equal"]:
            log("    tensor order differs (not a failure: llama-quantize writes tensors in its loader's order)")
        for d in c["metadata_diffs"]:
            log(f"    meta (not a failure): {d}")
        if not c["ok"]:
            failures.append(f"llama-quantize {t}: {c['equal']}/{c['total']} tensors equal")
        del ours, theirs
    f32_reader = None
    gc.collect()

    # 4 + 5. Greedy decoding and perplexity, per export.
    records = []
    if args.ppl_texts > 0:
        with open(args.val) as f:
            records = json.load(f)[: args.ppl_texts]
    raw_texts = [r.get("instruction", "") + "\n" + r.get("input", "") + "\n" + r.get("output", "") for r in records]
    ppl_ids = None
    n_ctx = max(args.ppl_len, 64 + args.tokens) + 64
    vkf_hf = None

    def tokenize_texts(llm):
        ids = [llm.tokenize(t.encode(), add_bos=False, special=False)[: args.ppl_len] for t in raw_texts]
        return [x for x in ids if len(x) >= 2]

    def evaluate(label, path, lora=None):
        nonlocal ppl_ids
        t0 = time.time()
        llm = load_llama(path, n_ctx, lora)
        greedy = [llama_greedy(llm, pr, args.tokens) for pr in prompts]
        res = {"greedy": greedy}
        if raw_texts:
            if ppl_ids is None:
                ppl_ids = tokenize_texts(llm)
            elif tokenize_texts(llm)[:1] != ppl_ids[:1]:
                res["tokenizer_differs"] = True
                log(f"    NOTE: {label}'s tokenizer gives other ids for the first held-out text")
            res["ppl"], res["ppl_tokens"] = llama_ppl(llm, ppl_ids)
        res["llama_seconds"] = time.time() - t0
        del llm
        gc.collect()
        return res

    llama_res = {}
    for t in [t for t in outtypes if t in ours_path]:
        res = evaluate(t, ours_path[t])
        vkf = [vkf_generate(runner, binary, ours_path[t], pr, args.tokens, tag=t) for pr in prompts]
        a = agreement([(pr, v, g) for pr, v, g in zip(prompts, vkf, res["greedy"])])
        llama_res[t] = res
        R["greedy"][t] = a
        R["ppl"][t] = {"ppl": res.get("ppl"), "tokens": res.get("ppl_tokens")}
        required = t in FLOAT_OUTTYPES
        if required and a["exact"] < need_exact:
            failures.append(f"greedy {t}: vkfinetune vs llama.cpp {a['exact']}/{a['n']} exact (need {need_exact})")
        log(f"[client] {t}: greedy {agreement_cell_exact(a)}{'  FAIL' if required and a['exact'] < need_exact else ''}"
            + (f", ppl {res['ppl']:.4f} over {res['ppl_tokens']} tokens" if "ppl" in res else "")
            + f" ({res['llama_seconds']:.0f} s in llama.cpp)")
        for row in a["rows"]:
            if not row["exact"]:
                log(f"    {row['prompt']!r}: ours {row['ours']!r} | llama.cpp {row['theirs']!r}")
            if "prompt_tokens_differ" in row:
                log(f"    {row['prompt']!r}: prompt tokens vkfinetune {row['prompt_tokens_differ'][0]} "
                    f"vs llama.cpp {row['prompt_tokens_differ'][1]}")
    if "f32" in ours_path:
        f32_greedy = llama_res["f32"]["greedy"] if "f32" in llama_res else evaluate("f32", ours_path["f32"])["greedy"]
        vkf = [vkf_generate(runner, binary, model, pr, args.tokens, tag="hf") for pr in prompts]
        vkf_hf = agreement([(pr, v, g) for pr, v, g in zip(prompts, vkf, f32_greedy)])
        R["greedy"]["hf_dir_vs_f32"] = vkf_hf
        bad = vkf_hf["exact"] < need_exact
        if bad:
            failures.append(f"greedy: vkfinetune on the HF dir vs llama.cpp on f32.gguf {vkf_hf['exact']}/{vkf_hf['n']}")
        log(f"[client] HF dir (vkfinetune) vs f32.gguf (llama.cpp): {agreement_cell_exact(vkf_hf)}{'  FAIL' if bad else ''}")
        for row in vkf_hf["rows"]:
            if not row["exact"]:
                log(f"    {row['prompt']!r}: ours {row['ours']!r} | llama.cpp {row['theirs']!r}")
    base_ppl = R["ppl"].get("f32", {}).get("ppl")
    for t, v in R["ppl"].items():
        if v.get("ppl") is not None and base_ppl:
            v["delta"] = v["ppl"] - base_ppl
            v["delta_pct"] = 100 * (v["ppl"] / base_ppl - 1)
            v["mib"] = R["exports"][t].get("mib")

    # 6. Adapter.
    if args.adapter:
        ad = {"path": os.path.abspath(args.adapter)}
        R["adapter"] = ad
        adapter_dir = ad["path"]
        lora_path = os.path.join(ours_dir, "adapter_f32.gguf")
        merged_path = os.path.join(ours_dir, "merged_f32.gguf")
        ad["export_lora"] = export(runner, binary, model, "f32", lora_path, adapter=adapter_dir, fmt="gguf-lora")
        ad["export_merged"] = export(runner, binary, model, "f32", merged_path, adapter=adapter_dir)
        for k in ("export_lora", "export_merged"):
            e = ad[k]
            log(f"[adapter] {k}: " + (f"{e['mib']:.1f} MiB in {e['seconds']:.1f} s" if e["rc"] == 0
                                      else f"FAILED rc {e['rc']}: {e.get('error', '')}"))
            if e["rc"] != 0:
                failures.append(f"adapter {k} failed")
        if ad["export_lora"]["rc"] == 0:
            dst = os.path.join(ref_dir, "convert_lora_f32.gguf")
            rc, _, err, dt = runner.run("convert_lora_to_gguf-f32",
                                        [sys.executable, "convert_lora_to_gguf.py", "--base", model, "--outtype", "f32",
                                         "--outfile", dst, adapter_dir], cwd=LLAMA_CPP, env=env)
            if rc != 0:
                ad["converter"] = {"skipped": True, "rc": rc, "error": err.decode(errors="replace")[-800:]}
                log(f"[adapter] convert_lora_to_gguf.py did not run (rc {rc}): skipped; see {runner.logs}")
            else:
                ours, theirs = gguf.GGUFReader(lora_path), gguf.GGUFReader(dst)
                c = compare_tensors(ours, theirs)
                diffs = compare_metadata(ours, theirs)
                card = [d for d in diffs if any(k in d.split(":")[1 if d.startswith("key only") else 0]
                                                for k in CARD_KEYS)]
                c["metadata_diffs"] = [d for d in diffs if d not in card]
                c["card_metadata_diffs"] = card
                c["ok"] = c["ok"] and not c["metadata_diffs"]
                ad["converter"] = c
                log(f"[adapter] vs convert_lora_to_gguf.py: {c['equal']}/{c['total']} tensors byte-identical, "
                    f"{len(c['metadata_diffs'])} metadata differences{'' if c['ok'] else '  FAIL'}")
                for d in c["metadata_diffs"]:
                    log(f"    meta: {d}")
                for d in card:
                    log(f"    meta (model-card provenance, not a failure): {d}")
                if not c["order_equal"]:
                    log("    tensor order differs (not a failure); ours " + ", ".join(
                        t.name for t in ours.tensors[:4]) + " …; theirs " + ", ".join(t.name for t in theirs.tensors[:4]) + " …")
                    c["order_ours"] = [t.name for t in ours.tensors[:14]]
                    c["order_theirs"] = [t.name for t in theirs.tensors[:14]]
                for m in c["mismatches"][:40]:
                    log(f"    tensor: {describe_mismatch(m)}")
                if not c["ok"]:
                    failures.append(f"adapter vs convert_lora_to_gguf.py: {c['equal']}/{c['total']} tensors identical")
                del ours, theirs
        if ad["export_lora"]["rc"] == 0 and ad["export_merged"]["rc"] == 0 and "f32" in ours_path:
            lora_res = evaluate("base+lora", ours_path["f32"], lora=lora_path)
            merged_res = evaluate("merged", merged_path)
            vkf_ad = [vkf_generate(runner, binary, model, pr, args.tokens, adapter=adapter_dir, tag="hf-adapter")
                      for pr in prompts]
            vkf_merged = [vkf_generate(runner, binary, merged_path, pr, args.tokens, tag="merged") for pr in prompts]
            checks = {
                "vkf_hf_adapter_vs_llama_lora": agreement([(pr, v, g) for pr, v, g in
                                                           zip(prompts, vkf_ad, lora_res["greedy"])]),
                "llama_merged_vs_llama_lora": agreement([(pr, v, g) for pr, v, g in
                                                         zip(prompts, merged_res["greedy"], lora_res["greedy"])]),
                "vkf_merged_vs_llama_merged": agreement([(pr, v, g) for pr, v, g in
                                                         zip(prompts, vkf_merged, merged_res["greedy"])]),
            }
            ad["greedy"] = checks
            ad["ppl"] = {"base": llama_res.get("f32", {}).get("ppl"), "base_lora": lora_res.get("ppl"),
                         "merged": merged_res.get("ppl")}
            ad["mib_lora"] = ad["export_lora"]["mib"]
            for name, a in checks.items():
                required = name != "vkf_merged_vs_llama_merged"
                bad = required and a["exact"] < need_exact
                if bad:
                    failures.append(f"adapter greedy {name}: {a['exact']}/{a['n']} exact (need {need_exact})")
                log(f"[adapter] {name}: {agreement_cell_exact(a)}{'  FAIL' if bad else ''}")
                for row in a["rows"]:
                    if not row["exact"]:
                        log(f"    {row['prompt']!r}: {row['ours']!r} | {row['theirs']!r}")
            base_lora_ids = [g["text"] for g in lora_res["greedy"]]
            base_texts = [g["text"] for g in llama_res["f32"]["greedy"]] if "f32" in llama_res else None
            ad["adapter_changes_greedy"] = None if base_texts is None else sum(
                a != b for a, b in zip(base_lora_ids, base_texts))
            if ad["ppl"]["base_lora"] is not None:
                log(f"[adapter] ppl base {fmt_num(ad['ppl']['base'])}, base+LoRA {ad['ppl']['base_lora']:.4f}, "
                    f"merged {ad['ppl']['merged']:.4f}; adapter changes {ad['adapter_changes_greedy']} of "
                    f"{len(prompts)} greedy texts vs base")
    else:
        log("[adapter] no --adapter: step 6 skipped")

    # 7. Summary.
    R["runtime_s"] = time.time() - t_start
    R["failures"] = failures
    md = summary_markdown(R, outtypes, prompts)
    print()
    print(md)
    if args.summary:
        with open(args.summary, "w") as f:
            f.write(md)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(R, f, indent=1, default=str)
    if not args.keep:
        if made_work:
            shutil.rmtree(work, ignore_errors=True)
        else:
            for d in ("ours", "ref", "logs", "stub"):
                shutil.rmtree(os.path.join(work, d), ignore_errors=True)
    sys.exit(1 if failures else 0)


def summary_markdown(R, outtypes, prompts):
    def fmt(x, spec):
        return "—" if x is None else format(x, spec)

    lines = [f"vkfinetune export → GGUF vs llama.cpp (llama-cpp-python {R['config']['llama_cpp_python']}), "
             f"model {os.path.basename(R['config']['model'].rstrip('/'))}, {len(prompts)} prompts × "
             f"{R['config']['tokens']} tokens, ppl over {R['ppl'].get('f32', {}).get('tokens') or '—'} tokens "
             f"of {R['config']['ppl_texts']} alpaca_val texts", "",
             "| outtype | MiB | export s | converter bytes | llama-quantize bytes | greedy vs llama.cpp (same file) "
             "| ppl (llama.cpp) | Δppl % |",
             "|---|---:|---:|---|---|---|---:|---:|"]
    for t in outtypes:
        e = R["exports"].get(t, {})
        conv, quant = R["converter"].get(t), R["quantize"].get(t)

        def cell(c):
            if c is None:
                return "—"
            if "equal" not in c:
                return f"tool failed (rc {c.get('rc')})"
            s = f"{c['equal']}/{c['total']}"
            if c.get("metadata_diffs") and "converter_seconds" in c:
                s += f", {len(c['metadata_diffs'])} meta diffs"
            return s + (" ✓" if c["ok"] else " ✗")
        pp = R["ppl"].get(t, {})
        lines.append(f"| {t} | {fmt(e.get('mib'), '.1f')} | {fmt(e.get('seconds'), '.1f')} | {cell(conv)} | "
                     f"{cell(quant)} | {agreement_cell_exact(R['greedy'].get(t))} | {fmt(pp.get('ppl'), '.4f')} | "
                     f"{fmt(pp.get('delta_pct'), '+.2f')} |")
    hf = R["greedy"].get("hf_dir_vs_f32")
    if hf:
        lines.append(f"| HF dir (vkfinetune) vs f32.gguf (llama.cpp) | | | | | {agreement_cell_exact(hf)} | | |")
    ad = R.get("adapter")
    if ad and "greedy" in ad:
        base = R["ppl"].get("f32", {}).get("ppl")
        pct = lambda x: None if x is None or not base else 100 * (x / base - 1)  # noqa: E731
        conv = ad.get("converter") or {}
        conv_cell = ("skipped" if conv.get("skipped") else
                     f"{conv['equal']}/{conv['total']}" + (" ✓" if conv["ok"] else " ✗") if "equal" in conv else "—")
        g = ad["greedy"]
        lines.append(f"| adapter gguf-lora f32 + f32.gguf (llama.cpp) vs vkfinetune HF+adapter | "
                     f"{fmt(ad.get('mib_lora'), '.1f')} | {fmt(ad['export_lora'].get('seconds'), '.1f')} | "
                     f"{conv_cell} | | {agreement_cell_exact(g['vkf_hf_adapter_vs_llama_lora'])} | "
                     f"{fmt(ad['ppl'].get('base_lora'), '.4f')} | {fmt(pct(ad['ppl'].get('base_lora')), '+.2f')} |")
        lines.append(f"| merged f32 (llama.cpp) vs base+LoRA (llama.cpp) | "
                     f"{fmt(ad['export_merged'].get('mib'), '.1f')} | {fmt(ad['export_merged'].get('seconds'), '.1f')} | "
                     f"| | {agreement_cell_exact(g['llama_merged_vs_llama_lora'])} | {fmt(ad['ppl'].get('merged'), '.4f')} | "
                     f"{fmt(pct(ad['ppl'].get('merged')), '+.2f')} |")
        lines.append(f"| merged f32: vkfinetune vs llama.cpp (same file) | | | | | "
                     f"{agreement_cell_exact(g['vkf_merged_vs_llama_merged'])} | | |")
    elif R["config"]["adapter"] is None:
        lines.append("")
        lines.append("No --adapter: the LoRA checks (step 6) were skipped.")
    mism = []
    for kind in ("converter", "quantize"):
        for t, c in R[kind].items():
            if "order_equal" in c and not c["order_equal"]:
                mism.append(f"- {kind} {t}: tensor order differs" + ("" if kind == "converter" else " (not a failure)"))
            for d in c.get("metadata_diffs", []):
                mism.append(f"- {kind} {t} metadata{'' if kind == 'converter' else ' (not a failure)'}: {d}")
            for m in c.get("mismatches", []):
                mism.append(f"- {kind} {t}: {describe_mismatch(m)}")
    if ad and isinstance(ad.get("converter"), dict):
        for d in ad["converter"].get("metadata_diffs", []):
            mism.append(f"- adapter converter metadata: {d}")
        if "order_equal" in ad["converter"] and not ad["converter"]["order_equal"]:
            c = ad["converter"]
            mism.append("- adapter converter: tensor order differs (not a failure): ours "
                        + ", ".join(c["order_ours"][:7]) + " …; theirs " + ", ".join(c["order_theirs"][:7]) + " …")
        for d in ad["converter"].get("card_metadata_diffs", []):
            mism.append(f"- adapter converter metadata (model-card provenance, not a failure): {d}")
        for m in ad["converter"].get("mismatches", []):
            mism.append(f"- adapter converter: {describe_mismatch(m)}")
    lines += ["", "Mismatches:" if mism else "Mismatches: none."] + mism
    lines += ["", f"Runtime {R['runtime_s']:.0f} s. " + (f"FAILED ({len(R['failures'])}):" if R["failures"] else "All checks passed.")]
    lines += [f"- {f}" for f in R["failures"]]
    return "\n".join(lines) + "\n"


LLAMA_CPP = None

if __name__ == "__main__":
    main()
