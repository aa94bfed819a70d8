#version 450
// variant: HEAD_DIM=128 ATT_TILE=8
// variant: HEAD_DIM=5 ATT_TILE=32
// attention_back_dq: fused causal attention backward, first pass: delta and dq.
//                                          CPU twin: CPUBackend.attentionBackward (dq, delta)
//   delta_i = Σ_d dOut_i ⊙ out_i; for each visible key j (causal, within the window): p_ij = exp(scale·q_i·k_j − lse_i),
//   dS_ij = scale · p_ij · (dOut_i·v_j − delta_i), dq_i = Σ_j dS_ij k_j. The probabilities
//   are recomputed tile by tile from lse (no T×T buffer). attention_back_dkdv runs next and
//   reads delta.
// Bindings: 0 dOut, 1 q, 2 k, 3 v, 4 out, 5 lse (readonly), 6 delta, 7 dq.
// Push (after boff[8]): batch, heads, kv_heads, tokens, tiles, scale, window, softcap → Swift `AttentionPush`.
// Dispatch: one workgroup of ATT_WG invocations per (b·NH + h, query tile).
#include "common/attention.glsl"
#include "common/attention_back.glsl"

layout(set = 0, binding = 0) readonly buffer BufDOut { float dout[]; };
layout(set = 0, binding = 1) readonly buffer BufQ { float q[]; };
layout(set = 0, binding = 2) readonly buffer BufK { float k[]; };
layout(set = 0, binding = 3) readonly buffer BufV { float v[]; };
layout(set = 0, binding = 4) readonly buffer BufOut { float o[]; };
layout(set = 0, binding = 5) readonly buffer BufLse { float lse[]; };
layout(set = 0, binding = 6) buffer BufDelta { float delta[]; };
layout(set = 0, binding = 7) buffer BufDq { float dq[]; };

void main() {
  uint id = wg_linear_id();
  uint bh = id / pc.tiles, qt = id % pc.tiles;
  if (bh >= pc.batch * pc.heads) return;  // uniform over the workgroup
  uint t = gl_LocalInvocationID.x;
  uint group = pc.heads / pc.kv_heads;
  uint kv = (bh / pc.heads) * pc.kv_heads + (bh % pc.heads) / group;
  uint q0 = qt * ATT_TILE;
  uint rowbase = bh * pc.tokens * HEAD_DIM;
  uint kvbase = kv * pc.tokens * HEAD_DIM;

  ATT_LOAD_TILE(qs, q, pc.boff[1] + rowbase, q0)
  ATT_LOAD_TILE(dos, dout, pc.boff[0] + rowbase, q0)
  if (t < ATT_TILE) {
    uint i = q0 + t;
    float d = 0.0;
    if (i < pc.tokens) {
      for (uint c = 0u; c < HEAD_DIM; c++) d += dout[pc.boff[0] + rowbase + i * HEAD_DIM + c]
                                                * o[pc.boff[4] + rowbase + i * HEAD_DIM + c];
      delta[pc.boff[6] + bh * pc.tokens + i] = d;
    }
    row_delta[t] = d;
    row_lse[t] = i < pc.tokens ? lse[pc.boff[5] + bh * pc.tokens + i] : 0.0;
  }
  float acc[ATT_PER];
  for (uint u = 0u; u < ATT_PER; u++) acc[u] = 0.0;

  for (uint kt = att_first_key_tile(q0); kt <= qt; kt++) {
    uint k0 = kt * ATT_TILE;
    ATT_LOAD_TILE(ks, k, pc.boff[2] + kvbase, k0)
    ATT_LOAD_TILE(vs, v, pc.boff[3] + kvbase, k0)
    memoryBarrierShared();
    barrier();
    att_tile_grads(q0, k0);
    memoryBarrierShared();
    barrier();
    for (uint u = 0u; u < ATT_PER; u++) {
      uint e = t + u * ATT_WG;
      if (e < ATT_TILE * HEAD_DIM) {
        uint r = e / HEAD_DIM, d = e % HEAD_DIM;
        float s = acc[u];
        for (uint c = 0u; c < ATT_TILE; c++) s += ds[r][c] * ks[c][d];
        acc[u] = s;
      }
    }
    barrier();  // the next tile overwrites ks, vs and ds
  }

  for (uint u = 0u; u < ATT_PER; u++) {
    uint e = t + u * ATT_WG;
    if (e < ATT_TILE * HEAD_DIM) {
      uint r = e / HEAD_DIM, d = e % HEAD_DIM;
      if (q0 + r < pc.tokens) dq[pc.boff[7] + rowbase + (q0 + r) * HEAD_DIM + d] = acc[u];
    }
  }
}
