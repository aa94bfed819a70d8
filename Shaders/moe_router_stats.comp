#version 450
// moe_router_stats: the load-balancing loss's sums for one layer, over the tokens t whose
//   mask m_t = tokenMask[t] ≠ 0 (m_t = 1 for all without a mask):
//     stats[x]       += Σ_t m_t·#{s : experts[t, s] == x}     (pairs routed to x)
//     stats[e + x]   += Σ_t m_t·probs[t, x]                    (router probability mass)
//     stats[2e]      += Σ_t m_t                                (tokens)
//                                                     CPU twin: CPUBackend.moeRouterStatistics
//   Deterministic two passes (no float atomics), in chunks of `chunk` tokens:
//   PASS 0  partial[c·(2e + 1) + j] = stat j over the tokens of chunk c (token order).
//   PASS 1  stats[j] += Σ_c partial[c·(2e + 1) + j] (chunk order).
//   Counts and token sums are exact (integers below 2^24); the probability sums round in
//   another order than the CPU's single running sum. A pick outside [0, e) (the CPU backend
//   throws) counts nowhere.
// Shapes: probs (n, e) f32; experts (n, k) i32; tokenMask (n) f32; stats (2e + 1) f32;
//   partial (chunks·(2e + 1)) f32 scratch.
// Bindings: PASS 0: 0 probs, 1 experts, 2 tokenMask (any f32 buffer when hasMask = 0), all
//   readonly; 3 partial. PASS 1: 0 partial (readonly), 1 stats (read and written).
// Push (after boff[8]): n, e, k, chunk, chunks, hasMask → Swift `MoERouterStatsPush`.
// Dispatch: PASS 0 one invocation per (chunk, stat), chunks·(2e + 1) in all (≤ chunk·k
//   iterations each); PASS 1 one per stat (chunks iterations); workgroups of spec constant
//   0 on a 2D grid (common/grid.glsl).
// variant: PASS=1
#ifndef PASS
#define PASS 0
#endif
#include "common/push.glsl"
#include "common/grid.glsl"

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

PUSH_BEGIN
  uint n;
  uint e;
  uint k;
  uint chunk;
  uint chunks;
  uint hasMask;
PUSH_END

#if PASS == 0
layout(set = 0, binding = 0) readonly buffer BufProbs { float probs[]; };
layout(set = 0, binding = 1) readonly buffer BufExperts { int experts[]; };
layout(set = 0, binding = 2) readonly buffer BufMask { float mask[]; };
layout(set = 0, binding = 3) buffer BufPartial { float partial[]; };

void main() {
  uint width = 2u * pc.e + 1u;
  uint g = global_linear_id();
  if (g >= pc.chunks * width) return;
  uint c = g / width, j = g - c * width;
  uint first = c * pc.chunk, last = min(first + pc.chunk, pc.n);
  float acc = 0.0;
  for (uint t = first; t < last; ++t) {
    float m = pc.hasMask != 0u ? mask[pc.boff[2] + t] : 1.0;
    if (m == 0.0) continue;
    if (j < pc.e) {
      for (uint s = 0u; s < pc.k; ++s) {
        if (experts[pc.boff[1] + t * pc.k + s] == int(j)) acc += m;
      }
    } else if (j < 2u * pc.e) {
      acc += m * probs[pc.boff[0] + t * pc.e + (j - pc.e)];
    } else {
      acc += m;
    }
  }
  partial[pc.boff[3] + g] = acc;
}

#else
layout(set = 0, binding = 0) readonly buffer BufPartial { float partial[]; };
layout(set = 0, binding = 1) buffer BufStats { float stats[]; };

void main() {
  uint width = 2u * pc.e + 1u;
  uint j = global_linear_id();
  if (j >= width) return;
  float acc = 0.0;
  for (uint c = 0u; c < pc.chunks; ++c) acc += partial[pc.boff[0] + c * width + j];
  stats[pc.boff[1] + j] += acc;
}
#endif
