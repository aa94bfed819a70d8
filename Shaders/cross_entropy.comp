#version 450
// variant: USE_SUBGROUP=1
// cross_entropy: fused softmax cross-entropy over logits rows.   CPU twin: CPUBackend.crossEntropy
//   For row i with target y = targets[i]:
//     lse = m + log Σ_j exp(x[i,j] − m),  m = max_j x[i,j]   (never overflows)
//     losses[i]     = (lse − x[i,y]) / N                          (0 when y == ignoreIndex)
//     dLogits[i, j] = (exp(x[i,j] − lse) − [j == y]) / N          (0 row when ignored)
//   With softcap > 0 (Gemma 2's final_logit_softcapping) x is first capped to
//   z = softcap·tanh(x / softcap) and dLogits is w.r.t. the uncapped x: the row above times
//   1 − (z / softcap)².
//   N = the normalizer pushed by the host, or (normFromBuffer = 1) the count of targets
//   ≠ ignoreIndex written by PASS 0 into normBuf[0]. When that count is 0 every row is
//   ignored, so everything is 0 and N is never divided by.
//   A target outside [0, vocab) that is not ignoreIndex (the CPU backend throws; checking
//   here would need a download) gives a NaN loss and a NaN dLogits row.
// Shapes: logits, dLogits (n, vocab) f32; targets (n) i32; losses (n) f32; normBuf ≥ 1 f32.
//   dLogits may alias logits (each invocation reads its own elements before writing them).
//
// Passes (PASS define; Swift `CrossEntropyPass` mirrors the list):
//   PASS 0  count. Bindings: 0 targets (readonly), 1 normBuf. One workgroup; writes
//           normBuf[0] = float(count) (exact below 2^24 rows).
//   PASS 1  loss.  Bindings: 0 logits, 1 targets, 2 normBuf (readonly; any f32 buffer when
//           normFromBuffer = 0), 3 losses, 4 dLogits (HAS_DLOGITS = 1 only).
//           One workgroup per row (2D grid), RED_WG invocations stride over the vocab.
// Push (after boff[8]): n, vocab, ignoreIndex, normalizer, normFromBuffer, softcap
//   → Swift `CrossEntropyPush`.
// variant: PASS=0
// variant: PASS=1 HAS_DLOGITS=1
#ifndef PASS
#define PASS 1
#endif
#ifndef HAS_DLOGITS
#define HAS_DLOGITS 0
#endif
#include "common/push.glsl"
#include "common/grid.glsl"
#include "common/reduce.glsl"
#include "common/tanh.glsl"

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

PUSH_BEGIN
  uint n;
  uint vocab;
  int ignoreIndex;
  float normalizer;
  uint normFromBuffer;
  float softcap;
PUSH_END

// A logit after soft-capping (itself when softcap is 0).
float capped(float x) { return pc.softcap > 0.0 ? softcapped(x, pc.softcap) : x; }

#if PASS == 0
layout(set = 0, binding = 0) readonly buffer BufTargets { int targets[]; };
layout(set = 0, binding = 1) buffer BufNorm { float norm_out[]; };

void main() {
  uint t = gl_LocalInvocationID.x;
  float c = 0.0;
  for (uint i = t; i < pc.n; i += RED_WG) {
    if (targets[pc.boff[0] + i] != pc.ignoreIndex) c += 1.0;
  }
  c = wg_reduce_sum(c);
  if (t == 0u) norm_out[pc.boff[1]] = c;
}

#else
layout(set = 0, binding = 0) readonly buffer BufLogits { float logits[]; };
layout(set = 0, binding = 1) readonly buffer BufTargets { int targets[]; };
layout(set = 0, binding = 2) readonly buffer BufNorm { float norm_in[]; };
layout(set = 0, binding = 3) buffer BufLosses { float losses[]; };
#if HAS_DLOGITS
layout(set = 0, binding = 4) buffer BufDLogits { float dlogits[]; };
#endif

void main() {
  uint row = wg_linear_id();
  if (row >= pc.n) return;  // uniform over the workgroup
  uint t = gl_LocalInvocationID.x;
  uint xb = pc.boff[0] + row * pc.vocab;
  int y = targets[pc.boff[1] + row];

  if (y == pc.ignoreIndex) {  // uniform
    if (t == 0u) losses[pc.boff[3] + row] = 0.0;
#if HAS_DLOGITS
    for (uint j = t; j < pc.vocab; j += RED_WG) dlogits[pc.boff[4] + row * pc.vocab + j] = 0.0;
#endif
    return;
  }
  float N = pc.normFromBuffer != 0u ? norm_in[pc.boff[2]] : pc.normalizer;
  bool valid = y >= 0 && uint(y) < pc.vocab;
  // Read before the reductions' barriers: dLogits may alias logits.
  float xy = valid ? capped(logits[xb + uint(y)]) : 0.0;

  float m = -3.402823466e38;
  for (uint j = t; j < pc.vocab; j += RED_WG) m = max(m, capped(logits[xb + j]));
  m = wg_reduce_max(m);
  float s = 0.0;
  for (uint j = t; j < pc.vocab; j += RED_WG) s += exp(capped(logits[xb + j]) - m);
  s = wg_reduce_sum(s);
  float lse = m + log(s);

  float nan = uintBitsToFloat(0x7FC00000u);
  if (t == 0u) {
    losses[pc.boff[3] + row] = valid ? (lse - xy) / N : nan;
  }
#if HAS_DLOGITS
  float invS = 1.0 / s;
  for (uint j = t; j < pc.vocab; j += RED_WG) {
    float z = capped(logits[xb + j]);
    float p = exp(z - m) * invS;
    float g = (p - (int(j) == y ? 1.0 : 0.0)) / N;
    if (pc.softcap > 0.0) g *= 1.0 - (z / pc.softcap) * (z / pc.softcap);
    dlogits[pc.boff[4] + row * pc.vocab + j] = valid ? g : nan;
  }
#endif
}
#endif
