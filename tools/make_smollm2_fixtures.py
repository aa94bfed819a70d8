"""Golden fixtures for the real-model tests (Tests/VKFModelTests/RealModel*Tests.swift,
LoadingTokenizerTests.swift): transformers' LlamaForCausalLM on the fp32 HF copy of the shared
SmolLM2-135M-Instruct Q4_1 GGUF (made by /work/shared/tools/gguf_to_hf.py, so both sides use
identically dequantised weights), plus tokenizer ids for a slice of the tokenizer corpus.

usage (with the reference venv from /work/shared/tools/ref-setup):
  eval "$(/work/shared/tools/ref-setup)"
  "$VKF_REF_VENV"/bin/python tools/make_smollm2_fixtures.py

Writes Tests/VKFModelTests/Fixtures/smollm2/:
  golden.json          per prompt: text (as rendered), ids, per-position argmax and top-5
                       logit values and indices; the corpus slice with the shared
                       tokenizer.json's ids and with llama.cpp's "smollm" pre-tokenizer
                       (individual digits first) ids
  last_logits.safetensors  f32 logits (V,) of each prompt's last position: "prompt<i>"
"""
import json, os, sys
os.environ.setdefault("HF_HUB_OFFLINE", "1")
import torch
from safetensors.torch import save_file
from tokenizers import Tokenizer
from transformers import AutoTokenizer, LlamaForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "Tests/VKFModelTests/Fixtures/smollm2")
MODEL = os.environ.get("VKF_REF_MODEL", "/root/.cache/vkf-ref/smollm2-135m-instruct-f32")
SHARED_TOKENIZER = os.path.join(ROOT, "../shared/models/smollm2-135m-instruct/tokenizer.json")
CORPUS = os.path.join(ROOT, "Tests/VKFTokenizerTests/Fixtures/tokenizers/corpus.json")
CORPUS_SLICE = 50

PLAIN = "The capital of France is Paris. The capital of Germany is"
CHAT = [{"role": "user", "content": "Write a haiku about the sea, please."}]
UNICODE = "Order #12345 costs $1,234.56 (10% off) — café, naïve, 東京, Ελληνικά, 🚀  2026-11-22:   42"


def corpus_slice(shared, llamacpp):
    """The first strings of the corpus, plus every one on which the two pre-tokenizers
    disagree, capped at CORPUS_SLICE."""
    corpus = json.load(open(CORPUS))
    differ = [s for s in corpus if shared.encode(s).ids != llamacpp.encode(s).ids]
    chosen = differ[:10] + [s for s in corpus if s not in differ][: CORPUS_SLICE - min(len(differ), 10)]
    return [{"text": s, "ids": shared.encode(s).ids, "llamacpp_ids": llamacpp.encode(s).ids} for s in chosen]


def main():
    torch.manual_seed(0)
    tok = AutoTokenizer.from_pretrained(MODEL)
    model = LlamaForCausalLM.from_pretrained(MODEL, dtype=torch.float32).eval()
    prompts = [
        {"name": "plain", "text": PLAIN},
        {"name": "chat", "messages": CHAT,
         "text": tok.apply_chat_template(CHAT, tokenize=False, add_generation_prompt=True)},
        {"name": "unicode", "text": UNICODE},
    ]
    tensors = {}
    for i, p in enumerate(prompts):
        ids = tok(p["text"], add_special_tokens=True)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0].float()  # (T, V)
        top = torch.topk(logits, 5, dim=-1)
        p.update(ids=ids, argmax=logits.argmax(-1).tolist(),
                 top5_indices=top.indices.tolist(), top5_values=top.values.tolist())
        tensors[f"prompt{i}"] = logits[-1].contiguous()

    shared_json = json.load(open(SHARED_TOKENIZER))
    shared = Tokenizer.from_str(json.dumps(shared_json))
    llamacpp_json = dict(shared_json)
    llamacpp_json["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True}, shared_json["pre_tokenizer"]]}
    llamacpp = Tokenizer.from_str(json.dumps(llamacpp_json))
    # The fixture ids above came from transformers; the corpus ids from the raw library must agree.
    assert all(shared.encode(p["text"]).ids == p["ids"] for p in prompts)

    os.makedirs(OUT, exist_ok=True)
    save_file(tensors, os.path.join(OUT, "last_logits.safetensors"))
    with open(os.path.join(OUT, "golden.json"), "w") as f:
        json.dump({"model": os.path.basename(MODEL), "torch": torch.__version__,
                   "prompts": prompts, "corpus": corpus_slice(shared, llamacpp)}, f, ensure_ascii=False)
    for p in prompts:
        print(p["name"], len(p["ids"]), "tokens; last argmax", p["argmax"][-1])
    print("wrote", OUT)


if __name__ == "__main__":
    sys.exit(main())
