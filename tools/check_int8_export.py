#!/usr/bin/env python3
"""End-to-end check of `vkfinetune quantize` (int8, compressed-tensors pack-quantized) against transformers.

Run with the reference venv ($VKF_REF_VENV/bin/python, see ../shared/tools/ref-setup), which has torch
(CPU), transformers and compressed-tensors (the client: transformers' CompressedTensorsHfQuantizer and
compressed-tensors' own decompressors). Not run in CI: it needs a release binary, a real model and
minutes of CPU. Nothing here re-implements compressed-tensors; every reference is transformers' own
loading of the written directory and its own forward pass.

  check_int8_export.py [--bin BIN] [--model HF_DIR] [--settings S1,S2,...] [--work DIR] [--keep]
                       [--eval-records K] [--val JSON] [--max-seq-length L] [--batch-size B]
                       [--prompts P1 --prompts P2 ...] [--tokens N] [--summary FILE.md] [--json FILE.json]

Defaults: --bin <repo>/.build/release/vkfinetune; --model $VKF_REF_MODEL or
$VKF_REF/smollm2-135m-instruct-f32 (VKF_REF defaults to ~/.cache/vkf-ref); --settings
sym-channel,sym-group64,asym-channel,asym-group64,sym-tensor (a setting is {sym|asym}-{channel|tensor|
groupG}: --scheme symmetric|asymmetric, --strategy channel|tensor|group with --group-size G);
--eval-records 64 records of --val (../shared/data/alpaca/alpaca_val.json); --max-seq-length 256;
--batch-size 4; --prompts the four in PROMPTS; --tokens 24; --work a temporary directory, removed at
the end unless --keep (with --work DIR and no --keep the files written into DIR are removed, DIR
itself is left).

Steps (all files under --work: eval.json, <setting>/, <setting>.json, logs/ holding every vkfinetune
process's command line, stdout and stderr):
 0. Held-out data.  The first --eval-records records of --val are written to WORK/eval.json (EVAL).
 1. Quantize.  Per setting `vkfinetune quantize --cpu --model HF_DIR --output WORK/<setting> --scheme S
    --strategy T [--group-size G] --eval-data EVAL --max-seq-length L --batch-size B --json
    WORK/<setting>.json --overwrite`, timed (wall seconds of the process, which includes vkfinetune's
    two held-out evaluations; the report's own `seconds`, quantising + writing only, is recorded
    too). From its JSON: lossBefore (the f32 model), lossAfter (the written directory loaded back by
    vkfinetune with int8 kernels), relativeSquaredError (Σ(ŵ−w)²/Σw² over the quantised projections).
    The size of WORK/<setting>/model.safetensors in MiB (2^20 bytes) is recorded, and that of the
    source model.safetensors for reference. A failed run (rc ≠ 0, or no JSON) fails the setting and
    its remaining steps are skipped, with one exception: a group setting whose G does not divide the
    input width of every projection (hidden_size for q/k/v/gate/up, num_attention_heads · head_dim
    for o, intermediate_size for down, from HF_DIR/config.json; e.g. 128 ∤ 576 for SmolLM2-135M)
    must be refused, since compressed-tensors 0.20.1 itself raises "tensor column shape must be
    divisble by the given group_size" for such a layer: a refusal whose message names the group size
    is recorded as "refused (expected)" and is no failure; such a setting quantised anyway goes
    through the remaining steps, and transformers' load judges it.
 2. transformers.  WORK/<setting> is loaded with AutoModelForCausalLM.from_pretrained(dir,
    dtype=float32, attn_implementation="eager") ("plain"); when that raises, again with
    quantization_config=CompressedTensorsConfig(dequantize=True) ("dequantize": every setting then
    becomes dense f32 weights (q − zp)·scale; compressed-tensors 0.20.1 needs this for asymmetric
    channel/group pack-quantized, whose packed zero point it mis-reads). Which one worked is recorded
    with the plain attempt's error. When plain worked, the dequantize load is made as well and the
    largest |Δ logit| between the two on the first prompt is reported (0 means both of transformers'
    paths decode the same weights; not judged). Neither load working fails the setting.
    a. Greedy decoding.  Per prompt: ids = tokenizer(prompt, return_tensors="pt") (the tokenizer of
       WORK/<setting> when it holds tokenizer.json, else that of HF_DIR; the SmolLM2 tokenizer adds no
       BOS), model.generate(do_sample=False, max_new_tokens=N) (stopping at the generation config's EOS
       ids like vkfinetune). A trailing EOS id is dropped (vkfinetune stops before printing it), and the
       new ids are decoded with skip_special_tokens=False, clean_up_tokenization_spaces=False. Then
       `vkfinetune generate --cpu --model WORK/<setting> --prompt P --max-new-tokens N` (greedy by
       default); its stdout less the one newline it always appends is its text, and its stderr's
       "K prompt + M new tokens (stop)" line gives its prompt length (a prompt token count differing
       from transformers' is flagged). Both decode the same int8 weights dequantised in f32, so
       at least ceil(3/4 · #prompts) prompts must match exactly or the setting fails (not 4 of 4: f32
       summation order differs between the two, and a near-tie may break differently); every mismatch
       is reported with the common prefix length in characters and both texts.
    b. Held-out loss, computed here independently and mirroring vkfinetune's SFT masking
       (Sources/VKFData/SFTTokenizer.swift): per EVAL record user = instruction + ("\\n\\n" + input if
       input else ""), assistant = output; full = tokenizer.apply_chat_template([user, assistant],
       tokenize=False), prompt = apply_chat_template([user], add_generation_prompt=True); the answer is
       full[len(prompt):] less trailing newlines/spaces, trained including the EOS text when it ends
       with it (else the whole rest plus an appended EOS id); prompt, answer and the rest are tokenized
       separately (add_special_tokens=False), concatenated, cut to --max-seq-length tokens; targets are
       the next tokens where those are answer tokens. Each example is run alone (no padding); loss =
       Σ NLL over trained targets / #targets over all examples (token-weighted, float64 log-softmax),
       like vkfinetune's eval. Computed once for HF_DIR itself (transformers' "before") and per setting
       ("after"). Reported next to vkfinetune's lossBefore / lossAfter with the differences. Not a
       failure, a warning: |Δ_vkf − Δ_tf| > --delta-tol (0.01), where Δ = after − before, or Δ_vkf and
       Δ_tf of opposite sign while both exceed 0.001 in size (the change in loss must agree even where
       the absolute losses differ, e.g. in masking). |before_vkf − before_tf| > --delta-tol is noted
       as a masking/tokenisation difference, also not a failure.
 3. Summary.  A markdown table (setting, dir MiB, quantize s, relative squared error, vkfinetune loss
    before → after (Δ), transformers loss before → after (Δ), greedy agreement x/N, how transformers
    loaded it) plus the mismatch and warning list is printed, and written to --summary; --json
    writes everything measured.

Exit status 1 when a quantize run (other than an expected refusal, step 1), a transformers load or a vkfinetune generate run fails, or a
required greedy agreement is not met; else 0 (loss-difference warnings do not change it).
"""
import argparse
import gc
import json
import math
import os
import re
import shutil
import sys
import tempfile
import time

from vkf_check import Runner, agreement, agreement_cell, mib, vkf_generate  # noqa: E402

os.environ.setdefault("TQDM_DISABLE", "1")  # compressed-tensors' per-module progress bars

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
REF = os.environ.get("VKF_REF", os.path.join(os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "vkf-ref"))
DEFAULT_MODEL = os.environ.get("VKF_REF_MODEL", os.path.join(REF, "smollm2-135m-instruct-f32"))
DEFAULT_VAL = os.path.join(REPO, "..", "shared", "data", "alpaca", "alpaca_val.json")
DEFAULT_SETTINGS = ["sym-channel", "sym-group64", "asym-channel", "asym-group64", "sym-tensor"]
PROMPTS = ["The capital of France is", "def fibonacci(n):", "List three colors:", "Water boils at"]
SETTING = re.compile(r"^(sym|asym)-(channel|tensor|group(\d+))$")
SIGN_EPS = 1e-3  # |Δ| below this has no meaningful sign


# MARK: - Processes

def projection_columns(model_dir):
    """Input widths of the seven projections (the dimension groups run along)."""
    with open(os.path.join(model_dir, "config.json")) as f:
        c = json.load(f)
    c = c.get("text_config", c)
    hidden, heads = c["hidden_size"], c["num_attention_heads"]
    head_dim = c.get("head_dim") or hidden // heads
    return sorted({hidden, heads * head_dim, c["intermediate_size"]})


def parse_setting(name):
    m = SETTING.match(name)
    if not m:
        sys.exit(f"unknown setting {name!r} (sym|asym)-(channel|tensor|groupG), e.g. sym-group128")
    scheme = "symmetric" if m.group(1) == "sym" else "asymmetric"
    if m.group(3):
        return scheme, "group", int(m.group(3))
    return scheme, m.group(2), None


# MARK: - vkfinetune

def quantize(runner, binary, model, setting, work, eval_path, max_len, batch):
    scheme, strategy, group = parse_setting(setting)
    out_dir = os.path.join(work, setting)
    report = os.path.join(work, f"{setting}.json")
    if os.path.exists(report):
        os.remove(report)
    cmd = [binary, "quantize", "--cpu", "--model", model, "--output", out_dir, "--scheme", scheme,
           "--strategy", strategy]
    if group is not None:
        cmd += ["--group-size", str(group)]
    cmd += ["--eval-data", eval_path, "--max-seq-length", str(max_len), "--batch-size", str(batch),
            "--json", report, "--overwrite"]
    rc, out, err, dt = runner.run(f"quantize-{setting}", cmd)
    r = {"rc": rc, "seconds": dt, "dir": out_dir, "scheme": scheme, "strategy": strategy, "group_size": group,
         "stdout": out.decode("utf-8", errors="replace").strip()[-1500:]}
    if rc == 0 and os.path.exists(report):
        with open(report) as f:
            r["report"] = json.load(f)
        r["mib"] = mib(os.path.join(out_dir, "model.safetensors"))
    else:
        r["error"] = (err or out).decode("utf-8", errors="replace").strip()[-800:]
    return r




# MARK: - transformers

def load_tokenizer(path):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(path)


def load_model(path, dequantize):
    import torch
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig
    kw = dict(dtype=torch.float32, attn_implementation="eager")
    if dequantize:
        kw["quantization_config"] = CompressedTensorsConfig(dequantize=True)
    m = AutoModelForCausalLM.from_pretrained(path, **kw)
    m.eval()
    return m


def eos_ids(model, tok):
    ids = getattr(model.generation_config, "eos_token_id", None)
    ids = [] if ids is None else ([ids] if isinstance(ids, int) else list(ids))
    if tok.eos_token_id is not None and tok.eos_token_id not in ids:
        ids.append(tok.eos_token_id)
    return set(ids)


def hf_greedy(model, tok, prompt, n):
    import torch
    enc = tok(prompt, return_tensors="pt")
    with torch.no_grad():
        out = model.generate(**enc, do_sample=False, max_new_tokens=n)
    new = out[0, enc["input_ids"].shape[1]:].tolist()
    stop = "max tokens"
    eos = eos_ids(model, tok)
    if new and new[-1] in eos:
        stop = f"EOS {new[-1]}"
        new = new[:-1]
    text = tok.decode(new, skip_special_tokens=False, clean_up_tokenization_spaces=False)
    return {"prompt_tokens": int(enc["input_ids"].shape[1]), "ids": new, "text": text, "stop": stop}


def sft_examples(tok, records, max_len):
    """(ids, targets) per record, mirroring SFTTokenizer.tokenizeConversation for one user/assistant turn."""
    eos_text, eos_id = tok.eos_token, tok.eos_token_id
    out, truncated = [], 0
    for r in records:
        inst, inp = r.get("instruction", ""), r.get("input", "") or ""
        user = inst + ("\n\n" + inp if inp else "")
        msgs = [{"role": "user", "content": user}, {"role": "assistant", "content": r["output"]}]
        full = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=False)
        prompt = tok.apply_chat_template(msgs[:1], tokenize=False, add_generation_prompt=True)
        if not full.startswith(prompt):
            raise RuntimeError("the generation prompt is not a prefix of the full rendering")
        start, end = len(prompt), len(full)
        while end > start and full[end - 1] in "\n ":
            end -= 1
        ids, trained = [], []

        def append(s, train):
            if s:
                piece = tok(s, add_special_tokens=False)["input_ids"]
                ids.extend(piece)
                trained.extend([train] * len(piece))
        append(full[:start], False)
        answer = full[start:end]
        if answer.endswith(eos_text):
            append(answer, True)
            cursor = end
        else:
            append(full[start:], True)
            ids.append(eos_id)
            trained.append(True)
            cursor = len(full)
        append(full[cursor:], False)
        if len(ids) > max_len:
            truncated += 1
            ids, trained = ids[:max_len], trained[:max_len]
        targets = [ids[i + 1] if trained[i + 1] else -100 for i in range(len(ids) - 1)] + [-100]
        out.append((ids, targets))
    return out, truncated


def hf_loss(model, examples):
    """Token-weighted mean NLL over trained targets; each example alone, log-softmax in float64."""
    import torch
    total, count = 0.0, 0
    with torch.no_grad():
        for ids, targets in examples:
            t = torch.tensor(targets)
            mask = t != -100
            if not bool(mask.any()):
                continue
            logits = model(input_ids=torch.tensor([ids])).logits[0].double()
            lp = torch.log_softmax(logits, dim=-1)
            total += float(-lp[mask].gather(1, t[mask].view(-1, 1)).sum())
            count += int(mask.sum())
    return total / count, count


def logits_first(model, tok, prompt):
    import torch
    with torch.no_grad():
        return model(**tok(prompt, return_tensors="pt")).logits[0].double()


# MARK: - Main

def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=os.path.join(REPO, ".build", "release", "vkfinetune"))
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--settings", default=",".join(DEFAULT_SETTINGS))
    p.add_argument("--work")
    p.add_argument("--keep", action="store_true")
    p.add_argument("--eval-records", type=int, default=64)
    p.add_argument("--val", default=DEFAULT_VAL)
    p.add_argument("--max-seq-length", type=int, default=256)
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--prompts", action="append")
    p.add_argument("--tokens", type=int, default=24)
    p.add_argument("--delta-tol", type=float, default=0.01)
    p.add_argument("--summary")
    p.add_argument("--json")
    args = p.parse_args()

    import compressed_tensors
    import torch
    import transformers
    transformers.utils.logging.disable_progress_bar()

    t_start = time.time()
    settings = [s.strip() for s in args.settings.split(",") if s.strip()]
    for s in settings:
        parse_setting(s)
    prompts = args.prompts or PROMPTS
    need_exact = math.ceil(0.75 * len(prompts))
    binary = os.path.abspath(args.bin)
    model_dir = os.path.abspath(args.model)
    if not os.access(binary, os.X_OK):
        sys.exit(f"no vkfinetune binary at {binary} (swift build -c release)")
    made_work = args.work is None
    work = tempfile.mkdtemp(prefix="vkf-int8-") if made_work else os.path.abspath(args.work)
    os.makedirs(work, exist_ok=True)
    runner = Runner(work)
    failures, warnings = [], []
    log = lambda s: print(s, flush=True)  # noqa: E731
    R = {"config": {"bin": binary, "model": model_dir, "settings": settings, "prompts": prompts,
                    "tokens": args.tokens, "eval_records": args.eval_records, "max_seq_length": args.max_seq_length,
                    "batch_size": args.batch_size, "delta_tol": args.delta_tol, "work": work,
                    "transformers": transformers.__version__, "compressed_tensors": compressed_tensors.__version__,
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads()},
         "source_mib": mib(os.path.join(model_dir, "model.safetensors")), "settings": {}}

    # 0. Held-out data.
    with open(args.val) as f:
        records = json.load(f)[: args.eval_records]
    eval_path = os.path.join(work, "eval.json")
    with open(eval_path, "w") as f:
        json.dump(records, f, indent=1, ensure_ascii=False)
    columns = projection_columns(model_dir)
    R["projection_columns"] = columns
    base_tok = load_tokenizer(model_dir)
    examples, truncated = sft_examples(base_tok, records, args.max_seq_length)
    R["eval"] = {"records": len(records), "truncated": truncated,
                 "tokens": sum(len(i) for i, _ in examples),
                 "targets": sum(sum(t != -100 for t in ts) for _, ts in examples)}
    log(f"[data] {len(records)} records → {R['eval']['tokens']} tokens, {R['eval']['targets']} trained targets, "
        f"{truncated} cut to {args.max_seq_length}")

    # transformers' "before": the source model itself.
    t0 = time.time()
    base = load_model(model_dir, dequantize=False)
    R["tf_before"], _ = hf_loss(base, examples)
    base_logits = logits_first(base, base_tok, prompts[0])
    del base
    gc.collect()
    log(f"[transformers] source model loss {R['tf_before']:.4f} ({time.time() - t0:.0f} s)")

    for s in settings:
        S = {"setting": s}
        R["settings"][s] = S
        # 1. Quantize.
        q = quantize(runner, binary, model_dir, s, work, eval_path, args.max_seq_length, args.batch_size)
        S["quantize"] = q
        _, strategy, group = parse_setting(s)
        undivided = [c for c in columns if group and c % group]
        if undivided:
            S["undivided_columns"] = undivided
        if q["rc"] != 0 and undivided and "group size" in q.get("error", "") and str(group) in q.get("error", ""):
            S["refused"] = True
            log(f"[quantize] {s}: refused as expected (group size {group} does not divide {undivided}): "
                f"{q.get('error', '')}")
            continue
        if q["rc"] != 0 or "report" not in q:
            failures.append(f"{s}: vkfinetune quantize failed (rc {q['rc']}): {q.get('error', '')}")
            log(f"[quantize] {s}: FAILED rc {q['rc']}: {q.get('error', '')}")
            continue
        rep = q["report"]
        S["vkf_before"], S["vkf_after"] = rep.get("lossBefore"), rep.get("lossAfter")
        S["rse"] = rep.get("relativeSquaredError")
        log(f"[quantize] {s}: {q['mib']:.1f} MiB, {q['seconds']:.1f} s (quantise+write {rep.get('seconds', 0):.1f} s), "
            f"rel. sq. error {S['rse']:.3e}, vkfinetune loss {S['vkf_before']:.4f} → {S['vkf_after']:.4f}")

        # 2. transformers load.
        t0 = time.time()
        model, S["load"] = None, None
        try:
            model = load_model(q["dir"], dequantize=False)
            S["load"] = "plain"
        except Exception as e:  # noqa: BLE001 - the reason is the result
            S["plain_error"] = f"{type(e).__name__}: {str(e)[:400]}"
            log(f"[transformers] {s}: plain from_pretrained failed: {S['plain_error'][:200]}")
            try:
                model = load_model(q["dir"], dequantize=True)
                S["load"] = "dequantize"
            except Exception as e2:  # noqa: BLE001
                S["dequantize_error"] = f"{type(e2).__name__}: {str(e2)[:400]}"
                failures.append(f"{s}: transformers cannot load the directory: {S['dequantize_error'][:300]}")
                log(f"[transformers] {s}: FAILED to load with dequantize=True too: {S['dequantize_error'][:300]}")
                continue
        tok_dir = q["dir"] if os.path.exists(os.path.join(q["dir"], "tokenizer.json")) else model_dir
        S["tokenizer_from"] = "output" if tok_dir == q["dir"] else "source"
        tok = load_tokenizer(tok_dir) if tok_dir != model_dir else base_tok
        first = logits_first(model, tok, prompts[0])
        S["max_abs_logit_vs_f32"] = float((first - base_logits).abs().max())
        if S["load"] == "plain":
            try:
                alt = load_model(q["dir"], dequantize=True)
                S["plain_vs_dequantize_max_abs_logit"] = float((first - logits_first(alt, tok, prompts[0])).abs().max())
                del alt
            except Exception as e:  # noqa: BLE001
                S["plain_vs_dequantize_max_abs_logit"] = None
                S["dequantize_error"] = f"{type(e).__name__}: {str(e)[:400]}"
            gc.collect()
        log(f"[transformers] {s}: loaded ({S['load']}, tokenizer from {S['tokenizer_from']}), "
            f"max |Δlogit| vs f32 {S['max_abs_logit_vs_f32']:.4f}"
            + (f", plain vs dequantize {S['plain_vs_dequantize_max_abs_logit']}" if S["load"] == "plain" else ""))

        # 2a. Greedy.
        hf = [hf_greedy(model, tok, pr, args.tokens) for pr in prompts]
        vkf = [vkf_generate(runner, binary, q["dir"], pr, args.tokens, tag=s) for pr in prompts]
        for pr, v in zip(prompts, vkf):
            if v["rc"] != 0:
                failures.append(f"{s}: vkfinetune generate failed on {pr!r}: {v.get('error', '')}")
        a = agreement([(pr, v, h) for pr, v, h in zip(prompts, vkf, hf)])
        S["greedy"] = a
        bad = a["exact"] < need_exact
        if bad:
            failures.append(f"{s}: greedy vkfinetune vs transformers {a['exact']}/{a['n']} exact (need {need_exact})")
        log(f"[greedy] {s}: {agreement_cell(a)}{'  FAIL' if bad else ''}")
        for row in a["rows"]:
            if not row["exact"]:
                log(f"    {row['prompt']!r}: vkfinetune {row['ours']!r} | transformers {row['theirs']!r}")
            if "prompt_tokens_differ" in row:
                log(f"    {row['prompt']!r}: prompt tokens vkfinetune {row['prompt_tokens_differ'][0]} "
                    f"vs transformers {row['prompt_tokens_differ'][1]}")

        # 2b. Loss.
        S["tf_before"] = R["tf_before"]
        S["tf_after"], _ = hf_loss(model, examples)
        del model
        gc.collect()
        S["transformers_seconds"] = time.time() - t0
        d_vkf = S["vkf_after"] - S["vkf_before"] if S["vkf_after"] is not None and S["vkf_before"] is not None else None
        d_tf = S["tf_after"] - S["tf_before"]
        S["delta_vkf"], S["delta_tf"] = d_vkf, d_tf
        if d_vkf is None:
            failures.append(f"{s}: the quantize report has no lossBefore/lossAfter")
        else:
            S["delta_diff"] = d_vkf - d_tf
            if abs(d_vkf - d_tf) > args.delta_tol:
                warnings.append(f"{s}: Δloss vkfinetune {d_vkf:+.4f} vs transformers {d_tf:+.4f} "
                                f"(differ by {d_vkf - d_tf:+.4f} > {args.delta_tol})")
            if d_vkf * d_tf < 0 and min(abs(d_vkf), abs(d_tf)) > SIGN_EPS:
                warnings.append(f"{s}: Δloss sign differs: vkfinetune {d_vkf:+.4f}, transformers {d_tf:+.4f}")
            S["before_diff"] = S["vkf_before"] - S["tf_before"]
            S["after_diff"] = S["vkf_after"] - S["tf_after"]
        log(f"[loss] {s}: vkfinetune {S['vkf_before']:.4f} → {S['vkf_after']:.4f} ({d_vkf:+.4f}); "
            f"transformers {S['tf_before']:.4f} → {S['tf_after']:.4f} ({d_tf:+.4f}) "
            f"[{S['transformers_seconds']:.0f} s in transformers]")

    before_vkf = [S["vkf_before"] for S in R["settings"].values() if S.get("vkf_before") is not None]
    if before_vkf:
        spread = max(before_vkf) - min(before_vkf)
        R["vkf_before_spread"] = spread
        if abs(before_vkf[0] - R["tf_before"]) > args.delta_tol:
            warnings.append(f"loss before: vkfinetune {before_vkf[0]:.4f} vs transformers {R['tf_before']:.4f} "
                            f"(differ by {before_vkf[0] - R['tf_before']:+.4f}): masking or tokenisation differs")

    # 3. Summary.
    R["runtime_s"] = time.time() - t_start
    R["failures"], R["warnings"] = failures, warnings
    md = summary_markdown(R, settings, prompts)
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
            for s in settings:
                shutil.rmtree(os.path.join(work, s), ignore_errors=True)
                if os.path.exists(os.path.join(work, f"{s}.json")):
                    os.remove(os.path.join(work, f"{s}.json"))
            shutil.rmtree(os.path.join(work, "logs"), ignore_errors=True)
            if os.path.exists(eval_path):
                os.remove(eval_path)
    sys.exit(1 if failures else 0)


def summary_markdown(R, settings, prompts):
    def fmt(x, spec):
        return "—" if x is None else format(x, spec)

    c = R["config"]
    lines = [f"vkfinetune quantize (int8 compressed-tensors pack-quantized) vs transformers {c['transformers']} + "
             f"compressed-tensors {c['compressed_tensors']}, model {os.path.basename(c['model'].rstrip('/'))} "
             f"({fmt(R.get('source_mib'), '.1f')} MiB f32), loss over {R['eval']['records']} alpaca_val records "
             f"({R['eval']['targets']} trained targets, max {c['max_seq_length']} tokens), greedy {len(prompts)} "
             f"prompts × {c['tokens']} tokens", "",
             "| setting | MiB | quantize s | rel. sq. error | vkfinetune loss before → after (Δ) "
             "| transformers loss before → after (Δ) | greedy exact | transformers load |",
             "|---|---:|---:|---:|---|---|---|---|"]
    for s in settings:
        S = R["settings"].get(s, {})
        q = S.get("quantize", {})
        if S.get("refused"):
            lines.append(f"| {s} | — | {fmt(q.get('seconds'), '.1f')} | refused (expected: {parse_setting(s)[2]} ∤ "
                         f"{', '.join(map(str, S['undivided_columns']))}) | | | | |")
            continue
        if q.get("rc", 0) != 0 or "report" not in q:
            lines.append(f"| {s} | — | {fmt(q.get('seconds'), '.1f')} | quantize failed (rc {q.get('rc')}) | | | | |")
            continue
        vk = (f"{S['vkf_before']:.4f} → {S['vkf_after']:.4f} ({S['delta_vkf']:+.4f})"
              if S.get("delta_vkf") is not None else "—")
        tf = (f"{S['tf_before']:.4f} → {S['tf_after']:.4f} ({S['delta_tf']:+.4f})" if "tf_after" in S else "—")
        load = S.get("load") or "failed"
        lines.append(f"| {s} | {fmt(q.get('mib'), '.1f')} | {q['seconds']:.1f} | {fmt(S.get('rse'), '.3e')} | {vk} | "
                     f"{tf} | {agreement_cell(S.get('greedy'))} | {load} |")
    notes = []
    for s in settings:
        S = R["settings"].get(s, {})
        if S.get("refused"):
            notes.append(f"- {s}: vkfinetune refused: {S['quantize'].get('error', '')[-200:]}")
        elif S.get("undivided_columns"):
            notes.append(f"- {s}: quantised although the group size does not divide {S['undivided_columns']}")
        if "before_diff" in S:
            notes.append(f"- {s}: vkfinetune − transformers loss: before {S['before_diff']:+.2e}, after "
                         f"{S['after_diff']:+.2e}, Δ {S['delta_diff']:+.2e}")
        if "plain_error" in S:
            notes.append(f"- {s}: plain from_pretrained failed ({S['plain_error'][:160]}); loaded with dequantize=True")
        if S.get("plain_vs_dequantize_max_abs_logit") is not None:
            notes.append(f"- {s}: plain vs dequantize=True max |Δlogit| {S['plain_vs_dequantize_max_abs_logit']:.3g}")
        for row in (S.get("greedy") or {}).get("rows", []):
            if not row["exact"]:
                notes.append(f"- {s} greedy {row['prompt']!r}: common prefix {row['common_prefix']} ch; "
                             f"vkfinetune {row['ours']!r} | transformers {row['theirs']!r}")
            if "prompt_tokens_differ" in row:
                notes.append(f"- {s} {row['prompt']!r}: prompt tokens vkfinetune {row['prompt_tokens_differ'][0]} vs "
                             f"transformers {row['prompt_tokens_differ'][1]}")
    if notes:
        lines += ["", "Details:"] + notes
    if R["warnings"]:
        lines += ["", "Warnings (not failures):"] + [f"- {w}" for w in R["warnings"]]
    lines += ["", "Failures:" if R["failures"] else "No failures."] + [f"- {f}" for f in R["failures"]]
    lines += ["", f"Runtime {R['runtime_s']:.0f} s."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
