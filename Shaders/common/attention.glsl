// Shared pieces of the fused attention kernels (attention.comp, attention_back_dq.comp,
// attention_back_dkdv.comp).
//
// Layout: q, out, dOut, dq (B, NH, T, HS) head-major; k, v, dk, dv (B, KVH, T, HS); lse and
// delta (B, NH, T). Query head h reads kv head h / G (G = NH / KVH, repeat_kv's order).
// Tiles are ATT_TILE query rows × ATT_TILE keys; a row i sees keys j ≤ i (pc.causal; every key
// j otherwise, for encoders), and with a sliding window (pc.window > 0: Mistral, Qwen2's upper
// layers) only j > i − window too; with key lengths (right padding) only j < the row's length. With
// pc.softcap > 0 (Gemma 2) every scaled score is capped (`att_cap`) before the softmax. The host picks
// ATT_TILE so the kernel's shared tiles fit maxComputeSharedMemorySize, and compiles one
// variant per HEAD_DIM. Workgroups have ATT_WG invocations (specialization constant 0 must
// equal it); invocation t owns tile elements t, t + ATT_WG, …
#include "common/push.glsl"
#include "common/grid.glsl"
#include "common/tanh.glsl"

#ifndef HEAD_DIM
#define HEAD_DIM 64  // the host always defines it; the default lets tools/check-shaders compile the file
#endif
#ifndef ATT_TILE
#define ATT_TILE 16
#endif
#define ATT_WG 64
// Elements of a (ATT_TILE, HEAD_DIM) tile each invocation owns.
#define ATT_PER ((ATT_TILE * HEAD_DIM + ATT_WG - 1) / ATT_WG)
#define ATT_NEG_BIG -3.402823466e38

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

PUSH_BEGIN
  uint batch;      // B
  uint heads;      // NH
  uint kv_heads;   // KVH
  uint tokens;     // T
  uint tiles;      // ceil(T / ATT_TILE)
  float scale;     // softmax scale (1/√HS)
  uint window;     // sliding window (keys i − window < j ≤ i), 0 = none
  float softcap;   // score soft-capping (Gemma 2), 0 = none
  uint causal;     // 1: keys j ≤ i (decoders); 0: every key (encoders)
  uint use_key_lengths;  // 1: batch row b has key_lengths[b] real keys (right padding)
PUSH_END

// The current batch row's real key count (T without key lengths); set once per workgroup
// by `att_set_key_limit` before any visibility test.
uint att_kl;

// Sets `att_kl` from the key-lengths binding `kl_buf` for batch row `b`.
#define ATT_SET_KEY_LIMIT(kl_buf, kl_off, b) \
  att_kl = pc.use_key_lengths != 0u ? min(uint(max(kl_buf[(kl_off) + (b)], 0)), pc.tokens) : pc.tokens;

// One past the last key tile any query of the tile at q0 sees.
uint att_end_key_tile(uint qt) {
  uint by_length = (att_kl + ATT_TILE - 1u) / ATT_TILE;
  return pc.causal != 0u ? min(qt + 1u, by_length) : by_length;
}

// A scaled score after soft-capping: softcap·tanh(s / softcap), s itself without a cap.
float att_cap(float s) { return pc.softcap > 0.0 ? softcapped(s, pc.softcap) : s; }

// Whether query i sees key j (both must lie before T, j before the row's key limit).
bool att_visible(uint i, uint j) {
  bool order = pc.causal == 0u || (j <= i && (pc.window == 0u || i - j < pc.window));
  return order && i < pc.tokens && j < att_kl;
}

// The first key tile any row of the query tile at q0 sees (0 without a window).
uint att_first_key_tile(uint q0) {
  return (pc.causal == 0u || pc.window == 0u || q0 + 1u <= pc.window) ? 0u : (q0 + 1u - pc.window) / ATT_TILE;
}

// The first query tile that sees any key of the key tile at kt (causal: the diagonal's).
uint att_first_query_tile(uint kt) { return pc.causal != 0u ? kt : 0u; }

// One past the last query tile that sees any key of the key tile at k0.
uint att_end_query_tile(uint k0) {
  if (pc.causal == 0u || pc.window == 0u) return pc.tiles;
  return min(pc.tiles, (k0 + ATT_TILE - 1u + pc.window - 1u) / ATT_TILE + 1u);
}

// Copies rows [row0, row0 + ATT_TILE) of a (T, HEAD_DIM) slab starting at word `base` of
// `src` into tile `dst`, zero past T. Every invocation must call it (no barrier inside).
#define ATT_LOAD_TILE(dst, src, base, row0)                                      \
  for (uint e_ = gl_LocalInvocationID.x; e_ < ATT_TILE * HEAD_DIM; e_ += ATT_WG) { \
    uint r_ = e_ / HEAD_DIM, c_ = e_ % HEAD_DIM;                                 \
    uint row_ = (row0) + r_;                                                     \
    dst[r_][c_] = row_ < pc.tokens ? src[(base) + row_ * HEAD_DIM + c_] : 0.0;   \
  }

// Σ_d a[ra][d] · b[rb][d] over two shared tiles.
#define ATT_DOT(a, ra, b, rb, result)                                            \
  {                                                                              \
    float s_ = 0.0;                                                              \
    for (uint d_ = 0u; d_ < HEAD_DIM; d_++) s_ += a[ra][d_] * b[rb][d_];         \
    result = s_;                                                                 \
  }
