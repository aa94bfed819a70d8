#!/usr/bin/env python3
"""Writes a Hugging Face Llama directory with random bf16 weights of a chosen shape, for
memory and speed benchmarks of shapes no shipped model has (e.g. Llama-3's 128256-token
vocabulary on a small body). Needs only numpy. The tokenizer is copied from --tokenizer-from
(its ids must stay below --vocab).

  tools/make_synthetic_model.py OUT_DIR --vocab 128256 \
      --tokenizer-from ../shared/models/smollm2-135m-instruct

Defaults are SmolLM2-135M's body (hidden 576, 30 layers, 9/3 heads, MLP 1536, tied head).
The values are N(0, 0.02²) (norms 1), as transformers' initializer_range: the numbers a
benchmark computes are meaningless, only shapes, memory and time are."""
import argparse, json, os, shutil, struct
import numpy as np


def bf16_bytes(a):
    """float32 array → bfloat16 bytes (round to nearest even)."""
    u = a.astype(np.float32).view(np.uint32)
    rounded = (u + 0x7FFF + ((u >> 16) & 1)) >> 16
    return rounded.astype(np.uint16).tobytes()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out")
    p.add_argument("--vocab", type=int, default=128256)
    p.add_argument("--hidden", type=int, default=576)
    p.add_argument("--layers", type=int, default=30)
    p.add_argument("--heads", type=int, default=9)
    p.add_argument("--kv-heads", type=int, default=3)
    p.add_argument("--intermediate", type=int, default=1536)
    p.add_argument("--context", type=int, default=8192)
    p.add_argument("--untied", action="store_true", help="a separate lm_head.weight")
    p.add_argument("--tokenizer-from", required=True, help="a model directory holding tokenizer.json")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()

    hd = a.hidden // a.heads
    shapes = [("model.embed_tokens.weight", (a.vocab, a.hidden))]
    for i in range(a.layers):
        pre = f"model.layers.{i}."
        shapes += [(pre + "input_layernorm.weight", (a.hidden,)),
                   (pre + "self_attn.q_proj.weight", (a.heads * hd, a.hidden)),
                   (pre + "self_attn.k_proj.weight", (a.kv_heads * hd, a.hidden)),
                   (pre + "self_attn.v_proj.weight", (a.kv_heads * hd, a.hidden)),
                   (pre + "self_attn.o_proj.weight", (a.hidden, a.heads * hd)),
                   (pre + "post_attention_layernorm.weight", (a.hidden,)),
                   (pre + "mlp.gate_proj.weight", (a.intermediate, a.hidden)),
                   (pre + "mlp.up_proj.weight", (a.intermediate, a.hidden)),
                   (pre + "mlp.down_proj.weight", (a.hidden, a.intermediate))]
    shapes.append(("model.norm.weight", (a.hidden,)))
    if a.untied:
        shapes.append(("lm_head.weight", (a.vocab, a.hidden)))

    os.makedirs(a.out, exist_ok=True)
    rng = np.random.default_rng(a.seed)
    header, offset = {}, 0
    for name, shape in shapes:
        n = int(np.prod(shape)) * 2
        header[name] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + n]}
        offset += n
    head = json.dumps(header, separators=(",", ":")).encode()
    head += b" " * (-len(head) % 8)
    with open(os.path.join(a.out, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(head)))
        f.write(head)
        for name, shape in shapes:
            v = np.ones(shape, np.float32) if name.endswith("norm.weight") \
                else rng.standard_normal(shape, dtype=np.float32) * 0.02
            f.write(bf16_bytes(v))
    config = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama",
        "hidden_size": a.hidden, "num_hidden_layers": a.layers, "num_attention_heads": a.heads,
        "num_key_value_heads": a.kv_heads, "intermediate_size": a.intermediate, "vocab_size": a.vocab,
        "max_position_embeddings": a.context, "rms_norm_eps": 1e-5, "rope_theta": 500000.0,
        "tie_word_embeddings": not a.untied, "hidden_act": "silu", "torch_dtype": "bfloat16",
        "bos_token_id": 1, "eos_token_id": 2,
    }
    with open(os.path.join(a.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    shutil.copy(os.path.join(a.tokenizer_from, "tokenizer.json"), os.path.join(a.out, "tokenizer.json"))
    print(f"wrote {a.out}: vocab {a.vocab}, hidden {a.hidden}, {a.layers} layers, "
          f"{sum(int(np.prod(s)) for _, s in shapes) / 1e6:.1f}M parameters")


if __name__ == "__main__":
    main()
