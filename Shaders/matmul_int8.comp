#version 450
// matmul_int8: y = alpha·x·op(W) + beta·y with W int8 (post-training quantisation).
//                                CPU twin: CPUBackend.matmulInt8 (dequantise, then sgemm)
//
// Shapes: W (rows, cols) int8 (see dequantize_int8.comp for the layout), x (m, k), y (m, n),
//   both row-major and contiguous; y f32, x f32, f16 or bf16 (X_TYPE, widened as the tile is
//   staged; accumulation is f32).
//   TRANS_B = 1 (forward):          y (m, n) = x (m, k)·Wᵀ with W (n, k), cols = k.
//   TRANS_B = 0 (input gradient):   y (m, n) = x (m, k)·W  with W (k, n), cols = n.
//   W is dequantised while its tile is staged into shared memory ((q − zp)·scale, f32), so the
//   dense weight never exists in device memory. beta = 0 never reads y.
// Bindings: 0 x (readonly; uint words when 16-bit, elements from 2·boff), 1 q (readonly, uint
//   words), 2 scales (readonly), 3 y, 4 zero points (ZP = 1 only, readonly).
// Push (after boff[8]): m, n, k, cols, blockSize, alpha, beta → Swift `MatmulInt8Push`.
// Dispatch: x = ceil(n / BN), y = ceil(m / BM), z = 1, clamped to maxComputeWorkGroupCount
//   with grid-stride loops; workgroup and tiles as in matmul.comp (common/matmul_tile.glsl).
// Variant defines: TRANS_B 0|1 (see above); ZP 0|1 (symmetric or with zero points);
//   X_TYPE 0|1|2 (x stored f32, f16 or bf16; common/half.glsl).
// variant: TRANS_B=0
// variant: ZP=1
// variant: TRANS_B=0 ZP=1
// variant: X_TYPE=1
// variant: X_TYPE=2
// variant: TRANS_B=0 X_TYPE=1
// variant: TRANS_B=0 X_TYPE=2
#ifndef TRANS_B
#define TRANS_B 1
#endif
#ifndef ZP
#define ZP 0
#endif
#ifndef X_TYPE
#define X_TYPE 0
#endif

#include "common/push.glsl"
#include "common/half.glsl"
#include "common/int8.glsl"

#if X_TYPE == 0
layout(set = 0, binding = 0) readonly buffer BufX { float x[]; };
#else
layout(set = 0, binding = 0) readonly buffer BufX { uint x[]; };
#endif
layout(set = 0, binding = 1) readonly buffer Values { uint qv[]; };
layout(set = 0, binding = 3) buffer BufY { float y[]; };

PUSH_BEGIN
  uint m;
  uint n;
  uint k;
  uint cols;
  uint blockSize;
  float alpha;
  float beta;
PUSH_END

INT8_SCALES(2, 4)

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

// W[r, c] dequantised: element e = r·cols + c is byte e & 3 of word e/4.
float int8_weight(uint r, uint c) {
  uint e = r * pc.cols + c;
  uint word = qv[pc.boff[1] + (e >> 2u)];
  return int8_dequant(int8_at(word, e & 3u), e / pc.blockSize);
}

float mm_load_b(uint kk, uint col) {
#if TRANS_B
  return int8_weight(col, kk);
#else
  return int8_weight(kk, col);
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
