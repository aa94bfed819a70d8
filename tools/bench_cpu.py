"""What the CPU reference benchmarks (tools/bench_*_trl.py, tools/bench_bert_classifier.py) share:
glibc's malloc tuned never to give memory back, and CPU-time accounting to tell an idle
machine from a busy one.

Why the malloc tuning (as ../shared/tools/bench_lora.py): on this VM memory the guest returns is
reclaimed by the host and re-touching it costs ~3 s/GB; with plain glibc a SmolLM2 LoRA step
measured 46 s instead of 0.8 s. The variables must be set before the process starts, so the
script re-executes itself once with them (`--malloc-default` keeps plain glibc, for comparison).
"""
import os
import resource
import sys

TUNED_MALLOC = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": str(1 << 40), "MALLOC_ARENA_MAX": "1"}


def reexec_with_tuned_malloc():
    """Re-executes this script once with TUNED_MALLOC, unless --malloc-default or already set."""
    if "--malloc-default" not in sys.argv and any(os.environ.get(k) != v for k, v in TUNED_MALLOC.items()):
        os.execve(sys.executable, [sys.executable] + sys.argv, {**os.environ, **TUNED_MALLOC})


def busy_cpu_s():
    """Machine-wide busy CPU seconds (/proc/stat: everything but idle and iowait)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def own_cpu_s():
    """This process's user + system CPU seconds."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime
