#version 450
// matmul: C = alpha·op(A)·op(B) + beta·C, batched.          CPU twin: CPUBackend.matmul (cblas_sgemm)
//
// Shapes (per batch entry z): op(A) (m, k), op(B) (k, n), C (m, n), row-major; C is f32,
//   A and B f32, f16 or bf16 (A_TYPE / B_TYPE), accumulated in f32 whatever they hold.
//   A stored (m, k) with row length lda, or (k, m) when TRANS_A = 1;
//   B stored (k, n) with row length ldb, or (n, k) when TRANS_B = 1; C row length ldc = n.
//   Entry z starts at z·strideA / z·strideB / z·strideC elements (stride 0 = broadcast).
// beta = 0 never reads C (it may hold NaN garbage).
// Bindings: 0 A (readonly), 1 B (readonly), 2 C (read when beta != 0, written); a 16-bit
//   operand is bound as uint words (common/half.glsl), its elements counted from 2·boff.
// Push (after boff[8]): m, n, k, lda, ldb, ldc, strideA, strideB, strideC, batch, alpha, beta
//   → Swift `MatmulPush`.
// Dispatch: x = ceil(n / BN), y = ceil(m / BM), z = batch, each clamped to the device's
//   maxComputeWorkGroupCount; workgroups grid-stride over the tiles that do not fit.
//   Workgroup (BM/TM)·(BN/TN) × 1 × 1; tiles in specialization constants 3..7
//   (common/matmul_tile.glsl).
//
// Variant defines (the Swift `MatmulVariant` table mirrors this list):
//   TRANS_A 0|1   A stored (k, m) instead of (m, k)
//   TRANS_B 0|1   B stored (n, k) instead of (k, n)
//   A_TYPE, B_TYPE 0|1|2  f32, f16 or bf16 storage (converted by bit manipulation as it is
//                         staged: no float16 device feature needed)
// variant: TRANS_A=1 TRANS_B=0
// variant: TRANS_A=0 TRANS_B=1
// variant: TRANS_A=1 TRANS_B=1
// variant: TRANS_A=0 TRANS_B=1 B_TYPE=2
// variant: TRANS_A=0 TRANS_B=0 B_TYPE=1
// variant: TRANS_A=1 TRANS_B=0 A_TYPE=2 B_TYPE=1
// variant: TRANS_A=0 TRANS_B=1 A_TYPE=1 B_TYPE=2
#ifndef TRANS_A
#define TRANS_A 0
#endif
#ifndef TRANS_B
#define TRANS_B 0
#endif
#ifndef A_TYPE
#define A_TYPE 0
#endif
#ifndef B_TYPE
#define B_TYPE 0
#endif

#include "common/push.glsl"
#include "common/half.glsl"

#if A_TYPE == 0
layout(set = 0, binding = 0) readonly buffer BufA { float a[]; };
#else
layout(set = 0, binding = 0) readonly buffer BufA { uint a[]; };
#endif
#if B_TYPE == 0
layout(set = 0, binding = 1) readonly buffer BufB { float b[]; };
#else
layout(set = 0, binding = 1) readonly buffer BufB { uint b[]; };
#endif
layout(set = 0, binding = 2) buffer BufC { float c[]; };

PUSH_BEGIN
  uint m;
  uint n;
  uint k;
  uint lda;
  uint ldb;
  uint ldc;
  uint strideA;
  uint strideB;
  uint strideC;
  uint batch;
  float alpha;
  float beta;
PUSH_END

#define MM_A_K_FAST (1 - TRANS_A)
#define MM_B_K_FAST TRANS_B
#include "common/matmul_tile.glsl"

uint baseA, baseB, baseC;  // this batch entry's first element in each buffer

float a_at(uint e) {
#if A_TYPE == 0
  return a[e];
#else
  return HALF_TO_F32(A_TYPE, half_bits(a[e >> 1], e));
#endif
}

float b_at(uint e) {
#if B_TYPE == 0
  return b[e];
#else
  return HALF_TO_F32(B_TYPE, half_bits(b[e >> 1], e));
#endif
}

float mm_load_a(uint row, uint kk) {
#if TRANS_A
  return a_at(baseA + kk * pc.lda + row);
#else
  return a_at(baseA + row * pc.lda + kk);
#endif
}

float mm_load_b(uint kk, uint col) {
#if TRANS_B
  return b_at(baseB + col * pc.ldb + kk);
#else
  return b_at(baseB + kk * pc.ldb + col);
#endif
}

void mm_write(uint row, uint col, float acc) {
  uint i = baseC + row * pc.ldc + col;
  c[i] = pc.beta == 0.0 ? pc.alpha * acc : pc.alpha * acc + pc.beta * c[i];
}

void main() {
  const uint tilesN = (pc.n + BN - 1) / BN, tilesM = (pc.m + BM - 1) / BM;
  for (uint z = gl_WorkGroupID.z; z < pc.batch; z += gl_NumWorkGroups.z) {
    baseA = (A_TYPE == 0 ? pc.boff[0] : 2u * pc.boff[0]) + z * pc.strideA;
    baseB = (B_TYPE == 0 ? pc.boff[1] : 2u * pc.boff[1]) + z * pc.strideB;
    baseC = pc.boff[2] + z * pc.strideC;
    for (uint ty = gl_WorkGroupID.y; ty < tilesM; ty += gl_NumWorkGroups.y) {
      for (uint tx = gl_WorkGroupID.x; tx < tilesN; tx += gl_NumWorkGroups.x) {
        mm_zero();
        mm_accumulate(ty * BM, tx * BN, pc.m, pc.n, pc.k);
        mm_store(ty * BM, tx * BN, pc.m, pc.n);
      }
    }
  }
}
