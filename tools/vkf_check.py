"""Helpers shared by the client checks (tools/check_gguf_export.py, tools/check_int8_export.py):
running vkfinetune and the reference tools with their output kept in logs/, and comparing
greedy texts. Standard library only."""
import os
import re
import subprocess
import time

# `vkfinetune generate`'s stderr summary: "<p> prompt + <n> new tokens (<stop reason>)".
STATS = re.compile(r"(\d+) prompt \+ (\d+) new tokens \(([^)]*)\)")


class Runner:
    """Runs external commands with their output in logs/, timing each."""

    def __init__(self, work):
        self.logs = os.path.join(work, "logs")
        os.makedirs(self.logs, exist_ok=True)
        self.count = 0

    def run(self, name, cmd, cwd=None, env=None):
        self.count += 1
        stem = os.path.join(self.logs, f"{self.count:03d}-{re.sub(r'[^A-Za-z0-9_.-]+', '_', name)[:80]}")
        t0 = time.time()
        p = subprocess.run(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        dt = time.time() - t0
        with open(stem + ".cmd", "w") as f:
            f.write(" ".join(repr(c) if " " in c else c for c in cmd) + f"\n# rc {p.returncode}, {dt:.2f} s\n")
        with open(stem + ".out", "wb") as f:
            f.write(p.stdout)
        with open(stem + ".err", "wb") as f:
            f.write(p.stderr)
        return p.returncode, p.stdout, p.stderr, dt


def mib(path):
    """The file's size in MiB, or None when it does not exist."""
    return os.path.getsize(path) / 2 ** 20 if os.path.exists(path) else None


def vkf_generate(runner, binary, model, prompt, n, adapter=None, tag=""):
    """`vkfinetune generate` greedy text (without the newline it always appends) and its stats."""
    cmd = [binary, "generate", "--cpu", "--model", model, "--prompt", prompt, "--max-new-tokens", str(n)]
    if adapter:
        cmd += ["--adapter", adapter]
    rc, out, err, dt = runner.run(f"generate-{tag}", cmd)
    text = out.decode("utf-8", errors="replace")
    if text.endswith("\n"):
        text = text[:-1]
    r = {"rc": rc, "text": text, "seconds": dt}
    m = STATS.search(err.decode("utf-8", errors="replace"))
    if m:
        r.update(prompt_tokens=int(m.group(1)), new_tokens=int(m.group(2)), stop=m.group(3))
    if rc != 0:
        r["error"] = err.decode("utf-8", errors="replace").strip()[-500:]
    return r


def agreement(pairs):
    """pairs: [(prompt, ours_dict, theirs_dict)] → per prompt match / common prefix, and the count."""
    rows = []
    for prompt, ours, theirs in pairs:
        a, b = ours["text"], theirs["text"]
        row = {"prompt": prompt, "exact": ours.get("rc", 0) == 0 and a == b,
               "common_prefix": len(os.path.commonprefix([a, b])), "ours_chars": len(a), "theirs_chars": len(b),
               "ours": a, "theirs": b, "ours_stop": ours.get("stop"), "theirs_stop": theirs.get("stop")}
        if "prompt_tokens" in ours and "prompt_tokens" in theirs and ours["prompt_tokens"] != theirs["prompt_tokens"]:
            row["prompt_tokens_differ"] = [ours["prompt_tokens"], theirs["prompt_tokens"]]
        rows.append(row)
    return {"exact": sum(r["exact"] for r in rows), "n": len(rows), "rows": rows}


def agreement_cell(a, suffix=""):
    """"3/4<suffix> (prefix 12 ch)" for a table, "—" when not measured."""
    if a is None:
        return "—"
    s = f"{a['exact']}/{a['n']}{suffix}"
    bad = [r["common_prefix"] for r in a["rows"] if not r["exact"]]
    if bad:
        s += f" (prefix {', '.join(str(b) for b in bad)} ch)"
    return s
