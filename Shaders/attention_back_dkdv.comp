#version 450
// variant: HEAD_DIM=128 ATT_TILE=8
// variant: HEAD_DIM=5 ATT_TILE=32
// attention_back_dkdv: fused attention backward, third pass: dk and dv.
//                                          CPU twin: CPUBackend.attentionBackward (dk, dv)
//   For key j of kv head g: dv_j = Σ_{h in g} Σ_{i ≥ j} p_ij dOut_i and
//   dk_j = Σ_{h in g} Σ_{i ≥ j} dS_ij q_i (i − j < window with one), with p and dS recomputed from lse and delta
//   (attention_back_stats wrote them side by side) as there. Each workgroup owns one key tile
//   of one kv head, so the sums over the group's query heads need no atomics.
// Bindings: 0 dOut, 1 q, 2 k, 3 v, 4 stats (lse then delta, readonly), 5 dk, 6 dv, 7 key
//   lengths (readonly, as attention_back_dq's binding 6).
// Push (after boff[8]): batch, heads, kv_heads, tokens, tiles, scale, window, softcap,
//   causal, use_key_lengths → Swift `AttentionPush`.
// Dispatch: one workgroup of ATT_WG invocations per (b·KVH + g, key tile).
#include "common/attention.glsl"
#include "common/attention_back.glsl"

layout(set = 0, binding = 0) readonly buffer BufDOut { float dout[]; };
layout(set = 0, binding = 1) readonly buffer BufQ { float q[]; };
layout(set = 0, binding = 2) readonly buffer BufK { float k[]; };
layout(set = 0, binding = 3) readonly buffer BufV { float v[]; };
layout(set = 0, binding = 4) readonly buffer BufStats { float stats[]; };
layout(set = 0, binding = 5) buffer BufDk { float dk[]; };
layout(set = 0, binding = 6) buffer BufDv { float dv[]; };
layout(set = 0, binding = 7) readonly buffer BufKeyLengths { int key_lengths[]; };

void main() {
  uint id = wg_linear_id();
  uint bkv = id / pc.tiles, kt = id % pc.tiles;
  if (bkv >= pc.batch * pc.kv_heads) return;  // uniform over the workgroup
  uint t = gl_LocalInvocationID.x;
  uint group = pc.heads / pc.kv_heads;
  uint b = bkv / pc.kv_heads, g = bkv % pc.kv_heads;
  uint k0 = kt * ATT_TILE;
  uint kvbase = bkv * pc.tokens * HEAD_DIM;
  ATT_SET_KEY_LIMIT(key_lengths, pc.boff[7], b)
  uint rows = pc.batch * pc.heads * pc.tokens;

  ATT_LOAD_TILE(ks, k, pc.boff[2] + kvbase, k0)
  ATT_LOAD_TILE(vs, v, pc.boff[3] + kvbase, k0)
  float acc_k[ATT_PER], acc_v[ATT_PER];
  for (uint u = 0u; u < ATT_PER; u++) { acc_k[u] = 0.0; acc_v[u] = 0.0; }

  for (uint member = 0u; member < group; member++) {
    uint bh = b * pc.heads + g * group + member;
    uint rowbase = bh * pc.tokens * HEAD_DIM;
    // Query tiles from the diagonal on (causal: earlier queries see none of these keys; every
    // tile otherwise) to the last one the window lets see them.
    for (uint qt = att_first_query_tile(kt); qt < att_end_query_tile(k0); qt++) {
      uint q0 = qt * ATT_TILE;
      ATT_LOAD_TILE(qs, q, pc.boff[1] + rowbase, q0)
      ATT_LOAD_TILE(dos, dout, pc.boff[0] + rowbase, q0)
      if (t < ATT_TILE) {
        uint i = q0 + t;
        row_lse[t] = i < pc.tokens ? stats[pc.boff[4] + bh * pc.tokens + i] : 0.0;
        row_delta[t] = i < pc.tokens ? stats[pc.boff[4] + rows + bh * pc.tokens + i] : 0.0;
      }
      memoryBarrierShared();
      barrier();
      att_tile_grads(q0, k0);
      memoryBarrierShared();
      barrier();
      for (uint u = 0u; u < ATT_PER; u++) {
        uint e = t + u * ATT_WG;
        if (e < ATT_TILE * HEAD_DIM) {
          uint c = e / HEAD_DIM, d = e % HEAD_DIM;  // key row c of this tile
          float sk = acc_k[u], sv = acc_v[u];
          for (uint r = 0u; r < ATT_TILE; r++) {
            sk += ds[r][c] * qs[r][d];
            sv += ps[r][c] * dos[r][d];
          }
          acc_k[u] = sk;
          acc_v[u] = sv;
        }
      }
      barrier();  // the next query tile overwrites qs, dos, ps and ds
    }
  }

  for (uint u = 0u; u < ATT_PER; u++) {
    uint e = t + u * ATT_WG;
    if (e < ATT_TILE * HEAD_DIM) {
      uint c = e / HEAD_DIM, d = e % HEAD_DIM;
      if (k0 + c < pc.tokens) {
        dk[pc.boff[5] + kvbase + (k0 + c) * HEAD_DIM + d] = acc_k[u];
        dv[pc.boff[6] + kvbase + (k0 + c) * HEAD_DIM + d] = acc_v[u];
      }
    }
  }
}
