#version 450
// cast: dst[k] = convert(src[k]) between f32, f16 and bf16, round to nearest even.
// SRC_TYPE / DST_TYPE: 0 = f32, 1 = f16, 2 = bf16 (the #define table is castDefines in
// Sources/VKFVulkan/MemoryOps.swift). 16-bit data is packed two per uint, element 2p in
// the low half of word p; 16-bit views start on a 4-byte boundary (the host checks).
// Conversions by bit manipulation (common/half.glsl), matching Swift's exactly.
// Mirrors CPUBackend.cast.
// Bindings: 0 src (uint words, readonly), 1 dst (uint words, written).
// Push: n (elements).
// Dispatch: one invocation per element pair (2p, 2p+1); groups (x, y) with
//           x·y·256 ≥ ceil(n / 2). An odd last element of a 16-bit dst keeps the high
//           half of its word.
// variant: SRC_TYPE=0 DST_TYPE=1
// variant: SRC_TYPE=0 DST_TYPE=2
// variant: SRC_TYPE=1 DST_TYPE=0
// variant: SRC_TYPE=1 DST_TYPE=2
// variant: SRC_TYPE=2 DST_TYPE=0
// variant: SRC_TYPE=2 DST_TYPE=1
#include "common/push.glsl"
#include "common/grid.glsl"
#include "common/half.glsl"

#ifndef SRC_TYPE
#define SRC_TYPE 0
#endif
#ifndef DST_TYPE
#define DST_TYPE 1
#endif

layout(local_size_x_id = 0, local_size_y_id = 1, local_size_z_id = 2) in;

layout(set = 0, binding = 0) readonly buffer Src { uint s[]; };
layout(set = 0, binding = 1) buffer Dst { uint d[]; };

PUSH_BEGIN
  uint n;
PUSH_END

float load(uint k) {
#if SRC_TYPE == 0
  return uintBitsToFloat(s[pc.boff[0] + k]);
#else
  return HALF_TO_F32(SRC_TYPE, half_bits(s[pc.boff[0] + (k >> 1)], k));
#endif
}

uint to16(float v) {
#if DST_TYPE == 1
  return f32_to_f16(v);
#else
  return f32_to_bf16(v);
#endif
}

void main() {
  uint p = global_linear_id();
  uint k = 2u * p;
  if (k >= pc.n) return;
  bool pair = k + 1u < pc.n;
  float v0 = load(k);
  float v1 = pair ? load(k + 1u) : 0.0;
#if DST_TYPE == 0
  d[pc.boff[1] + k] = floatBitsToUint(v0);
  if (pair) d[pc.boff[1] + k + 1u] = floatBitsToUint(v1);
#else
  uint j = pc.boff[1] + p;
  uint lo = to16(v0);
  if (pair) {
    d[j] = lo | (to16(v1) << 16);
  } else {
    d[j] = (d[j] & 0xFFFF0000u) | lo;
  }
#endif
}
