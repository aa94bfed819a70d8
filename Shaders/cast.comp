#version 450
// cast: dst[k] = convert(src[k]) between f32, f16 and bf16, round to nearest even.
// SRC_TYPE / DST_TYPE: 0 = f32, 1 = f16, 2 = bf16 (the #define table is castDefines in
// Sources/VKFVulkan/MemoryOps.swift). 16-bit data is packed two per uint, element 2p in
// the low half of word p; 16-bit views start on a 4-byte boundary (the host checks).
// Conversions are done by bit manipulation, not packHalf2x16/unpackHalf2x16, because
// GLSL leaves their rounding and denormal handling to the implementation; these match
// Swift's Float16(Float) / Float(Float16) and BFloat16.fromFloat / toFloat exactly.
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

// f16 bits → f32, exact (denormals included).
float f16_to_f32(uint h) {
  uint sign = (h & 0x8000u) << 16;
  uint e = (h >> 10) & 0x1Fu;
  uint m = h & 0x3FFu;
  if (e == 0u) {
    float v = float(m) * exp2(-24.0);   // exact: m < 2^10
    return sign != 0u ? -v : v;
  }
  if (e == 31u) return uintBitsToFloat(sign | 0x7F800000u | (m << 13));
  return uintBitsToFloat(sign | ((e + 112u) << 23) | (m << 13));
}

// f32 → f16 bits, round to nearest even; overflow → inf, NaN → quiet NaN.
uint f32_to_f16(float v) {
  uint x = floatBitsToUint(v);
  uint sign = (x >> 16) & 0x8000u;
  uint ax = x & 0x7FFFFFFFu;
  if (ax > 0x7F800000u) return sign | 0x7E00u;
  if (ax >= 0x47800000u) return sign | 0x7C00u;        // ≥ 65536 (and inf)
  if (ax < 0x38800000u) {                               // below 2^-14: subnormal or 0
    if (ax < 0x33000000u) return sign;                  // < 2^-25 rounds to 0
    uint e = ax >> 23;
    uint m = (ax & 0x7FFFFFu) | 0x800000u;
    uint shift = 126u - e;                              // 14 … 24
    uint q = m >> shift;
    uint rem = m & ((1u << shift) - 1u);
    uint half_ = 1u << (shift - 1u);
    if (rem > half_ || (rem == half_ && (q & 1u) != 0u)) q += 1u;
    return sign | q;
  }
  uint h = (((ax >> 23) - 112u) << 10) | ((ax & 0x7FFFFFu) >> 13);
  uint rem = ax & 0x1FFFu;
  if (rem > 0x1000u || (rem == 0x1000u && (h & 1u) != 0u)) h += 1u;  // carry may reach inf
  return sign | h;
}

// f32 → bf16 bits, round to nearest even; NaN stays a quiet NaN (BFloat16.fromFloat).
uint f32_to_bf16(float v) {
  uint b = floatBitsToUint(v);
  if (isnan(v)) return ((b >> 16) | 0x40u) & 0xFFFFu;
  return ((b + 0x7FFFu + ((b >> 16) & 1u)) >> 16) & 0xFFFFu;
}

float load(uint k) {
#if SRC_TYPE == 0
  return uintBitsToFloat(s[pc.boff[0] + k]);
#else
  uint w = s[pc.boff[0] + (k >> 1)];
  uint h = (k & 1u) == 0u ? (w & 0xFFFFu) : (w >> 16);
#if SRC_TYPE == 1
  return f16_to_f32(h);
#else
  return uintBitsToFloat(h << 16);
#endif
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
