#version 450
// matmul_nf4: y = alpha·x·op(W) + beta·y with W NF4.
//                                CPU twin: CPUBackend.matmulNF4 (dequantise, then sgemm)
//
// Shapes: W (rows, cols) NF4 (see dequantize_nf4.comp for the packing), x (m, k), y (m, n),
//   both row-major and contiguous; y f32, x f32, f16 or bf16 (X_TYPE: 16-bit activations,
//   QLoRA's compute dtype, widened as the tile is staged; accumulation is f32).
//   TRANS_B = 1 (forward):          y (m, n) = x (m, k)·Wᵀ with W (n, k), cols = k.
//   TRANS_B = 0 (input gradient):   y (m, n) = x (m, k)·W  with W (k, n), cols = n.
//   W is dequantised while its tile is staged into shared memory (code · absmax, f32), so the
//   dense weight never exists in device memory. beta = 0 never reads y.
// Bindings: 0 x (readonly; uint words when 16-bit, elements from 2·boff), 1 packed (readonly, uint words), 2 absmax f32 or codes (readonly),
//   3 y, 4 nested scales (NF4_DQ = 1 only, readonly); absmax as in dequantize_nf4.comp.
// Push (after boff[8]): m, n, k, cols, blockSize, alpha, beta, nestedBlock, absmaxOffset
//   → Swift `MatmulNF4Push`.
// Dispatch: x = ceil(n / BN), y = ceil(m / BM), z = 1, clamped to maxComputeWorkGroupCount
//   with grid-stride loops; workgroup and tiles as in matmul.comp (common/matmul_tile.glsl).
// Variant defines: TRANS_B 0|1 (see above); NF4_DQ 0|1 (f32 or double-quantised absmax);
//   X_TYPE 0|1|2 (x stored f32, f16 or bf16; common/half.glsl).
// variant: TRANS_B=0
// variant: NF4_DQ=1
// variant: TRANS_B=0 NF4_DQ=1
// variant: X_TYPE=1
// variant: TRANS_B=0 NF4_DQ=1 X_TYPE=2
#ifndef TRANS_B
#define TRANS_B 1
#endif
#ifndef NF4_DQ
#define NF4_DQ 0
#endif
#ifndef X_TYPE
#define X_TYPE 0
#endif

#include "common/push.glsl"
#include "common/half.glsl"
#include "common/nf4.glsl"

#if X_TYPE == 0
layout(set = 0, binding = 0) readonly buffer BufX { float x[]; };
#else
layout(set = 0, binding = 0) readonly buffer BufX { uint x[]; };
#endif
layout(set = 0, binding = 1) readonly buffer Packed { uint packed[]; };
layout(set = 0, binding = 3) buffer BufY { float y[]; };

PUSH_BEGIN
  uint m;
  uint n;
  uint k;
  uint cols;
  uint blockSize;
  float alpha;
  float beta;
  uint nestedBlock;
  float absmaxOffset;
PUSH_END

NF4_ABSMAX(2, 4)

#define MM_A_K_FAST 1
#define MM_B_K_FAST TRANS_B
#include "common/matmul_tile.glsl"

float mm_load_a(uint row, uint kk) {
#if X_TYPE == 0
  return x[pc.boff[0] + row * pc.k + kk];
#else
  uint e = 2u * pc.boff[0] + row * pc.k + kk;
  return HALF_TO_F32(X_TYPE, half_bits(x[e >> 1], e));
#endif
}

// W[r, c] dequantised: element e = r·cols + c lives in packed word e/8.
float nf4_weight(uint r, uint c) {
  uint e = r * pc.cols + c;
  uint word = packed[pc.boff[1] + (e >> 3u)];
  return NF4_CODE[nf4_index(word, e & 7u)] * block_absmax(e / pc.blockSize);
}

float mm_load_b(uint kk, uint col) {
#if TRANS_B
  return nf4_weight(col, kk);
#else
  return nf4_weight(kk, col);
#endif
}

void mm_write(uint row, uint col, float acc) {
  uint i = pc.boff[3] + row * pc.n + col;
  y[i] = pc.beta == 0.0 ? pc.alpha * acc : pc.alpha * acc + pc.beta * y[i];
}

void main() {
  const uint tilesN = (pc.n + BN - 1) / BN, tilesM = (pc.m + BM - 1) / BM;
  for (uint ty = gl_WorkGroupID.y; ty < tilesM; ty += gl_NumWorkGroups.y) {
    for (uint tx = gl_WorkGroupID.x; tx < tilesN; tx += gl_NumWorkGroups.x) {
      mm_zero();
      mm_accumulate(ty * BM, tx * BN, pc.m, pc.n, pc.k);
      mm_store(ty * BM, tx * BN, pc.m, pc.n);
    }
  }
}
