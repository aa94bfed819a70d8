#version 450
// variant: HEAD_DIM=128 ATT_TILE=8
// variant: HEAD_DIM=5 ATT_TILE=32
// attention: fused causal attention forward (flash-attention style, online softmax).
//                                                        CPU twin: CPUBackend.attention
//   q (B, NH, T, HS), k, v (B, KVH, T, HS) → out (B, NH, T, HS) = softmax(scale·q·kᵀ,
//   j ≤ i, and i − j < window when window > 0)·v and lse (B, NH, T) = m + log l, the row's
//   log-sum-exp, for the backward.
//   No T×T buffer: key tiles are visited in order, each row keeps its running max m, sum l
//   and output o, rescaled by exp(m_old − m_new) when the max grows.
// Bindings: 0 q, 1 k, 2 v (readonly), 3 out, 4 lse, 5 key lengths (B) i32 (readonly; any i32
//   buffer without them).
// Push (after boff[8]): batch, heads, kv_heads, tokens, tiles, scale, window, softcap,
//   causal, use_key_lengths → Swift `AttentionPush`.
// Dispatch: one workgroup of ATT_WG invocations per (b·NH + h, query tile), flat over a 2D grid.
#include "common/attention.glsl"

layout(set = 0, binding = 0) readonly buffer BufQ { float q[]; };
layout(set = 0, binding = 1) readonly buffer BufK { float k[]; };
layout(set = 0, binding = 2) readonly buffer BufV { float v[]; };
layout(set = 0, binding = 3) buffer BufOut { float o[]; };
layout(set = 0, binding = 4) buffer BufLse { float lse[]; };
layout(set = 0, binding = 5) readonly buffer BufKeyLengths { int key_lengths[]; };

shared float qs[ATT_TILE][HEAD_DIM];
shared float kvs[ATT_TILE][HEAD_DIM];
shared float ps[ATT_TILE][ATT_TILE];
shared float row_m[ATT_TILE], row_l[ATT_TILE], row_alpha[ATT_TILE];

void main() {
  uint id = wg_linear_id();
  uint bh = id / pc.tiles, qt = id % pc.tiles;
  if (bh >= pc.batch * pc.heads) return;  // uniform over the workgroup
  uint t = gl_LocalInvocationID.x;
  uint group = pc.heads / pc.kv_heads;
  uint kv = (bh / pc.heads) * pc.kv_heads + (bh % pc.heads) / group;
  uint q0 = qt * ATT_TILE;
  uint qbase = pc.boff[0] + bh * pc.tokens * HEAD_DIM;
  uint kbase = pc.boff[1] + kv * pc.tokens * HEAD_DIM;
  uint vbase = pc.boff[2] + kv * pc.tokens * HEAD_DIM;
  ATT_SET_KEY_LIMIT(key_lengths, pc.boff[5], bh / pc.heads)

  ATT_LOAD_TILE(qs, q, qbase, q0)
  if (t < ATT_TILE) { row_m[t] = ATT_NEG_BIG; row_l[t] = 0.0; }
  float acc[ATT_PER];
  for (uint u = 0u; u < ATT_PER; u++) acc[u] = 0.0;

  // Key tiles from the window's first (0 without one) to the diagonal (causal) or to the last
  // real key's.
  for (uint kt = att_first_key_tile(q0); kt < att_end_key_tile(qt); kt++) {
    uint k0 = kt * ATT_TILE;
    ATT_LOAD_TILE(kvs, k, kbase, k0)
    memoryBarrierShared();
    barrier();
    for (uint e = t; e < ATT_TILE * ATT_TILE; e += ATT_WG) {
      uint r = e / ATT_TILE, c = e % ATT_TILE;
      float s;
      ATT_DOT(qs, r, kvs, c, s)
      bool visible = att_visible(q0 + r, k0 + c);
      ps[r][c] = visible ? att_cap(pc.scale * s) : ATT_NEG_BIG;
    }
    memoryBarrierShared();
    barrier();
    if (t < ATT_TILE) {
      float m_old = row_m[t], m_new = m_old;
      for (uint c = 0u; c < ATT_TILE; c++) m_new = max(m_new, ps[t][c]);
      float sum = 0.0;
      for (uint c = 0u; c < ATT_TILE; c++) {
        float p = ps[t][c] > ATT_NEG_BIG ? exp(ps[t][c] - m_new) : 0.0;
        ps[t][c] = p;
        sum += p;
      }
      // A row past T sees nothing: m stays at the sentinel and alpha is 1.
      float alpha = m_old > ATT_NEG_BIG ? exp(m_old - m_new) : 1.0;
      row_l[t] = row_l[t] * alpha + sum;
      row_m[t] = m_new;
      row_alpha[t] = alpha;
    }
    ATT_LOAD_TILE(kvs, v, vbase, k0)  // keys are done: the tile now holds the values
    memoryBarrierShared();
    barrier();
    for (uint u = 0u; u < ATT_PER; u++) {
      uint e = t + u * ATT_WG;
      if (e < ATT_TILE * HEAD_DIM) {
        uint r = e / HEAD_DIM, d = e % HEAD_DIM;
        float s = acc[u] * row_alpha[r];
        for (uint c = 0u; c < ATT_TILE; c++) s += ps[r][c] * kvs[c][d];
        acc[u] = s;
      }
    }
    barrier();  // the next tile overwrites kvs and ps
  }

  uint obase = pc.boff[3] + bh * pc.tokens * HEAD_DIM;
  for (uint u = 0u; u < ATT_PER; u++) {
    uint e = t + u * ATT_WG;
    if (e < ATT_TILE * HEAD_DIM) {
      uint r = e / HEAD_DIM, d = e % HEAD_DIM;
      // A row that sees no key (l = 0) gets a zero output and lse.
      if (q0 + r < pc.tokens) o[obase + (q0 + r) * HEAD_DIM + d] = row_l[r] > 0.0 ? acc[u] / row_l[r] : 0.0;
    }
  }
  if (t < ATT_TILE && q0 + t < pc.tokens) {
    lse[pc.boff[4] + bh * pc.tokens + q0 + t] = row_l[t] > 0.0 ? row_m[t] + log(row_l[t]) : 0.0;
  }
}
