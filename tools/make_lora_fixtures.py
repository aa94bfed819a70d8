#!/usr/bin/env python3
"""Fixtures for Tests/VKFPEFTTests (LoRA/DoRA/QLoRA), from the reference PEFT and bitsandbytes.

Run with the reference venv:  /root/.cache/vkf-ref/venv/bin/python tools/make_lora_fixtures.py
Writes Tests/VKFPEFTTests/Fixtures/:
  dora_linear.safetensors   one peft DoRA Linear (with bias), f32, no dropout: inputs x, W, b, A, B, m,
                            upstream dy; outputs y, dx, grad.A, grad.B, grad.m, init_magnitude (the
                            magnitude peft initialises from W), scaling.
  qlora_nf4.safetensors     bitsandbytes quantize_4bit(nf4, blocksize 64, compress_statistics=True) of W:
                            dynamic_map (create_dynamic_map(signed=True)), absmax (the first-level absmax),
                            offset, nested_codes, nested_absmax, dequantized_absmax (what dequantize_4bit uses),
                            codes (NF4 indices, unpacked, as f32).
"""
import os
import torch
from safetensors.torch import save_file

torch.manual_seed(1234)
OUT = os.path.join(os.path.dirname(__file__), "..", "Tests", "VKFPEFTTests", "Fixtures")


def dora_linear():
    from peft import LoraConfig, get_peft_model
    n, fin, fout, r, alpha = 5, 24, 20, 4, 8.0

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = torch.nn.Linear(fin, fout, bias=True)

        def forward(self, x):
            return self.proj(x)

    model = get_peft_model(Net(), LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, use_dora=True,
                                             target_modules=["proj"]))
    layer = model.base_model.model.proj
    base = layer.base_layer
    init_m = layer.lora_magnitude_vector["default"].weight.detach().clone()
    with torch.no_grad():
        layer.lora_B["default"].weight.copy_(torch.randn(fout, r) * 0.2)
        layer.lora_magnitude_vector["default"].weight.mul_(1 + 0.1 * torch.randn(fout))
    layer.train()
    x = torch.randn(n, fin, requires_grad=True)
    y = layer(x)
    dy = torch.randn(n, fout)
    y.backward(dy)
    A = layer.lora_A["default"].weight
    B = layer.lora_B["default"].weight
    m = layer.lora_magnitude_vector["default"].weight
    t = {
        "x": x.detach(), "W": base.weight.detach(), "b": base.bias.detach(), "A": A.detach(), "B": B.detach(),
        "m": m.detach(), "dy": dy, "y": y.detach(), "dx": x.grad, "grad.A": A.grad, "grad.B": B.grad,
        "grad.m": m.grad, "init_magnitude": init_m, "scaling": torch.tensor([layer.scaling["default"]]),
    }
    save_file({k: v.contiguous().float() for k, v in t.items()}, os.path.join(OUT, "dora_linear.safetensors"))


def qlora_nf4():
    import bitsandbytes.functional as F
    rows, cols = 176, 400  # 1100 absmax blocks: five nested blocks of 256, the last one partial
    W = torch.randn(rows, cols) * 0.03
    W[7, 11] = -0.5  # a block whose absmax comes from a negative value
    W[100, :64] = 0.0  # an all-zero block
    packed, st = F.quantize_4bit(W, blocksize=64, compress_statistics=True, quant_type="nf4")
    _, absmax = torch.ops.bitsandbytes.quantize_4bit.default(W, 64, "nf4", torch.uint8)
    deq_absmax = F.dequantize_blockwise(st.absmax, st.state2) + st.offset
    p = packed.reshape(-1)
    codes = torch.stack([p >> 4, p & 0xF], dim=1).reshape(-1)
    t = {
        "W": W, "dynamic_map": F.create_dynamic_map(signed=True), "absmax": absmax,
        "offset": st.offset.reshape(1), "nested_codes": st.absmax.float(), "nested_absmax": st.state2.absmax,
        "nested_map": st.state2.code, "dequantized_absmax": deq_absmax.float(), "codes": codes.float(),
    }
    save_file({k: v.contiguous().float() for k, v in t.items()}, os.path.join(OUT, "qlora_nf4.safetensors"))


if __name__ == "__main__":
    dora_linear()
    qlora_nf4()
