#!/usr/bin/env python3
"""GGUF fixtures of the mixture-of-experts decoders, written as llama.cpp's converter writes them.

For each tiny random model (Mixtral, Qwen3-MoE and Qwen2-MoE, every layer sparse) this writes, into
Tests/VKFModelTests/Fixtures/gguf/:
  <name>.f32.gguf              the model as `convert_hf_to_gguf.py --outtype f32` writes it
  <name>.q8_0.gguf             … and as `--outtype q8_0` writes it (norms, biases, the router
                               `ffn_gate_inp` and the shared-expert gate `ffn_gate_inp_shexp`
                               stay F32, as the converter keeps them)
  <name>.config.json           the config.json transformers saves (the test compares shapes)
  <name>.expected.safetensors  ids (i32, (B, T)); logits (B*T, V) of the transformers model;
                               logits_q8_0: the same model with every Q8_0-stored weight
                               replaced by its dequantised value, so the Q8_0 file has an exact
                               reference too

How the converter stores these models (llama.cpp as vendored by llama-cpp-python 0.3.36;
conversion/llama.py `LlamaModel`, conversion/qwen.py `Qwen2MoeModel` / `Qwen3MoeModel`,
conversion/base.py `TextModel.set_gguf_parameters` and `prepare_tensors`):
  - Mixtral: general.architecture "llama"; llama.expert_count (num_local_experts),
    llama.expert_used_count (num_experts_per_tok); the experts are llama.feed_forward_length
    wide; q/k rows permuted by `LlamaModel.permute` (llama.cpp's rope pairs adjacent elements).
  - Qwen3-MoE: "qwen3moe"; the same two counts plus qwen3moe.expert_feed_forward_length
    (moe_intermediate_size); feed_forward_length is the dense intermediate_size; rows not
    permuted (NEOX rope); per-head attn_q_norm / attn_k_norm. No key records norm_topk_prob,
    mlp_only_layers or decoder_sparse_step: llama.cpp always renormalises the top-k weights
    and makes every layer sparse, so the Qwen3-MoE model here has norm_topk_prob true and no
    dense layer (the golden qwen3_moe fixture has both, which a GGUF cannot express).
  - Qwen2-MoE: "qwen2moe" (conversion/qwen.py `Qwen2MoeModel`); the two counts,
    qwen2moe.expert_feed_forward_length (moe_intermediate_size) and
    qwen2moe.expert_shared_feed_forward_length (shared_expert_intermediate_size);
    feed_forward_length is the dense intermediate_size (unused: every layer sparse). No
    key_length / value_length: the config has no head_dim (llama.cpp takes hidden / heads, and
    its qwen2moe graph needs heads · head_dim = hidden, hence head_dim 8 here). Rows not
    permuted (NEOX rope). q/k/v biases as blk.N.attn_{q,k,v}.bias (F32). The shared expert:
    blk.N.ffn_{gate,up,down}_shexp.weight, plain 2-D (numpy (S, C), (S, C), (C, S)), and its
    gate blk.N.ffn_gate_inp_shexp.weight, numpy (1, C) = ne [C, 1], kept F32 like the router.
    llama.cpp's qwen2moe never renormalises the top-k weights (norm_w false), so this model has
    norm_topk_prob false, as Qwen2-MoE checkpoints do. The widths (hidden 32, experts 64, shared
    96, dense 128) are distinct, so no two of the stacks' or shared projections' ne agree, and
    multiples of 32, so every matrix but the F32 ones is Q8_0 in the Q8_0 file.
  - Per block: blk.N.ffn_gate_inp (router, numpy (E, C)), and the experts' projections
    stacked with torch.stack(dim=0): ffn_gate_exps / ffn_up_exps from w1 / w3 or gate_proj /
    up_proj, numpy (E, F, C) = ggml ne [C, F, E]; ffn_down_exps from w2 / down_proj, numpy
    (E, C, F) = ne [F, C, E].
The tokenizer section is a small SentencePiece ("llama") vocabulary of V tokens, so llama.cpp
and the Swift loader can open the files alone; the tests feed token ids, not text.

Routers are initialised wide and the seed advanced until each token's K-th and (K+1)-th
router logits differ by at least MIN_MARGIN in the f32 and the Q8_0 model, so the top-K choice
survives any summation order and llama.cpp's Q8_0 activation rounding.

Checked against llama.cpp (neither check is part of the test suite):
  - llama.cpp's own convert_hf_to_gguf.py (as vendored by llama-cpp-python 0.3.36), run on the
    same transformers checkpoints with --outtype f32 / q8_0, writes byte-identical tensors
    (names, types, ne, data) and the same metadata but for general.name / size_label / type
    and the tokenizer section (these models have no tokenizer files, so the check replaced
    the converter's vocabulary step). `--check-converter` runs this check; all six files pass.
  - llama.cpp (llama-cpp-python 0.3.36, CPU, f32 KV cache) loads all six files; its logits for
    both rows of ids, one sequence at a time, against this file's references (`--check-llama-cpp`):
      mixtral.f32   vs logits        max|diff| 6.6e-07  nmse 9.5e-14  argmax agrees 12/12
      qwen3moe.f32  vs logits        max|diff| 6.9e-07  nmse 1.1e-13  argmax agrees 12/12
      qwen2moe.f32  vs logits        max|diff| 7.2e-07  nmse 1.1e-13  argmax agrees 12/12
      mixtral.q8_0  vs logits_q8_0   max|diff| 2.2e-02  nmse 1.1e-04  argmax agrees 12/12
      qwen3moe.q8_0 vs logits_q8_0   max|diff| 2.5e-02  nmse 1.1e-04  argmax agrees 12/12
      qwen2moe.q8_0 vs logits_q8_0   max|diff| 3.4e-02  nmse 2.1e-04  argmax agrees 12/12
    (llama.cpp's CPU kernels round the activations to Q8_0 before a Q8_0 matmul, hence the
    Q8_0 rows' larger difference; with the default f16 KV cache the f32 rows give ~8e-04.)

Run with the reference venv:  /root/.cache/vkf-ref/venv/bin/python tools/make_moe_gguf_fixtures.py [--only NAME ...]
(--only writes just the named models; each model draws from its own seed, so the others' files are
the same either way.)
Check with llama.cpp:  <python with llama-cpp-python and numpy> tools/make_moe_gguf_fixtures.py --check-llama-cpp [--only NAME ...]
Check against llama.cpp's converter (after generating; the reference venv, and a llama.cpp source tree
with convert_hf_to_gguf.py, conversion/ and gguf-py/ in $LLAMA_CPP_SRC, default /tmp/llamacpp-src):
  /root/.cache/vkf-ref/venv/bin/python tools/make_moe_gguf_fixtures.py --check-converter [--only NAME ...]
runs the converter (its vocabulary step replaced: these models have no tokenizer files) on the
transformers checkpoint the generator saved in /tmp/vkf-moe-gguf-<name>, with --outtype f32 and q8_0,
and compares every tensor (name, type, ne, bytes) and every metadata key but general.name /
size_label / type and tokenizer.* with the fixture.
"""
import json
import os
import shutil
import struct
import sys

import numpy as np

if "--check-llama-cpp" not in sys.argv:  # generating needs the reference venv
    import torch
    import gguf
    from gguf import GGMLQuantizationType as QT
    from gguf.quants import quantize, dequantize
    from safetensors.torch import load_file, save_file
    from transformers import MixtralConfig, MixtralForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "VKFModelTests", "Fixtures", "gguf")
B, T = 2, 6
MIN_MARGIN = 2e-2

COMMON = dict(
    hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, head_dim=16,
    vocab_size=97, rms_norm_eps=1e-6, max_position_embeddings=64, hidden_act="silu",
    attn_implementation="eager", tie_word_embeddings=False, rope_theta=10000.0,
)

MODELS = {
    # Mixtral: 4 experts of width 32, top-2 (always renormalised).
    "mixtral": ("llama", "MixtralConfig", "MixtralForCausalLM",
                dict(intermediate_size=32, num_local_experts=4, num_experts_per_tok=2), 21),
    # Qwen3-MoE: q/k norm, 4 experts of width 32, top-3 renormalised, dense width 64 (unused).
    "qwen3moe": ("qwen3moe", "Qwen3MoeConfig", "Qwen3MoeForCausalLM",
                 dict(intermediate_size=64, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=3,
                      norm_topk_prob=True, mlp_only_layers=[], decoder_sparse_step=1), 22),
    # Qwen2-MoE: q/k/v biases, 4 experts of width 64, top-2 not renormalised, a shared expert of
    # width 96 behind a sigmoid gate, dense width 128 (unused); head_dim None: dropped from COMMON,
    # so the model takes hidden / heads = 8, as llama.cpp's qwen2moe requires.
    "qwen2moe": ("qwen2moe", "Qwen2MoeConfig", "Qwen2MoeForCausalLM",
                 dict(intermediate_size=128, moe_intermediate_size=64, shared_expert_intermediate_size=96,
                      num_experts=4, num_experts_per_tok=2, norm_topk_prob=False, mlp_only_layers=[],
                      decoder_sparse_step=1, head_dim=None), 23),
}


def permute(w, n_head, n_head_kv):
    """convert_hf_to_gguf.py LlamaModel.permute (q: n_head_kv = n_head; k: the kv heads)."""
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def vocabulary(n):
    """n SentencePiece tokens: <unk>, <s>, </s>, the newline byte, then distinct pieces."""
    tokens = ["<unk>", "<s>", "</s>", "<0x0A>"]
    letters = "abcdefghijklmnopqrstuvwxyz"
    pool = ["\u2581" + c for c in letters] + list(letters) + list("0123456789") + ["\u2581"]
    pool += [a + b for a in "etaoin" for b in "nrsthd"]
    tokens += pool[: n - len(tokens)]
    assert len(tokens) == n and len(set(tokens)) == n
    types = [2, 3, 3, 6] + [1] * (n - 4)  # unknown, control, control, byte, normal
    return tokens, types


def gguf_tensors(name, arch, cfg, state):
    """(GGUF name, HF-layout numpy array as the converter stores it) in checkpoint order."""
    block = "block_sparse_moe" if name == "mixtral" else "mlp"
    projections = {"w1": "ffn_gate_exps", "w3": "ffn_up_exps", "w2": "ffn_down_exps"} if name == "mixtral" \
        else {"gate_proj": "ffn_gate_exps", "up_proj": "ffn_up_exps", "down_proj": "ffn_down_exps"}
    per_block = {
        "input_layernorm.weight": "attn_norm.weight", "post_attention_layernorm.weight": "ffn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight", "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.v_proj.weight": "attn_v.weight", "self_attn.o_proj.weight": "attn_output.weight",
        "self_attn.q_norm.weight": "attn_q_norm.weight", "self_attn.k_norm.weight": "attn_k_norm.weight",
        f"{block}.gate.weight": "ffn_gate_inp.weight",
        "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias",
        "self_attn.v_proj.bias": "attn_v.bias",
        "mlp.shared_expert_gate.weight": "ffn_gate_inp_shexp.weight",
        "mlp.shared_expert.gate_proj.weight": "ffn_gate_shexp.weight",
        "mlp.shared_expert.up_proj.weight": "ffn_up_shexp.weight",
        "mlp.shared_expert.down_proj.weight": "ffn_down_shexp.weight",
    }
    out = [("token_embd.weight", state["model.embed_tokens.weight"]),
           ("output_norm.weight", state["model.norm.weight"]),
           ("output.weight", state["lm_head.weight"])]
    n_head, n_kv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    experts = cfg.get("num_local_experts") or cfg["num_experts"]
    for i in range(cfg["num_hidden_layers"]):
        prefix = f"model.layers.{i}."
        for hf, gg in per_block.items():
            if prefix + hf not in state:
                continue
            w = state[prefix + hf]
            if arch == "llama" and hf == "self_attn.q_proj.weight":
                w = permute(w, n_head, n_head)
            elif arch == "llama" and hf == "self_attn.k_proj.weight":
                w = permute(w, n_head, n_kv)
            out.append((f"blk.{i}.{gg}", w))
        for hf, gg in projections.items():
            stack = np.stack([state[f"{prefix}{block}.experts.{e}.{hf}.weight"] for e in range(experts)], axis=0)
            out.append((f"blk.{i}.{gg}.weight", stack))
    # Every checkpoint tensor is used once: E experts × 3 projections become 3 stacks per layer.
    layers = cfg["num_hidden_layers"]
    assert len(out) == len(state) - 3 * layers * (experts - 1), "a checkpoint tensor was not mapped"
    return out


def stored_type(gguf_name, array, qtype):
    """convert_hf_to_gguf.py prepare_tensors: 1-D tensors, norms and ffn_gate_inp stay F32."""
    if qtype == QT.F32 or array.ndim <= 1 or gguf_name.endswith("_norm.weight") or ".ffn_gate_inp." in gguf_name \
            or ".ffn_gate_inp_shexp." in gguf_name:
        return QT.F32
    return qtype


def write_gguf(path, name, arch, cfg, tensors, qtype):
    w = gguf.GGUFWriter(path, arch)
    w.add_name(f"vkf-tiny-{name}")
    w.add_block_count(cfg["num_hidden_layers"])
    w.add_context_length(cfg["max_position_embeddings"])
    w.add_embedding_length(cfg["hidden_size"])
    w.add_feed_forward_length(cfg["intermediate_size"])
    w.add_head_count(cfg["num_attention_heads"])
    w.add_head_count_kv(cfg["num_key_value_heads"])
    w.add_rope_freq_base(cfg["rope_parameters"]["rope_theta"])
    w.add_layer_norm_rms_eps(cfg["rms_norm_eps"])
    w.add_expert_count(cfg.get("num_local_experts") or cfg["num_experts"])
    w.add_expert_used_count(cfg["num_experts_per_tok"])
    if cfg.get("head_dim") is not None:  # TextModel.set_gguf_parameters writes them only then
        w.add_key_length(cfg["head_dim"])
        w.add_value_length(cfg["head_dim"])
    w.add_file_type(gguf.LlamaFileType.ALL_F32 if qtype == QT.F32 else gguf.LlamaFileType.MOSTLY_Q8_0)
    if arch == "llama":  # LlamaModel.set_gguf_parameters
        w.add_vocab_size(cfg["vocab_size"])
        w.add_rope_dimension_count(cfg["head_dim"])
    else:  # Qwen2MoeModel.set_gguf_parameters
        w.add_expert_feed_forward_length(cfg["moe_intermediate_size"])
        if cfg.get("shared_expert_intermediate_size") is not None:
            w.add_expert_shared_feed_forward_length(cfg["shared_expert_intermediate_size"])
    w.add_quantization_version(gguf.GGML_QUANT_VERSION)
    tokens, types = vocabulary(cfg["vocab_size"])
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([-float(i) for i in range(len(tokens))])
    w.add_token_types(types)
    w.add_unk_token_id(0)
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_add_bos_token(True)
    w.add_add_eos_token(False)
    for tname, array in tensors:
        array = np.ascontiguousarray(array, dtype=np.float32)
        t = stored_type(tname, array, qtype)
        if t == QT.F32:
            w.add_tensor(tname, array)
        else:
            w.add_tensor(tname, quantize(array, t), raw_dtype=t)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def round_trip_q8_0(state):
    """The checkpoint with every tensor the Q8_0 file quantises replaced by its dequantised
    value (row permutations commute with Q8_0, whose blocks lie within rows)."""
    out = {}
    for k, v in state.items():
        a = v.numpy()
        keep = a.ndim <= 1 or k.endswith("norm.weight") or k.endswith(".gate.weight") \
            or k.endswith(".shared_expert_gate.weight")
        out[k] = v if keep else torch.from_numpy(dequantize(quantize(a, QT.Q8_0), QT.Q8_0).reshape(a.shape).copy())
    return out


def router_margin(model, ids, k):
    out = model(input_ids=ids, output_router_logits=True)
    margin = min((r.float().sort(dim=-1, descending=True).values[:, k - 1]
                  - r.float().sort(dim=-1, descending=True).values[:, k]).min().item() for r in out.router_logits)
    return out.logits.reshape(B * T, -1).contiguous(), margin


def make_once(name, arch, config_name, model_name, extra, seed):
    import transformers
    config_cls, model_cls = getattr(transformers, config_name), getattr(transformers, model_name)
    torch.manual_seed(seed)
    cfg = config_cls(**{k: v for k, v in {**COMMON, **extra}.items() if v is not None})
    model = model_cls(cfg).float()
    with torch.no_grad():
        for pname, p in model.named_parameters():
            if pname.endswith("norm.weight"):
                p.copy_(1 + 0.2 * torch.randn_like(p))
            elif pname.endswith("mlp.gate.weight"):
                p.copy_(0.3 * torch.randn_like(p))
            elif pname.endswith("mlp.shared_expert_gate.weight"):
                p.copy_(0.3 * torch.randn_like(p))  # a gate that varies across tokens (hidden 32)
            else:
                p.copy_(0.1 * torch.randn_like(p))
    model.train(False)
    ids = torch.randint(3, cfg.vocab_size, (B, T), dtype=torch.int64)
    hf_dir = f"/tmp/vkf-moe-gguf-{name}"
    shutil.rmtree(hf_dir, ignore_errors=True)
    model.save_pretrained(hf_dir)
    state = load_file(os.path.join(hf_dir, "model.safetensors"))
    with open(os.path.join(hf_dir, "config.json")) as f:
        config = json.load(f)
    with torch.no_grad():
        logits, margin = router_margin(model, ids, cfg.num_experts_per_tok)
        q_dir = hf_dir + "-q8_0"
        shutil.rmtree(q_dir, ignore_errors=True)
        shutil.copytree(hf_dir, q_dir)
        save_file(round_trip_q8_0(state), os.path.join(q_dir, "model.safetensors"), metadata={"format": "pt"})
        q_model = model_cls.from_pretrained(q_dir, attn_implementation="eager").float().eval()
        q_logits, q_margin = router_margin(q_model, ids, cfg.num_experts_per_tok)
    if min(margin, q_margin) < MIN_MARGIN:
        return False
    tensors = gguf_tensors(name, arch, config, {k: v.numpy() for k, v in state.items()})
    for qtype in (QT.F32, QT.Q8_0):
        path = os.path.join(OUT, f"{name}.{qtype.name.lower()}.gguf")
        write_gguf(path, name, arch, config, tensors, qtype)
        print(f"wrote {path} ({os.path.getsize(path)} bytes)", file=sys.stderr)
    save_file({"ids": ids.to(torch.int32), "logits": logits, "logits_q8_0": q_logits},
              os.path.join(OUT, f"{name}.expected.safetensors"))
    with open(os.path.join(OUT, f"{name}.config.json"), "w") as f:
        json.dump(config, f, indent=1, sort_keys=True)
    print(f"{name}: seed {seed}, router margin {margin:.3g} (q8_0 {q_margin:.3g}), "
          f"|logits - logits_q8_0| max {(logits - q_logits).abs().max().item():.3g}", file=sys.stderr)
    return True


def read_safetensors(path):
    """name → numpy array of an F32 / I32 safetensors file (no torch needed)."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header, data = json.loads(f.read(n)), f.read()
    out = {}
    for k, v in header.items():
        if k != "__metadata__":
            a, b = v["data_offsets"]
            out[k] = np.frombuffer(data[a:b], dtype={"F32": np.float32, "I32": np.int32}[v["dtype"]]).reshape(v["shape"])
    return out


def selected():
    """The model names after --only (every model without it)."""
    only = sys.argv[sys.argv.index("--only") + 1:] if "--only" in sys.argv else list(MODELS)
    if not only or any(n not in MODELS for n in only):
        sys.exit(f"--only takes model names from {list(MODELS)}; got {only}")
    return only


# Runs llama.cpp's convert_hf_to_gguf.py with every model class's vocabulary step replaced by a
# placeholder SentencePiece list (the tokenizer section is not compared).
CONVERTER = r"""
import runpy, sys
src, hf_dir, outtype, outfile = sys.argv[1:5]
sys.path.insert(0, src)
sys.path.insert(1, src + "/gguf-py")
import conversion
def placeholder_vocab(self):
    n = self.hparams["vocab_size"]
    self.gguf_writer.add_tokenizer_model("llama")
    self.gguf_writer.add_token_list(["<unk>", "<s>", "</s>"] + [f"t{i}" for i in range(n - 3)])
get_model_class = conversion.get_model_class
def patched(*args, **kwargs):
    cls = get_model_class(*args, **kwargs)
    cls.set_vocab = placeholder_vocab
    return cls
conversion.get_model_class = patched
sys.argv = ["convert_hf_to_gguf.py", hf_dir, "--outtype", outtype, "--outfile", outfile]
runpy.run_path(src + "/convert_hf_to_gguf.py", run_name="__main__")
"""


def check_converter():
    """Converts each model's saved checkpoint with llama.cpp's converter and compares the result."""
    import subprocess
    import tempfile
    src = os.environ.get("LLAMA_CPP_SRC", "/tmp/llamacpp-src")
    ignored = ("general.name", "general.size_label", "general.type")
    failed = False
    with tempfile.TemporaryDirectory() as tmp:
        for name in selected():
            hf_dir = f"/tmp/vkf-moe-gguf-{name}"
            if not os.path.isdir(hf_dir):
                sys.exit(f"{hf_dir} is missing: generate {name} first")
            for qtype in ("f32", "q8_0"):
                converted = os.path.join(tmp, f"{name}.{qtype}.gguf")
                run = subprocess.run([sys.executable, "-c", CONVERTER, src, hf_dir, qtype, converted],
                                     capture_output=True, text=True)
                if run.returncode != 0:
                    sys.exit(f"the converter failed on {name} {qtype}:\n{run.stderr[-4000:]}")
                a = gguf.GGUFReader(converted)
                b = gguf.GGUFReader(os.path.join(OUT, f"{name}.{qtype}.gguf"))
                ta, tb = {t.name: t for t in a.tensors}, {t.name: t for t in b.tensors}
                bad = sorted(set(ta) ^ set(tb)) + [
                    k for k in set(ta) & set(tb)
                    if ta[k].tensor_type != tb[k].tensor_type or list(ta[k].shape) != list(tb[k].shape)
                    or not np.array_equal(np.asarray(ta[k].data).view(np.uint8), np.asarray(tb[k].data).view(np.uint8))]

                def fields(r):
                    return {k: f.contents() for k, f in r.fields.items()
                            if not k.startswith(("GGUF.", "tokenizer.")) and k not in ignored}
                fa, fb = fields(a), fields(b)
                meta = {k: (fa.get(k), fb.get(k)) for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k)}
                failed |= bool(bad or meta)
                print(f"{name}.{qtype}: {len(tb)} tensors, {len(fb)} metadata keys compared; "
                      f"differing tensors {bad or 'none'}; differing metadata {meta or 'none'}")
    if failed:
        sys.exit("the converter's files differ from the fixtures")


def check_llama_cpp():
    """Loads every fixture in llama.cpp (llama-cpp-python) and prints how its logits compare."""
    from llama_cpp import Llama
    for name in selected():
        expected = read_safetensors(os.path.join(OUT, f"{name}.expected.safetensors"))
        ids = expected["ids"]
        for qtype, key in (("f32", "logits"), ("q8_0", "logits_q8_0")):
            # type_k / type_v 0 = GGML_TYPE_F32: an f32 KV cache, so the f32 files compare exactly.
            llm = Llama(model_path=os.path.join(OUT, f"{name}.{qtype}.gguf"), n_ctx=64, n_batch=64,
                        logits_all=True, verbose=False, type_k=0, type_v=0)
            got = []
            for row in ids:
                llm.reset()
                llm.eval([int(t) for t in row])
                got.append(np.array(llm.scores[: len(row)], dtype=np.float32))
            got, ref = np.concatenate(got), expected[key].reshape(-1, expected[key].shape[-1])
            nmse = float(((got - ref) ** 2).sum() / (ref ** 2).sum())
            agree = int((got.argmax(-1) == ref.argmax(-1)).sum())
            print(f"{name}.{qtype} vs {key}: max|diff| {np.abs(got - ref).max():.2g}  nmse {nmse:.2g}  "
                  f"argmax agrees {agree}/{len(ref)}")
            del llm


if __name__ == "__main__":
    if "--check-llama-cpp" in sys.argv:
        check_llama_cpp()
        sys.exit(0)
    if "--check-converter" in sys.argv:
        check_converter()
        sys.exit(0)
    os.makedirs(OUT, exist_ok=True)
    torch.use_deterministic_algorithms(True)
    for name in selected():
        arch, c, m, extra, seed = MODELS[name]
        if not any(make_once(name, arch, c, m, extra, seed + 1000 * attempt) for attempt in range(100)):
            sys.exit(f"{name}: no seed gave a routing margin >= {MIN_MARGIN}")
