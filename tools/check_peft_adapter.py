#!/usr/bin/env python3
"""PEFT interop for vkfinetune's adapter and merged-model directories.

Two subcommands, run with the reference venv ($VKF_REF_VENV/bin/python, see ../shared/tools/ref-setup):

  check --base HF_DIR --adapter ADAPTER_DIR (--prompt TEXT | --ids 1,2,3)
        [--expect OUR_LOGITS.safetensors] [--merged MERGED_DIR] [--max-nmse X]
      Loads PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter) unmodified,
      prints a checksum of its logits for the prompt, and
      - with --expect (a file holding `ids` (T,) and `logits` (T, V) that vkfinetune wrote), the NMSE
        Σ(a−b)²/Σa² and max |a−b| of ours vs PEFT's (ids are taken from that file);
      - with --merged (a directory vkfinetune wrote after merging), loads it with
        AutoModelForCausalLM.from_pretrained, compares its logits with PEFT's adapter-on logits, and
        its weights with PEFT's own merge_and_unload().
      Exits 1 when any NMSE exceeds --max-nmse.

  model --dir HF_DIR --expect OUR_LOGITS.safetensors [--max-nmse X]
      Loads a model directory vkfinetune wrote (HFModelWriter) with AutoModelForCausalLM.from_pretrained
      and compares its logits for the file's ids with ours. Exits 1 when the NMSE exceeds --max-nmse.

  make-fixture [--out DIR]
      Writes the committed CI fixture (default Tests/VKFPEFTTests/Fixtures/peftio): a tiny random
      Llama (base/config.json + base/model.safetensors), two adapters saved by PEFT itself with
      nonzero lora_B (lora/: r=4, q/v/down only; dora/: r=4, use_dora + use_rslora, all seven
      projections, magnitudes perturbed) and expected.safetensors: ids (T,) as I32 and PEFT's
      logits (T, V) base / with each adapter / after PEFT's merge_and_unload. The Swift tests read
      it without Python.
"""
import argparse
import json
import os
import shutil
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_FIXTURE = os.path.join(HERE, "..", "Tests", "VKFPEFTTests", "Fixtures", "peftio")


def nmse(ours, ref):
    ours, ref = ours.double(), ref.double()
    return float(((ours - ref) ** 2).sum() / (ref ** 2).sum()), float((ours - ref).abs().max())


def checksum(logits):
    l = logits.double()
    return f"sum {float(l.sum()):.6f} sumsq {float((l ** 2).sum()):.6f} argmax {l.argmax(-1).tolist()[:16]}"


@torch.no_grad()
def logits_of(model, ids):
    return model(input_ids=ids.view(1, -1)).logits[0].float()


def check(args):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ours = load_file(args.expect) if args.expect else None
    if ours is not None and "ids" in ours:
        ids = ours["ids"].long().view(-1)
    elif args.ids:
        ids = torch.tensor([int(x) for x in args.ids.split(",")], dtype=torch.long)
    elif args.prompt is not None:
        ids = AutoTokenizer.from_pretrained(args.base)(args.prompt, return_tensors="pt").input_ids[0]
    else:
        sys.exit("give --prompt, --ids, or --expect with an `ids` tensor")

    base = AutoModelForCausalLM.from_pretrained(args.base, dtype=torch.float32)
    base.eval()
    base_logits = logits_of(base, ids)
    model = PeftModel.from_pretrained(base, args.adapter)
    model.eval()
    peft_logits = logits_of(model, ids)
    print(f"ids {ids.tolist()}")
    print(f"peft logits {tuple(peft_logits.shape)}: {checksum(peft_logits)}")
    print(f"adapter changes logits by nmse {nmse(base_logits, peft_logits)[0]:.3e} vs base")
    failed = False

    def report(what, a, b):
        nonlocal failed
        e, m = nmse(a, b)
        bad = e > args.max_nmse
        failed |= bad
        print(f"{what}: nmse {e:.3e} max_abs {m:.3e}{'  FAIL' if bad else ''}")

    if ours is not None:
        report("ours (adapter on) vs peft", ours["logits"].float().view_as(peft_logits), peft_logits)
    if args.merged:
        merged = AutoModelForCausalLM.from_pretrained(args.merged, dtype=torch.float32)
        merged.eval()
        merged_logits = logits_of(merged, ids)
        report("our merged dir (transformers) vs peft adapter on", merged_logits, peft_logits)
        if ours is not None:
            report("our merged dir (transformers) vs ours", merged_logits, ours["logits"].float().view_as(peft_logits))
        peft_merged = model.merge_and_unload().state_dict()
        worst = ("", -1.0)
        for name, t in merged.state_dict().items():
            if name in peft_merged:
                e = nmse(t, peft_merged[name])[0] if float((peft_merged[name] ** 2).sum()) > 0 else 0.0
                if e > worst[1]:
                    worst = (name, e)
        print(f"our merged weights vs peft merge_and_unload: worst nmse {worst[1]:.3e} ({worst[0]})")
        failed |= worst[1] > args.max_nmse
    sys.exit(1 if failed else 0)


def model_check(args):
    from transformers import AutoModelForCausalLM

    ours = load_file(args.expect)
    ids = ours["ids"].long().view(-1)
    model = AutoModelForCausalLM.from_pretrained(args.dir, dtype=torch.float32)
    model.eval()
    logits = logits_of(model, ids)
    e, m = nmse(ours["logits"].float().view_as(logits), logits)
    print(f"transformers logits {tuple(logits.shape)}: {checksum(logits)}")
    print(f"ours vs transformers on our directory: nmse {e:.3e} max_abs {m:.3e}")
    sys.exit(1 if e > args.max_nmse else 0)


def make_fixture(args):
    from peft import LoraConfig, PeftModel, get_peft_model
    from transformers import LlamaConfig, LlamaForCausalLM

    out = os.path.abspath(args.out)
    torch.manual_seed(1234)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=4,
                      num_key_value_heads=2, vocab_size=61, max_position_embeddings=64, rms_norm_eps=1e-6,
                      tie_word_embeddings=False, bos_token_id=1, eos_token_id=2)
    base = LlamaForCausalLM(cfg).float()
    with torch.no_grad():
        for name, p in base.named_parameters():
            p.copy_(1 + 0.2 * torch.randn_like(p) if name.endswith("norm.weight") else 0.1 * torch.randn_like(p))
    base.eval()
    ids = torch.tensor([1, 17, 5, 42, 9, 33, 60, 2, 28], dtype=torch.long)

    tmp = tempfile.mkdtemp(dir=os.path.dirname(out) if os.path.isdir(os.path.dirname(out)) else None)
    try:
        base.save_pretrained(os.path.join(tmp, "base"))
        expected = {"ids": ids.to(torch.int32), "logits.base": logits_of(base, ids)}
        adapters = {
            "lora": LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, task_type="CAUSAL_LM",
                               target_modules=["q_proj", "v_proj", "down_proj"]),
            "dora": LoraConfig(r=4, lora_alpha=6, lora_dropout=0.0, task_type="CAUSAL_LM", use_dora=True,
                               use_rslora=True, target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                "gate_proj", "up_proj", "down_proj"]),
        }
        for seed, (name, lc) in enumerate(adapters.items()):
            torch.manual_seed(100 + seed)
            fresh = LlamaForCausalLM.from_pretrained(os.path.join(tmp, "base"), dtype=torch.float32)
            model = get_peft_model(fresh, lc)
            with torch.no_grad():
                for pname, p in model.named_parameters():
                    if "lora_B" in pname:
                        p.copy_(0.2 * torch.randn_like(p))
                    elif "lora_magnitude_vector" in pname:
                        p.mul_(1 + 0.1 * torch.randn_like(p))
            model.save_pretrained(os.path.join(tmp, name))
            # Reload exactly as a user would, so the fixture holds what PEFT reads back.
            loaded = PeftModel.from_pretrained(
                LlamaForCausalLM.from_pretrained(os.path.join(tmp, "base"), dtype=torch.float32),
                os.path.join(tmp, name))
            loaded.eval()
            expected[f"logits.{name}"] = logits_of(loaded, ids)
            expected[f"logits.{name}.merged"] = logits_of(loaded.merge_and_unload(), ids)
            os.remove(os.path.join(tmp, name, "README.md"))  # PEFT's boilerplate card, not needed
            # PEFT records the (temporary) base path; point it at the fixture's base/ instead.
            config_path = os.path.join(tmp, name, "adapter_config.json")
            with open(config_path) as f:
                adapter_config = json.load(f)
            adapter_config["base_model_name_or_path"] = "base"
            # peft stores target_modules from a set (order varies with string hashing): sort it.
            adapter_config["target_modules"] = sorted(adapter_config["target_modules"])
            with open(config_path, "w") as f:
                json.dump(adapter_config, f, indent=2, sort_keys=True)
        os.remove(os.path.join(tmp, "base", "generation_config.json"))
        save_file({k: v.contiguous() for k, v in expected.items()}, os.path.join(tmp, "expected.safetensors"),
                  metadata={"format": "pt"})
        with open(os.path.join(tmp, "README.md"), "w") as f:
            f.write("Made by tools/check_peft_adapter.py make-fixture (peft "
                    f"{__import__('peft').__version__}, transformers {__import__('transformers').__version__}, "
                    f"torch {torch.__version__}). Do not edit by hand.\n")
        for root, dirs, files in os.walk(tmp):  # mkdtemp and safetensors create 0700/0600
            os.chmod(root, 0o755)
            for f in files:
                os.chmod(os.path.join(root, f), 0o644)
        if os.path.exists(out):
            shutil.rmtree(out)
        os.rename(tmp, out)
        tmp = None
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    for k, v in sorted(expected.items()):
        print(f"{k}: {tuple(v.shape)}")
    print(f"wrote {out}")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check")
    c.add_argument("--base", required=True)
    c.add_argument("--adapter", required=True)
    c.add_argument("--prompt")
    c.add_argument("--ids")
    c.add_argument("--expect")
    c.add_argument("--merged")
    # f32 through a whole model in a different summation order: the golden model tests measure
    # ≤ 1e-12 NMSE; 1e-9 still fails any wrong key, scale or transposition (those give > 1e-3).
    c.add_argument("--max-nmse", type=float, default=1e-9)
    d = sub.add_parser("model")
    d.add_argument("--dir", required=True)
    d.add_argument("--expect", required=True)
    d.add_argument("--max-nmse", type=float, default=1e-9)
    m = sub.add_parser("make-fixture")
    m.add_argument("--out", default=DEFAULT_FIXTURE)
    args = p.parse_args()
    {"check": check, "model": model_check, "make-fixture": make_fixture}[args.cmd](args)


if __name__ == "__main__":
    main()
