#version 450
// matmul: C = alpha·op(A)·op(B) + beta·C, batched.          CPU twin: CPUBackend.matmul (cblas_sgemm)
//
// Shapes (per batch entry z): op(A) (m, k), op(B) (k, n), C (m, n), all f32 row-major.
//   A stored (m, k) with row length lda, or (k, m) when TRANS_A = 1;
//   B stored (k, n) with row length ldb, or (n, k) when TRANS_B = 1; C row length ldc = n.
//   Entry z starts at z·strideA / z·strideB / z·strideC elements (stride 0 = broadcast).
// beta = 0 never reads C (it may hold NaN garbage).
// Bindings: 0 A (readonly), 1 B (readonly), 2 C (read when beta != 0, written).
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
//   Reserved for later: A_TYPE/B_TYPE float16_t (fp16 storage, needs storage16Bit),
//   COOPMAT 1 (KHR_cooperative_matrix tiles) — each as a new define here, chosen in Swift
//   from VulkanCapabilities; the default below stays the portable f32 path.
// variant: TRANS_A=1 TRANS_B=0
// variant: TRANS_A=0 TRANS_B=1
// variant: TRANS_A=1 TRANS_B=1
#ifndef TRANS_A
#define TRANS_A 0
#endif
#ifndef TRANS_B
#define TRANS_B 0
#endif

#include "common/push.glsl"

layout(set = 0, binding = 0) readonly buffer BufA { float a[]; };
layout(set = 0, binding = 1) readonly buffer BufB { float b[]; };
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

float mm_load_a(uint row, uint kk) {
#if TRANS_A
  return a[baseA + kk * pc.lda + row];
#else
  return a[baseA + row * pc.lda + kk];
#endif
}

float mm_load_b(uint kk, uint col) {
#if TRANS_B
  return b[baseB + col * pc.ldb + kk];
#else
  return b[baseB + kk * pc.ldb + col];
#endif
}

void mm_write(uint row, uint col, float acc) {
  uint i = baseC + row * pc.ldc + col;
  c[i] = pc.beta == 0.0 ? pc.alpha * acc : pc.alpha * acc + pc.beta * c[i];
}

void main() {
  const uint tilesN = (pc.n + BN - 1) / BN, tilesM = (pc.m + BM - 1) / BM;
  for (uint z = gl_WorkGroupID.z; z < pc.batch; z += gl_NumWorkGroups.z) {
    baseA = pc.boff[0] + z * pc.strideA;
    baseB = pc.boff[1] + z * pc.strideB;
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
