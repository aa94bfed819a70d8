#version 450
// variant: HEAD_DIM=128 ATT_TILE=8
// variant: HEAD_DIM=5 ATT_TILE=32
// attention_back_stats: fused attention backward, first pass: each query row's delta and
//   log-sum-exp side by side for the two gradient passes.
//                                          CPU twin: CPUBackend.attentionBackward (delta)
//   delta_i = Σ_d dOut_i ⊙ out_i, written to `delta` (the caller's) and, with lse_i, to
//   stats: stats[r] = lse_r, stats[R + r] = delta_r for the R = B·NH·T rows — one binding for
//   both, so the gradient passes keep a binding free for the key lengths.
// Bindings: 0 dOut, 1 out, 2 lse (readonly), 3 delta, 4 stats (2·R).
// Push (after boff[8]): `AttentionPush` (batch, heads and tokens give R).
// Dispatch: one invocation per row, ATT_WG per workgroup, flat over a 2D grid.
#include "common/attention.glsl"

layout(set = 0, binding = 0) readonly buffer BufDOut { float dout[]; };
layout(set = 0, binding = 1) readonly buffer BufOut { float o[]; };
layout(set = 0, binding = 2) readonly buffer BufLse { float lse[]; };
layout(set = 0, binding = 3) buffer BufDelta { float delta[]; };
layout(set = 0, binding = 4) buffer BufStats { float stats[]; };

void main() {
  uint rows = pc.batch * pc.heads * pc.tokens;
  uint r = wg_linear_id() * ATT_WG + gl_LocalInvocationID.x;
  if (r >= rows) return;
  float d = 0.0;
  for (uint c = 0u; c < HEAD_DIM; c++) d += dout[pc.boff[0] + r * HEAD_DIM + c] * o[pc.boff[1] + r * HEAD_DIM + c];
  delta[pc.boff[3] + r] = d;
  stats[pc.boff[4] + r] = lse[pc.boff[2] + r];
  stats[pc.boff[4] + rows + r] = d;
}
