#!/usr/bin/env python3
"""Golden fixtures for vkfinetune's BERT classifier (transformers' BertForSequenceClassification).

Writes into Tests/VKFModelTests/Fixtures/bert/:
  tiny.config.json            the config (num_labels 3, id2label), as save_pretrained writes it
  tiny.weights.safetensors    the state dict by transformers' names (bert.…, classifier.…)
  tiny.expected.safetensors   ids, token types, lengths, labels (i32), logits (B, L), loss (1) and
                              grad.<name> for every parameter after loss.backward()
  tiny_mlm.*                  the same encoder as BertForMaskedLM (tied decoder): targets (B, T)
                              with −100 but at 5 masked tokens, logits at those tokens (M, V),
                              loss and every gradient

The rows are right-padded (attention_mask = 1 for the first `lengths` tokens) and use both
token types; the model runs in eval() (no dropout), as vkfinetune trains it. Head size 64
(hidden 128, 2 heads) is SmolLM2's, so the Vulkan tests reuse already-compiled attention kernels.

Run with the reference venv:  $VKF_REF_VENV/bin/python tools/make_bert_fixtures.py
"""
import os

import torch
from safetensors.torch import save_file
from transformers import BertConfig, BertForMaskedLM, BertForSequenceClassification

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "Tests", "VKFModelTests", "Fixtures", "bert")
B, T = 3, 7


def main():
    torch.manual_seed(11)
    config = BertConfig(
        vocab_size=97, hidden_size=128, num_hidden_layers=2, num_attention_heads=2, intermediate_size=160,
        max_position_embeddings=16, type_vocab_size=2, hidden_act="gelu", layer_norm_eps=1e-12,
        num_labels=3, id2label={0: "negative", 1: "neutral", 2: "positive"},
        label2id={"negative": 0, "neutral": 1, "positive": 2}, attn_implementation="eager")
    model = BertForSequenceClassification(config).eval()
    # Larger-than-init weights so every nonlinearity (GELU's tail, tanh's saturation, the
    # LayerNorms) is exercised; still well inside f32.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name:
                p.add_(0.2 * torch.randn_like(p))
            else:
                p.normal_(0, 0.08 if p.dim() > 1 else 0.05)
    lengths = torch.tensor([7, 4, 2])
    ids = torch.randint(1, config.vocab_size, (B, T))
    ids[0, 0] = ids[1, 0] = ids[2, 0] = 2  # a [CLS]-like first token
    mask = (torch.arange(T)[None, :] < lengths[:, None]).long()
    ids = ids * mask  # pad id 0 after each row's length
    types = torch.zeros(B, T, dtype=torch.long)
    types[0, 4:] = 1
    types[1, 2:4] = 1
    labels = torch.tensor([2, 0, 1])
    out = model(input_ids=ids, attention_mask=mask, token_type_ids=types, labels=labels)
    out.loss.backward()
    tensors = {
        "ids": ids.to(torch.int32).contiguous(), "types": types.to(torch.int32).contiguous(),
        "lengths": lengths.to(torch.int32), "labels": labels.to(torch.int32),
        "logits": out.logits.detach().float().contiguous(), "loss": out.loss.detach().reshape(1).float(),
    }
    for name, p in model.named_parameters():
        tensors["grad." + name] = p.grad.detach().float().contiguous()
    os.makedirs(OUT, exist_ok=True)
    state = {k: v.detach().float().contiguous() for k, v in model.state_dict().items() if "position_ids" not in k}
    save_file(state, os.path.join(OUT, "tiny.weights.safetensors"))
    save_file(tensors, os.path.join(OUT, "tiny.expected.safetensors"))
    config.to_json_file(os.path.join(OUT, "tiny.config.json"))
    print("loss", out.loss.item(), "logits", out.logits.tolist())

    # Masked LM on the same encoder weights, with a head of its own.
    torch.manual_seed(12)
    mlm = BertForMaskedLM(config).eval()
    with torch.no_grad():
        encoder = {k: v for k, v in model.state_dict().items() if k.startswith("bert.") and "pooler" not in k}
        missing, unexpected = mlm.load_state_dict(encoder, strict=False)
        assert not unexpected, unexpected
        for name, p in mlm.named_parameters():
            if name.startswith("cls."):
                if "LayerNorm" in name:
                    p.add_(0.2 * torch.randn_like(p))
                else:
                    p.normal_(0, 0.08 if p.dim() > 1 else 0.05)
    targets = torch.full((B, T), -100, dtype=torch.long)
    for r, c in [(0, 1), (0, 5), (1, 2), (1, 3), (2, 1)]:  # real (unpadded) tokens
        targets[r, c] = ids[r, c]
    masked_ids = ids.clone()
    masked_ids[targets != -100] = 3  # the [MASK]-like id
    out = mlm(input_ids=masked_ids, attention_mask=mask, token_type_ids=types, labels=targets)
    out.loss.backward()
    picked = out.logits[targets != -100]  # (M, V) in row-major order
    tensors = {
        "ids": masked_ids.to(torch.int32).contiguous(), "types": types.to(torch.int32).contiguous(),
        "lengths": lengths.to(torch.int32), "targets": targets.to(torch.int32).contiguous(),
        "logits": picked.detach().float().contiguous(), "loss": out.loss.detach().reshape(1).float(),
    }
    for name, p in mlm.named_parameters():
        tensors["grad." + name] = p.grad.detach().float().contiguous()
    state = {k: v.detach().float().contiguous() for k, v in mlm.state_dict().items()
             if "position_ids" not in k and not k.startswith("cls.predictions.decoder")}
    save_file(state, os.path.join(OUT, "tiny_mlm.weights.safetensors"))
    save_file(tensors, os.path.join(OUT, "tiny_mlm.expected.safetensors"))
    print("mlm loss", out.loss.item(), "grads", sorted(n for n, _ in mlm.named_parameters() if not n.startswith("bert.encoder")))


if __name__ == "__main__":
    main()
