#version 450
// fake_quantize: out = dequantise(quantise(w)) block by block (QAT's fake quantisation).
//                      CPU twin: CPUBackend.fakeQuantize (FakeQuant.apply)
//
// Shapes: w and out (rows, cols) f32, row-major, contiguous; may be the same buffer range.
//   KIND 0 (int8 per row): a block is a row; scale = max(|min(w,0)|, max(w,0)) / 127.5 (2^-23
//     when 0); out = rint(clamp(w / scale, -128, 127)) · scale.
//   KIND 1 (llama.cpp Q4_0): blocks of 32; d = (first value of largest magnitude) / -8,
//     id = 1/d (0 when d = 0); q = min(15, trunc(w·id + 8.5)); out = (q - 8) · f16(d), f16(d)
//     rounded to nearest even (common/half.glsl).
//   Every operation rounds alone (precise), as on the CPU.
// Bindings: 0 w (readonly), 1 out.
// Push (after boff[8]): blocks, blockSize → Swift `FakeQuantizePush`.
// Dispatch: one invocation per block; x = ceil(blocks / WG) clamped to maxComputeWorkGroupCount.x,
//   grid-striding over the rest. Workgroup WG × 1 × 1 (specialization constant 0).
// Variant defines: KIND 0|1 (see above).
// variant: KIND=1
#ifndef KIND
#define KIND 0
#endif

#include "common/push.glsl"
#include "common/half.glsl"

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(set = 0, binding = 0) readonly buffer W { float w[]; };
layout(set = 0, binding = 1) buffer Out { float outv[]; };

PUSH_BEGIN
  uint blocks;
  uint blockSize;
PUSH_END

void main() {
  const uint stride = gl_NumWorkGroups.x * gl_WorkGroupSize.x;
  for (uint b = gl_GlobalInvocationID.x; b < pc.blocks; b += stride) {
    const uint base = b * pc.blockSize;
#if KIND == 0
    float lo = 0.0, hi = 0.0;
    for (uint j = 0u; j < pc.blockSize; j++) {
      float x = w[pc.boff[0] + base + j];
      lo = min(lo, x);
      hi = max(hi, x);
    }
    precise float scale = max(abs(lo), abs(hi)) / 127.5;
    if (scale == 0.0) scale = uintBitsToFloat(0x34000000u);
    for (uint j = 0u; j < pc.blockSize; j++) {
      precise float v = w[pc.boff[0] + base + j] / scale;
      float q = isnan(v) ? 0.0 : roundEven(clamp(v, -128.0, 127.0));
      precise float r = q * scale;
      outv[pc.boff[1] + base + j] = r;
    }
#else
    float amax = 0.0, extreme = 0.0;
    for (uint j = 0u; j < pc.blockSize; j++) {
      float x = w[pc.boff[0] + base + j];
      if (abs(x) > amax) { amax = abs(x); extreme = x; }
    }
    precise float d = extreme / -8.0;
    precise float id = d != 0.0 ? 1.0 / d : 0.0;
    float stored = f16_to_f32(f32_to_f16(d));
    for (uint j = 0u; j < pc.blockSize; j++) {
      precise float p = w[pc.boff[0] + base + j] * id;
      precise float t = p + 8.5;
      float q = isnan(t) ? 0.0 : min(15.0, max(0.0, trunc(t)));
      precise float r = (q - 8.0) * stored;
      outv[pc.boff[1] + base + j] = r;
    }
#endif
  }
}
