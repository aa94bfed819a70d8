#version 450
// variant: HEAD_DIM=128 ATT_TILE=8
// variant: HEAD_DIM=5 ATT_TILE=32
// attention_back_dq: fused attention backward, second pass: dq.
//                                                 CPU twin: CPUBackend.attentionBackward (dq)
//   For each visible key j (causal or not, within the window and the row's key length):
//   p_ij = exp(cap(scale·q_i·k_j) − lse_i), dS_ij = scale · p_ij · (dOut_i·v_j − delta_i)
//   (· the cap's derivative), dq_i = Σ_j dS_ij k_j. The probabilities are recomputed tile by
//   tile from lse (no T×T buffer); lse and delta come side by side in attention_back_stats'
//   stats buffer. attention_back_dkdv runs next.
// Bindings: 0 dOut, 1 q, 2 k, 3 v, 4 stats (lse then delta, readonly), 5 dq, 6 key lengths
//   (B) i32 (readonly; any buffer without them).
// Push (after boff[8]): batch, heads, kv_heads, tokens, tiles, scale, window, softcap,
//   causal, use_key_lengths → Swift `AttentionPush`.
// Dispatch: one workgroup of ATT_WG invocations per (b·NH + h, query tile).
#include "common/attention.glsl"
#include "common/attention_back.glsl"

layout(set = 0, binding = 0) readonly buffer BufDOut { float dout[]; };
layout(set = 0, binding = 1) readonly buffer BufQ { float q[]; };
layout(set = 0, binding = 2) readonly buffer BufK { float k[]; };
layout(set = 0, binding = 3) readonly buffer BufV { float v[]; };
layout(set = 0, binding = 4) readonly buffer BufStats { float stats[]; };
layout(set = 0, binding = 5) buffer BufDq { float dq[]; };
layout(set = 0, binding = 6) readonly buffer BufKeyLengths { int key_lengths[]; };

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
  ATT_SET_KEY_LIMIT(key_lengths, pc.boff[6], bh / pc.heads)
  uint rows = pc.batch * pc.heads * pc.tokens;

  ATT_LOAD_TILE(qs, q, pc.boff[1] + rowbase, q0)
  ATT_LOAD_TILE(dos, dout, pc.boff[0] + rowbase, q0)
  if (t < ATT_TILE) {
    uint i = q0 + t;
    row_lse[t] = i < pc.tokens ? stats[pc.boff[4] + bh * pc.tokens + i] : 0.0;
    row_delta[t] = i < pc.tokens ? stats[pc.boff[4] + rows + bh * pc.tokens + i] : 0.0;
  }
  float acc[ATT_PER];
  for (uint u = 0u; u < ATT_PER; u++) acc[u] = 0.0;

  for (uint kt = att_first_key_tile(q0); kt < att_end_key_tile(qt); kt++) {
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
      if (q0 + r < pc.tokens) dq[pc.boff[5] + rowbase + (q0 + r) * HEAD_DIM + d] = acc[u];
    }
  }
}
