#version 450
// lora_forward: y = x·Wᵀ + scale·xa·Bᵀ in one pass (the fused LoRA / QLoRA forward).
//          CPU twin: Backend.loraForward's default (linear, then matmul with alpha = scale)
//
// Shapes: x (m, k) with k = in features; W (n, k) with n = out features, dense (f32, or
//   f16 / bf16 with W_TYPE 1 / 2, as in matmul.comp) or NF4 (NF4_BASE = 1; packing as in
//   dequantize_nf4.comp); xa (m, r) = loraX·Aᵀ, computed before this dispatch by
//   matmul.comp; B (n, r); y (m, n). The rest f32; all row-major, contiguous.
//   The K loop runs over the k columns of x / W, then over the r columns of xa / B into the
//   same accumulators; xa is multiplied by scale as it is staged. y is only written.
// Bindings, dense base: 0 x, 1 xa, 2 W, 3 B (readonly), 4 y.
//           NF4 base:   0 x, 1 xa, 2 packed (uint words), 3 absmax f32 or codes, 4 B (readonly),
//                       5 y, 6 nested scales (NF4_DQ = 1 only; absmax as in dequantize_nf4.comp).
// Push (after boff[8]): m, n, k, r, blockSize, scale, nestedBlock, absmaxOffset (the NF4
//   fields unused by the dense variant) → Swift `LoRAForwardPush`.
// Dispatch: x = ceil(n / BN), y = ceil(m / BM), z = 1, clamped to maxComputeWorkGroupCount
//   with grid-stride loops; workgroup and tiles as in matmul.comp (common/matmul_tile.glsl).
// Variant defines: NF4_BASE 0|1 (dense or NF4 frozen weight); NF4_DQ 0|1 (with NF4_BASE = 1:
//   f32 or double-quantised absmax); W_TYPE 0|1|2 (dense base stored f32, f16 or bf16).
// variant: W_TYPE=1
// variant: W_TYPE=2
// variant: NF4_BASE=1
// variant: NF4_BASE=1 NF4_DQ=1
#ifndef NF4_BASE
#define NF4_BASE 0
#endif
#ifndef NF4_DQ
#define NF4_DQ 0
#endif
#ifndef W_TYPE
#define W_TYPE 0
#endif

#include "common/push.glsl"
#include "common/half.glsl"
#include "common/nf4.glsl"

layout(set = 0, binding = 0) readonly buffer BufX { float x[]; };
layout(set = 0, binding = 1) readonly buffer BufXA { float xa[]; };
#if NF4_BASE
layout(set = 0, binding = 2) readonly buffer Packed { uint packed[]; };
layout(set = 0, binding = 4) readonly buffer BufB { float lb[]; };
layout(set = 0, binding = 5) writeonly buffer BufY { float y[]; };
#define B_SLOT 4
#define Y_SLOT 5
#elif W_TYPE == 0
layout(set = 0, binding = 2) readonly buffer BufW { float w[]; };
layout(set = 0, binding = 3) readonly buffer BufB { float lb[]; };
layout(set = 0, binding = 4) writeonly buffer BufY { float y[]; };
#define B_SLOT 3
#define Y_SLOT 4
#else
layout(set = 0, binding = 2) readonly buffer BufW { uint w[]; };
layout(set = 0, binding = 3) readonly buffer BufB { float lb[]; };
layout(set = 0, binding = 4) writeonly buffer BufY { float y[]; };
#define B_SLOT 3
#define Y_SLOT 4
#endif

PUSH_BEGIN
  uint m;
  uint n;
  uint k;
  uint r;
  uint blockSize;
  float scale;
  uint nestedBlock;
  float absmaxOffset;
PUSH_END

#if NF4_BASE
NF4_ABSMAX(3, 6)
#endif

// Both phases read A and B k-contiguously: x, xa row-major; W (n, k) and B (n, r).
#define MM_A_K_FAST 1
#define MM_B_K_FAST 1
#include "common/matmul_tile.glsl"

bool loraPhase = false;  // false: x·Wᵀ, true: scale·xa·Bᵀ

float mm_load_a(uint row, uint kk) {
  return loraPhase ? pc.scale * xa[pc.boff[1] + row * pc.r + kk] : x[pc.boff[0] + row * pc.k + kk];
}

float base_weight(uint col, uint kk) {
#if NF4_BASE
  uint e = col * pc.k + kk;
  uint word = packed[pc.boff[2] + (e >> 3u)];
  return NF4_CODE[nf4_index(word, e & 7u)] * block_absmax(e / pc.blockSize);
#elif W_TYPE == 0
  return w[pc.boff[2] + col * pc.k + kk];
#else
  uint e = 2u * pc.boff[2] + col * pc.k + kk;
  return HALF_TO_F32(W_TYPE, half_bits(w[e >> 1], e));
#endif
}

float mm_load_b(uint kk, uint col) {
  return loraPhase ? lb[pc.boff[B_SLOT] + col * pc.r + kk] : base_weight(col, kk);
}

void mm_write(uint row, uint col, float acc) { y[pc.boff[Y_SLOT] + row * pc.n + col] = acc; }

void main() {
  const uint tilesN = (pc.n + BN - 1) / BN, tilesM = (pc.m + BM - 1) / BM;
  for (uint ty = gl_WorkGroupID.y; ty < tilesM; ty += gl_NumWorkGroups.y) {
    for (uint tx = gl_WorkGroupID.x; tx < tilesN; tx += gl_NumWorkGroups.x) {
      mm_zero();
      loraPhase = false;
      mm_accumulate(ty * BM, tx * BN, pc.m, pc.n, pc.k);
      loraPhase = true;
      mm_accumulate(ty * BM, tx * BN, pc.m, pc.n, pc.r);
      mm_store(ty * BM, tx * BN, pc.m, pc.n);
    }
  }
}
