#!/usr/bin/env python3
"""PyTorch + PEFT eager CUDA training steps on the shapes `tools/bench-gpu` gives vkfinetune,
the side-by-side reference for the GPU table in the README (run on the device machine).

Also makes the random models both benchmarks load (transformers' init; speed does not depend
on the values): `--make-model DIR --shape smollm2|llama-1b --tokenizer FILE`.

Each case: fp32 LlamaForCausalLM on cuda; LoRA = PEFT r 16, alpha 32, dropout 0 on q,k,v,o,
gate,up,down with AdamW(lr 1e-4) on the adapters; full = every parameter, AdamW(lr 1e-5).
Random ids, labels = ids (transformers shifts them). One warm-up step, then `--steps` timed
steps with torch.cuda.synchronize() around the loop. Prints one JSON document.

`--gemm N`: cuBLAS through torch.matmul on N×N fp16 operands with fp32 accumulation
(allow_fp16_reduced_precision_reduction off), the reference for vkfinetune's cooperative-
matrix kernel on the same shape (`bench ops`, row "matmul f16·f16"); and fp32 (TF32 off).
"""
import argparse
import json
import shutil
import sys
import time

SHAPES = {
    # SmolLM2-135M-Instruct's config.
    "smollm2": dict(hidden_size=576, intermediate_size=1536, num_hidden_layers=30, num_attention_heads=9,
                    num_key_value_heads=3, vocab_size=49152, tie_word_embeddings=True, rope_theta=100000.0,
                    rms_norm_eps=1e-5, max_position_embeddings=8192),
    # Llama-3.2-1B's shape (no rope scaling: the cost is the same).
    "llama-1b": dict(hidden_size=2048, intermediate_size=8192, num_hidden_layers=16, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=True, rope_theta=500000.0,
                     rms_norm_eps=1e-5, max_position_embeddings=131072),
}


def make_model(directory, shape, tokenizer):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM
    config = LlamaConfig(**SHAPES[shape], hidden_act="silu", bos_token_id=1, eos_token_id=2)
    torch.manual_seed(0)
    with torch.device("cuda" if torch.cuda.is_available() else "cpu"):
        model = LlamaForCausalLM(config)
    model.to(torch.float32).save_pretrained(directory, safe_serialization=True, max_shard_size="20GB")
    shutil.copy(tokenizer, f"{directory}/tokenizer.json")


def run_case(directory, method, batch, seq, steps):
    import torch
    from transformers import LlamaForCausalLM
    torch.manual_seed(0)
    torch.cuda.reset_peak_memory_stats()
    model = LlamaForCausalLM.from_pretrained(directory, torch_dtype=torch.float32).cuda()
    model.config.use_cache = False
    if method == "lora":
        from peft import LoraConfig, get_peft_model
        model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, task_type="CAUSAL_LM",
                                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj",
                                                                 "gate_proj", "up_proj", "down_proj"]))
        lr = 1e-4
    else:
        lr = 1e-5
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr)
    vocab = model.config.vocab_size
    ids = torch.randint(0, vocab, (batch, seq), device="cuda")

    def step():
        out = model(input_ids=ids, labels=ids)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        return out.loss

    step()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(steps):
        loss = step()
    torch.cuda.synchronize()
    per_step = (time.perf_counter() - t0) / steps
    return dict(method=method, batch=batch, seq=seq, steps=steps, seconds_per_step=per_step,
                tokens_per_second=batch * seq / per_step, loss=float(loss),
                trainable_parameters=sum(p.numel() for p in params),
                device_memory_peak_bytes=torch.cuda.max_memory_allocated(),
                device=torch.cuda.get_device_name(0), torch=torch.__version__)


def gemm(n, seconds=1.0):
    """TFLOP/s of torch.matmul on N×N operands, fp16 (fp32 accumulate) and fp32 (no TF32)."""
    import torch
    torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False
    torch.backends.cuda.matmul.allow_tf32 = False
    out = {"n": n, "device": torch.cuda.get_device_name(0)}
    for name, dtype in [("fp16", torch.float16), ("fp32", torch.float32)]:
        a = torch.rand(n, n, device="cuda", dtype=dtype) * 2 - 1
        b = torch.rand(n, n, device="cuda", dtype=dtype) * 2 - 1
        for _ in range(3):
            torch.matmul(a, b)
        torch.cuda.synchronize()
        calls, t0 = 0, time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            for _ in range(10):
                torch.matmul(a, b)
            calls += 10
            torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / calls
        out[name + "_tflops"] = 2 * n ** 3 / dt / 1e12
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--make-model", metavar="DIR")
    ap.add_argument("--shape", choices=sorted(SHAPES))
    ap.add_argument("--tokenizer")
    ap.add_argument("--model", metavar="DIR", help="benchmark this model directory")
    ap.add_argument("--method", choices=["lora", "full"])
    ap.add_argument("--batch", type=int)
    ap.add_argument("--seq", type=int)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--gemm", type=int, metavar="N", help="time torch.matmul on N×N fp16 and fp32")
    a = ap.parse_args()
    if a.gemm:
        print(json.dumps(gemm(a.gemm), indent=2))
        return
    if a.make_model:
        if not (a.shape and a.tokenizer):
            sys.exit("--make-model needs --shape and --tokenizer")
        make_model(a.make_model, a.shape, a.tokenizer)
        return
    if not (a.model and a.method and a.batch and a.seq):
        sys.exit("give --model, --method, --batch and --seq (or --make-model)")
    print(json.dumps(run_case(a.model, a.method, a.batch, a.seq, a.steps), indent=2))


if __name__ == "__main__":
    main()
