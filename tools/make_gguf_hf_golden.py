#!/usr/bin/env python3
"""Golden for exporting a Hugging Face llama directory as GGUF: exactly what llama.cpp's own
convert_hf_to_gguf.py writes (metadata and tensors) for two tiny HF llama directories that use
SmolLM2-135M-Instruct's real tokenizer, so a Swift "export HF dir → GGUF" can be checked in CI
without torch. Nothing of the converter is re-implemented here: it is run as a subprocess from the
llama.cpp tree vendored in llama-cpp-python's sdist (see make_gguf_golden.py), each output read
back with gguf-py's GGUFReader.

Inputs, built in a temporary folder as <tmp>/<variant>/ (the folder's own name matters, see
general.name below; the parent's does not: checked, same output from another parent):
  SmolLM2 = --smollm2 DIR (default ../shared/models/smollm2-135m-instruct beside the repo, else
  /work/shared/models/smollm2-135m-instruct): its config.json, tokenizer.json (vocab 49152,
  byte-level BPE, 17 added tokens ids 0-16, all special), tokenizer_config.json,
  chat_template.jinja. generation_config.json and README.md are NOT copied (the converter would
  turn them into general.* / sampling metadata).
  A. smollm_tied: config.json = SmolLM2's with hidden_size 64, num_hidden_layers 2,
     num_attention_heads 4, num_key_value_heads 2, intermediate_size 96, head_dim 16,
     max_position_embeddings 256; everything else kept (tie_word_embeddings true, vocab_size
     49152, rms_norm_eps 9.999999747378752e-06, bos 1 / eos 2 / pad 2 / unk 0, architectures
     ["LlamaForCausalLM"], model_type llama, torch_dtype bfloat16, and SmolLM2's file has
     "rope_theta": 100000.0, "rope_scaling": null, not a rope_parameters key; transformers 5's
     AutoConfig turns that into rope_parameters {rope_theta 100000, rope_type default}).
     tokenizer.json, tokenizer_config.json, chat_template.jinja: SmolLM2's, unchanged.
  B. llama3_untied: transformers-4-style config.json: A's but tie_word_embeddings false, no
     head_dim key, no rope_parameters key, "rope_theta": 500000.0, "rope_scaling": {"rope_type":
     "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
     "original_max_position_embeddings": 64}, max_position_embeddings 512, rms_norm_eps 1e-6.
     tokenizer.json: SmolLM2's unchanged. tokenizer_config.json: SmolLM2's with "bos_token" a dict
     {"__type": "AddedToken", "content": "<|endoftext|>", "lstrip": false, "normalized": false,
     "rstrip": false, "single_word": false, "special": true}, "add_prefix_space": false and
     "chat_template" = LLAMA3_CHAT_TEMPLATE (a ChatML-like template, no default system message);
     NO chat_template.jinja. Adaptation: the dict first had no "__type" key; the converter loads
     the tokenizer with transformers' AutoTokenizer, and transformers 5.25 then stops with
     "Special token bos_token has to be either str or AddedToken but got: <class 'dict'>"; with
     "__type": "AddedToken" (the form transformers 4 wrote, e.g. Llama 2's tokenizer_config.json)
     it loads. gguf-py's SpecialVocab reads the dict's "content" either way.
  Weights (both): the HF parameter names and shapes of LlamaForCausalLM(LlamaConfig(config))
  (checked against its state_dict(); lm_head.weight only when untied), sorted with sorted(); the
  k-th (0-based) name's element i (row-major over the HF shape) =
      float32((((i * 7919 + k * 104729 + 13) % 2001) - 1000) / 4096)
  (exact in f32 and in f16), saved with safetensors as model.safetensors, all F32.
Each directory is converted twice:
    PYTHONPATH=<llama.cpp>/gguf-py:<stub> python convert_hf_to_gguf.py <tmp>/<variant>
        --outtype f32|f16 --outfile <file>
(<stub> holds a one-line sentencepiece.py: the converter imports it but this tokenizer never
uses it; HF_HUB_OFFLINE=1.) Checks (the script stops on failure): FNV-1a 64 of b"a" is
af63dc4c8601ec8c; every HF weight is in the GGUF exactly once under its llama.cpp name, with ne =
the HF shape reversed; F32 data equal the weights and F16 data equal them rounded to f16, after
undoing the q/k row permutation (make_gguf_fixtures.reverse_permute with 4 resp. 2 heads; the
permuted data differ from the unpermuted); the only other tensor is rope_freqs.weight, for B
only; the token list has 49152 strings; general.file_type is 0 (f32) / 1 (f16); the alignment is
the default 32; the JSON's floats read back equal.

What the converter wrote (llama-cpp-python 0.3.36's llama.cpp, gguf-py 0.19.0, transformers
5.25.0 — the converter's hparams are AutoConfig.from_pretrained(dir).to_dict(), not the raw
config.json, and its vocabulary comes from AutoTokenizer, so the transformers version matters),
metadata in file order; f32 and f16 differ only in general.file_type and the tensor types:
  A. smollm_tied (29 keys)                    B. llama3_untied (30 keys): same except
  general.architecture       STRING "llama"
  general.type               STRING "model"
  general.name               STRING "Smollm_Tied"            "Llama3_Untied"
  general.size_label         STRING "3.2M"                    "6.4M"
  llama.block_count          UINT32 2
  llama.context_length       UINT32 256                       512
  llama.embedding_length     UINT32 64
  llama.feed_forward_length  UINT32 96
  llama.attention.head_count UINT32 4
  llama.attention.head_count_kv            UINT32 2
  llama.rope.freq_base       FLOAT32 100000.0                 500000.0
  llama.attention.layer_norm_rms_epsilon   FLOAT32 f32(1e-5)  f32(1e-6) = 9.999999974752427e-07
  llama.attention.key_length   UINT32 16                      16 (present although B's
  llama.attention.value_length UINT32 16                      config.json has no head_dim:
                                                              transformers' to_dict() adds
                                                              head_dim = hidden/heads = 16)
  general.file_type          UINT32 0 (f32) / 1 (f16)
  llama.vocab_size           UINT32 49152
  llama.rope.dimension_count UINT32 16   (head_dim, else hidden/heads)
  general.quantization_version UINT32 2
  —                                                           tokenizer.ggml.add_space_prefix
                                                              BOOL false (from
                                                              tokenizer_config add_prefix_space)
  tokenizer.ggml.model       STRING "gpt2"
  tokenizer.ggml.pre         STRING "smollm" (hash of AutoTokenizer's encoding of a check text)
  tokenizer.ggml.tokens      ARRAY STRING count 49152 ["<|endoftext|>", "<|im_start|>", "<|im_end|>", ...]
  tokenizer.ggml.token_type  ARRAY INT32 count 49152 [3, 3, 3, ...]: 3 (CONTROL) for ids 0-16
                             (the added tokens), 1 (NORMAL) for the other 49135
  tokenizer.ggml.merges      ARRAY STRING count 48900 ["Ġ t", "Ġ a", "i n", ...]
  tokenizer.ggml.bos_token_id     UINT32 1 (<|im_start|>)     0 (<|endoftext|>: tokenizer_config's
                                                              bos_token wins over config.json's
                                                              bos_token_id 1)
  tokenizer.ggml.eos_token_id     UINT32 2
  tokenizer.ggml.unknown_token_id UINT32 0
  tokenizer.ggml.padding_token_id UINT32 2
  tokenizer.chat_template    STRING chat_template.jinja's    tokenizer_config's chat_template
                             text, byte for byte
  tokenizer.ggml.add_bos_token BOOL false
No add_eos_token, add_sep_token (SmolLM2's post_processor is a TemplateProcessing with no
special tokens, and tokenizer_config has no add_*_token keys); the add_bos_token = false is not
from the tokenizer at all: LlamaModel.set_vocab writes it for every vocab_size == 49152 ("granite
small models"), last. No llama.rope.scaling.* keys for B: rope_type llama3 is "handled in
generate_extra_tensors", i.e. only the rope_freqs.weight tensor; no rope.scaling.type either. No
general.basename / finetune / organization / version / alignment, no sampling keys.
Naming: general.name, basename, finetune, size_label come from gguf-py's Metadata heuristics:
README.md model card (none here), config.json "_name_or_path" (none), then the model folder's own
name (get_model_id_components + id_to_title: "smollm_tied" → name "Smollm_Tied", nothing else;
a folder named "SmolLM2-135M-Instruct" instead gives name "SmolLM2 135M Instruct", finetune
"135m-Instruct", basename "SmolLM2", two more keys); size_label, when not parsed from a name, is
gguf.size_label of the parameter count of the tensors written (3,207,488 → "3.2M"; 6,353,216 →
"6.4M"). A Swift exporter need not reproduce these; the temporary folders are named after the
variants so they are stable.
Tensors, in file order: rope_freqs.weight first when present (generate_extra_tensors runs
before the model's tensors), then the HF tensors in Python-sorted HF name order (gguf-py's
SafetensorsLocal sorts a file's keys; "model.layers.10" would sort before "model.layers.2"),
renamed: [A: none | B: rope_freqs.weight F32 ne [8], output.weight (lm_head)], token_embd.weight,
then per layer blk.<i>.attn_norm, ffn_down, ffn_gate, ffn_up, ffn_norm, attn_k, attn_output,
attn_q, attn_v (.weight), then output_norm.weight. A has no output.weight (tied). With f16 every
2-D tensor is F16, the 1-D norms and rope_freqs stay F32.
rope_freqs.weight (B) = [1.0, 2.8886334896087646, 32.0 × 6]: for freq_j = 1/500000^(2j/16),
wavelen = 2π/freq_j; < 64/4 → 1; > 64/1 → 32; else 1/((1 − s)/32 + s), s = (64/wavelen − 1)/3.
The converter computes this in torch f32 step by step; numpy f32 step by step and f64 rounded to
f32 give the same bits. transformers' own llama3 inv_freq, divided into the unscaled one, gives
2.8886337280273438 for j = 1, 1 ulp above (printed, not stored).

Writes Tests/VKFPEFTTests/Fixtures/gguf/:
  hf_export/smollm_tied/config.json       (A's; its tokenizer files are SmolLM2's unchanged)
  hf_export/llama3_untied/config.json, hf_export/llama3_untied/tokenizer_config.json
      (B's; its tokenizer.json is SmolLM2's; it has no chat_template.jinja: do not copy one)
  hf_export_golden.json:
  {"generator": str,
   "converter": "llama-cpp-python 0.3.36 sdist llama.cpp / gguf-py 0.19.0",
   "weight_formula": the weight formula above as text,
   "variants": {"smollm_tied": {"f32": CONV, "f16": CONV}, "llama3_untied": {"f32": CONV, "f16": CONV}}}
  CONV = {"file_bytes": size of the .gguf, "file_fnv1a64": hex of the whole file,
          "tensor_data_offset": file offset of the tensor data section,
          "metadata": [ENTRY, ...] every key-value pair in file order (GGUFReader's GGUF.*
                      pseudo-fields, i.e. the header's version / counts, left out),
          "tensors": [TENSOR, ...] in file order (= the tensor-info order)}
  ENTRY = {"key", "type": GGUF value type name ("UINT32", "FLOAT32", "STRING", "BOOL", ...),
           "value": the value (FLOAT32 as float(np.float32(v)), an exact double; BOOL true/false)}
        | {"key", "type": "ARRAY", "element_type": e.g. "STRING", "INT32", "count",
           "fnv1a64": hex, "head": the first 3 elements (strings or numbers; for reading only)}
  TENSOR = {"name", "type": ggml type name ("F32", "F16"), "dims": ne order (fastest-varying
            first, as GGUF stores it: the HF shape reversed, e.g. token_embd [64, 49152]),
            "offset": byte offset within the tensor data section, "bytes": stored size,
            "fnv1a64": hex of the stored bytes, "values": (rope_freqs.weight only) its values as
            float(np.float32(x))}
  fnv1a64: FNV-1a 64 (offset basis 0xcbf29ce484222325, prime 0x100000001b3) as 16 lowercase hex
  digits, over: tensors, the raw bytes as stored; string arrays, each element's UTF-8 bytes
  followed by one 0x00 byte; numeric arrays, each element's little-endian bytes in its stored
  type (INT32: 4 bytes each, ...); files, every byte.

Run with the reference venv (torch, transformers 5.25, safetensors, numpy, gguf 0.19.0):
  $VKF_REF_VENV/bin/python tools/make_gguf_hf_golden.py [--llama-cpp DIR] [--smollm2 DIR]
      [--keep DIR (also copy the four .gguf files there)]
DIR holds llama.cpp (convert_hf_to_gguf.py, conversion/, gguf-py/); default $VKF_LLAMA_CPP, else
~/.cache/vkf-ref/llama.cpp; when missing it is unpacked there from the llama-cpp-python sdist
(make_gguf_golden.ensure_llama_cpp). About a minute on a CPU.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch
from safetensors.numpy import load_file, save_file

import gguf
from gguf import GGMLQuantizationType as T
from gguf import GGUFValueType as V

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, HERE)
from make_gguf_fixtures import reverse_permute  # noqa: E402
from make_gguf_golden import LLAMA_CPP_SDIST, ensure_llama_cpp  # noqa: E402

OUT = os.path.join(ROOT, "Tests", "VKFPEFTTests", "Fixtures", "gguf")
FIXTURE_DIR = os.path.join(OUT, "hf_export")
GOLDEN = os.path.join(OUT, "hf_export_golden.json")
DEFAULT_LLAMA_CPP = os.path.join(os.path.expanduser("~"), ".cache", "vkf-ref", "llama.cpp")
DEFAULT_SMOLLM2 = os.path.join(os.path.dirname(ROOT), "shared", "models", "smollm2-135m-instruct")
if not os.path.isdir(DEFAULT_SMOLLM2):
    DEFAULT_SMOLLM2 = "/work/shared/models/smollm2-135m-instruct"
OUTTYPES = ("f32", "f16")
F32 = np.float32

WEIGHT_FORMULA = ("names = sorted(HF parameter names); for the k-th name (0-based), element i "
                  "(row-major over the HF shape) = float32((((i * 7919 + k * 104729 + 13) % 2001) "
                  "- 1000) / 4096)")

SIZES = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "intermediate_size": 96}

# Variant B's chat template (in tokenizer_config.json, no chat_template.jinja): ChatML-like.
LLAMA3_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] | trim + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}")

GGUF_NAMES = {  # HF name (after model.layers.<i>.) -> GGUF name (after blk.<i>.)
    "input_layernorm.weight": "attn_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
}
GGUF_TOP = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight",
            "lm_head.weight": "output.weight"}


# ---------------------------------------------------------------- helpers

FNV_OFFSET, FNV_PRIME, MASK64 = 0xcbf29ce484222325, 0x100000001b3, (1 << 64) - 1


def fnv1a64(chunks):
    """FNV-1a 64 over the concatenation of the byte strings in chunks, as 16 lowercase hex digits."""
    h = FNV_OFFSET
    for chunk in chunks:
        for b in bytes(chunk):
            h = ((h ^ b) * FNV_PRIME) & MASK64
    return f"{h:016x}"


def check_fnv():
    assert fnv1a64([b""]) == "cbf29ce484222325"
    assert fnv1a64([b"a"]) == "af63dc4c8601ec8c"
    assert fnv1a64([b"foobar"]) == "85944171f73967e8"
    assert fnv1a64([b"foo", b"", b"bar"]) == fnv1a64([b"foobar"])


def weight_values(k, shape):
    i = np.arange(int(np.prod(shape)), dtype=np.int64)
    v = ((i * 7919 + k * 104729 + 13) % 2001 - 1000).astype(np.float64) / 4096
    out = v.astype(F32).reshape(shape)
    assert np.array_equal(out.astype(np.float64), v.reshape(shape))  # exact in f32
    assert np.array_equal(out.astype(np.float16).astype(F32), out)  # and in f16
    return out


def hf_weights(config):
    """{HF name: f32 array} for LlamaForCausalLM(config), tied lm_head left out (as save_pretrained)."""
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig.from_dict(config))
    shapes = {n: tuple(t.shape) for n, t in model.state_dict().items()}
    tied = config["tie_word_embeddings"]
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == tied
    if tied:
        assert set(model._tied_weights_keys) == {"lm_head.weight"}, model._tied_weights_keys
        del shapes["lm_head.weight"]
    expected = {"model.embed_tokens.weight", "model.norm.weight"} | {
        f"model.layers.{i}.{s}" for i in range(config["num_hidden_layers"]) for s in GGUF_NAMES}
    if not tied:
        expected.add("lm_head.weight")
    assert set(shapes) == expected, sorted(set(shapes) ^ expected)
    return {name: weight_values(k, shapes[name]) for k, name in enumerate(sorted(shapes))}


def gguf_name(hf):
    if hf in GGUF_TOP:
        return GGUF_TOP[hf]
    parts = hf.split(".")  # model.layers.<i>.<rest>
    assert parts[:2] == ["model", "layers"], hf
    return f"blk.{parts[2]}.{GGUF_NAMES['.'.join(parts[3:])]}"


# ---------------------------------------------------------------- the two HF directories

def smollm_tied_files(smollm):
    with open(os.path.join(smollm, "config.json")) as f:
        config = json.load(f)
    config.update(SIZES, head_dim=16, max_position_embeddings=256)
    # tokenizer.json, tokenizer_config.json, chat_template.jinja: SmolLM2's, unchanged.
    return config, {}, ["tokenizer.json", "tokenizer_config.json", "chat_template.jinja"]


def llama3_untied_files(smollm):
    with open(os.path.join(smollm, "config.json")) as f:
        config = json.load(f)
    config.update(SIZES, tie_word_embeddings=False, max_position_embeddings=512, rms_norm_eps=1e-6,
                  rope_theta=500000.0,
                  rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                "high_freq_factor": 4.0, "original_max_position_embeddings": 64})
    config.pop("head_dim", None)
    config.pop("rope_parameters", None)
    with open(os.path.join(smollm, "tokenizer_config.json")) as f:
        tok = json.load(f)
    # "__type": transformers 5 (the converter loads the tokenizer with AutoTokenizer) rejects a
    # special-token dict without it: "Special token bos_token has to be either str or AddedToken".
    tok["bos_token"] = {"__type": "AddedToken", "content": "<|endoftext|>", "lstrip": False, "normalized": False,
                        "rstrip": False, "single_word": False, "special": True}
    tok["add_prefix_space"] = False
    tok["chat_template"] = LLAMA3_CHAT_TEMPLATE
    return config, {"tokenizer_config.json": tok}, ["tokenizer.json"]


VARIANTS = {"smollm_tied": smollm_tied_files, "llama3_untied": llama3_untied_files}


def write_hf_dir(tmp, name, smollm):
    """<tmp>/<name>/ (the converter takes general.name etc. from the folder name) and the
    committed copy of the files that differ from SmolLM2's under hf_export/<name>/."""
    config, changed, copied = VARIANTS[name](smollm)
    hf = os.path.join(tmp, name)
    os.makedirs(hf)
    committed = os.path.join(FIXTURE_DIR, name)
    shutil.rmtree(committed, ignore_errors=True)
    os.makedirs(committed)
    for fname, doc in [("config.json", config)] + sorted(changed.items()):
        for d in (hf, committed):
            with open(os.path.join(d, fname), "w") as f:
                json.dump(doc, f, indent=2)
                f.write("\n")
    for fname in copied:
        shutil.copyfile(os.path.join(smollm, fname), os.path.join(hf, fname))
    weights = hf_weights(config)
    save_file(weights, os.path.join(hf, "model.safetensors"), metadata={"format": "pt"})
    back = load_file(os.path.join(hf, "model.safetensors"))
    assert set(back) == set(weights) and all(np.array_equal(back[n], w) for n, w in weights.items())
    return hf, config, weights


def convert(llama_cpp, stub, hf_dir, outtype, outfile):
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1",
               PYTHONPATH=os.pathsep.join([os.path.join(llama_cpp, "gguf-py"), stub]))
    env.pop("NO_LOCAL_GGUF", None)
    cmd = [sys.executable, os.path.join(llama_cpp, "convert_hf_to_gguf.py"), hf_dir,
           "--outtype", outtype, "--outfile", outfile]
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=llama_cpp)
    if r.returncode != 0:
        sys.stderr.write(r.stdout + r.stderr)
        raise SystemExit(f"convert_hf_to_gguf.py failed ({r.returncode}) for {hf_dir} {outtype}")
    return r.stdout + r.stderr


# ---------------------------------------------------------------- reading a GGUF back

NUMPY_LE = {V.UINT8: "<u1", V.INT8: "<i1", V.UINT16: "<u2", V.INT16: "<i2", V.UINT32: "<u4",
            V.INT32: "<i4", V.UINT64: "<u8", V.INT64: "<i8", V.FLOAT32: "<f4", V.FLOAT64: "<f8",
            V.BOOL: "<u1"}


def scalar(vtype, value):
    if vtype == V.FLOAT32:
        return float(F32(value))
    if vtype == V.FLOAT64:
        return float(value)
    if vtype == V.BOOL:
        return bool(value)
    if vtype == V.STRING:
        return str(value)
    return int(value)


def metadata_entries(reader):
    entries = []
    for key, field in reader.fields.items():
        if key.startswith("GGUF."):
            continue
        vtype = field.types[0]
        if vtype != V.ARRAY:
            entries.append({"key": key, "type": vtype.name, "value": scalar(vtype, field.contents())})
            continue
        assert len(field.types) == 2, (key, field.types)  # no nested arrays here
        etype = field.types[1]
        parts = [field.parts[i] for i in field.data]
        if etype == V.STRING:
            chunks = [bytes(p) + b"\x00" for p in parts]
            head = [bytes(p).decode("utf-8") for p in parts[:3]]
        else:
            chunks = [np.asarray(p).astype(NUMPY_LE[etype]).tobytes() for p in parts]
            head = [scalar(etype, np.asarray(p)[0]) for p in parts[:3]]
        entries.append({"key": key, "type": "ARRAY", "element_type": etype.name,
                        "count": len(parts), "fnv1a64": fnv1a64(chunks), "head": head})
    return entries


def tensor_entries(reader):
    entries = []
    for t in reader.tensors:
        raw = reader.data[t.data_offset:t.data_offset + t.n_bytes]
        assert len(raw) == t.n_bytes
        e = {"name": t.name, "type": t.tensor_type.name, "dims": [int(n) for n in t.shape],
             "offset": int(t.data_offset - reader.data_offset), "bytes": int(t.n_bytes),
             "fnv1a64": fnv1a64([raw.tobytes()])}
        if t.name == "rope_freqs.weight":
            assert t.tensor_type == T.F32
            e["values"] = [float(F32(x)) for x in np.asarray(t.data, dtype=F32).reshape(-1)]
        entries.append(e)
    return entries


def check_tensors(reader, config, weights, outtype):
    """Every HF weight is stored exactly (F32) or rounded to f16 (F16; 1-D norms stay F32), q/k
    rows in llama.cpp's rope order; the only other tensor is rope_freqs.weight (llama3 rope)."""
    tensors = {t.name: t for t in reader.tensors}
    assert len(tensors) == len(reader.tensors)
    heads = {"attn_q": config["num_attention_heads"], "attn_k": config["num_key_value_heads"]}
    seen = set()
    for hf, w in weights.items():
        name = gguf_name(hf)
        t = tensors[name]
        seen.add(name)
        assert [int(n) for n in t.shape] == list(w.shape[::-1]), (name, t.shape, w.shape)
        if outtype == "f32" or w.ndim == 1:
            assert t.tensor_type == T.F32, (name, t.tensor_type)
        else:
            assert t.tensor_type == T.F16, (name, t.tensor_type)
        data = np.asarray(t.data).reshape(w.shape).astype(F32)
        kind = name.split(".")[-2]
        if kind in heads:
            assert not np.array_equal(data, w), name  # the permutation does move rows
            data = reverse_permute(data, heads[kind])
        assert np.array_equal(data, w.astype(np.float16).astype(F32) if t.tensor_type == T.F16 else w), name
    extra = set(tensors) - seen
    llama3 = (config.get("rope_scaling") or {}).get("rope_type") == "llama3"
    assert extra == ({"rope_freqs.weight"} if llama3 else set()), extra
    return extra


def hf_rope_factors(config):
    """transformers' llama3 inv_freq divided into the unscaled one: the factors rope_freqs holds."""
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS
    cfg = LlamaConfig.from_dict(config)
    scaled, _ = ROPE_INIT_FUNCTIONS["llama3"](cfg, "cpu")
    head_dim = config["hidden_size"] // config["num_attention_heads"]
    base = config["rope_theta"]
    plain = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    return (plain / scaled).numpy().astype(F32)


def check_conversion(path, name, outtype, config, weights):
    reader = gguf.GGUFReader(path)
    meta = metadata_entries(reader)
    tens = tensor_entries(reader)
    by_key = {e["key"]: e for e in meta}
    assert len(by_key) == len(meta)
    tokens = by_key["tokenizer.ggml.tokens"]
    assert tokens["element_type"] == "STRING" and tokens["count"] == 49152, tokens
    assert by_key["general.architecture"]["value"] == "llama"
    ftype = {"f32": gguf.LlamaFileType.ALL_F32, "f16": gguf.LlamaFileType.MOSTLY_F16}[outtype]
    assert by_key["general.file_type"]["value"] == int(ftype)
    check_tensors(reader, config, weights, outtype)
    assert reader.alignment == 32 and "general.alignment" not in by_key
    with open(path, "rb") as f:
        whole = f.read()
    return {"file_bytes": len(whole), "file_fnv1a64": fnv1a64([whole]),
            "tensor_data_offset": int(reader.data_offset), "metadata": meta, "tensors": tens}


# ---------------------------------------------------------------- main

def describe(name, outtype, conv, log=print):
    log(f"\n{name} / {outtype}: {len(conv['metadata'])} keys, {len(conv['tensors'])} tensors")
    for e in conv["metadata"]:
        if e["type"] == "ARRAY":
            log(f"  {e['key']:44s} ARRAY[{e['element_type']}] count={e['count']} "
                f"head={e['head']!r} fnv={e['fnv1a64']}")
        else:
            v = e["value"]
            if isinstance(v, str) and len(v) > 80:
                v = v[:77] + "..."
            log(f"  {e['key']:44s} {e['type']:8s} {v!r}")
    for t in conv["tensors"]:
        log(f"  {t['name']:28s} {t['type']:4s} ne={t['dims']} fnv={t['fnv1a64']}"
            + (f" values={t['values']}" if "values" in t else ""))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--llama-cpp", default=os.environ.get("VKF_LLAMA_CPP", DEFAULT_LLAMA_CPP),
                    help="llama.cpp tree with convert_hf_to_gguf.py (fetched here if missing)")
    ap.add_argument("--smollm2", default=DEFAULT_SMOLLM2,
                    help="SmolLM2-135M-Instruct directory (tokenizer.json, tokenizer_config.json, "
                         "chat_template.jinja, config.json)")
    ap.add_argument("--keep", help="also copy the converted GGUF files into this folder")
    args = ap.parse_args()
    check_fnv()
    llama_cpp = ensure_llama_cpp(os.path.abspath(os.path.expanduser(args.llama_cpp)))
    assert os.path.isfile(os.path.join(llama_cpp, "convert_hf_to_gguf.py")), llama_cpp
    gguf_py_version = None
    with open(os.path.join(llama_cpp, "gguf-py", "pyproject.toml")) as f:
        for line in f:
            if line.startswith("version"):
                gguf_py_version = line.split("=")[1].strip().strip('"')
                break
    os.makedirs(FIXTURE_DIR, exist_ok=True)
    doc = {
        "generator": "tools/make_gguf_hf_golden.py (llama.cpp convert_hf_to_gguf.py)",
        "converter": f"{LLAMA_CPP_SDIST[0]} {LLAMA_CPP_SDIST[1]} sdist llama.cpp / "
                     f"gguf-py {gguf_py_version}",
        "weight_formula": WEIGHT_FORMULA,
        "variants": {},
    }
    with tempfile.TemporaryDirectory() as tmp:
        stub = os.path.join(tmp, "stub")
        os.makedirs(stub)
        with open(os.path.join(stub, "sentencepiece.py"), "w") as f:
            f.write("class SentencePieceProcessor:\n    pass\n")
        outdir = os.path.join(tmp, "out")
        os.makedirs(outdir)
        for name in VARIANTS:
            hf, config, weights = write_hf_dir(tmp, name, args.smollm2)
            doc["variants"][name] = {}
            for outtype in OUTTYPES:
                path = os.path.join(outdir, f"{name}.{outtype}.gguf")
                convert(llama_cpp, stub, hf, outtype, path)
                conv = check_conversion(path, name, outtype, config, weights)
                doc["variants"][name][outtype] = conv
                describe(name, outtype, conv)
                print(f"  ({conv['file_bytes']} bytes, fnv1a64 {conv['file_fnv1a64']})")
                if args.keep:
                    os.makedirs(args.keep, exist_ok=True)
                    shutil.copyfile(path, os.path.join(args.keep, os.path.basename(path)))
            rope = [t for t in doc["variants"][name]["f32"]["tensors"] if t["name"] == "rope_freqs.weight"]
            if rope:
                ours = np.array(rope[0]["values"], dtype=F32)
                ref = hf_rope_factors(config)
                ulps = np.abs(ours.view(np.int32).astype(np.int64) - ref.view(np.int32).astype(np.int64))
                print(f"  rope_freqs vs transformers' llama3 inv_freq ratio: {ref.tolist()} "
                      f"(max {int(ulps.max())} ulp)")
                assert np.allclose(ours, ref, rtol=1e-5, atol=0), (ours, ref)
    with open(GOLDEN, "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")
    with open(GOLDEN) as f:  # floats come back as the same f32 values
        back = json.load(f)
    for name, convs in doc["variants"].items():
        for outtype, conv in convs.items():
            for a, b in zip(conv["metadata"], back["variants"][name][outtype]["metadata"]):
                assert a == b, (a, b)
    print("\nwrote", GOLDEN, os.path.getsize(GOLDEN), "bytes")


if __name__ == "__main__":
    main()
