#version 450
// grouped_matmul: one product per expert segment of rows.   CPU twin: CPUBackend.groupedMatmul
//   Segment x is rows offsets[x] ..< offsets[x + 1] (device data: the host never reads it).
//   TRANS_A 0:  c[seg x] = a[seg x] · op(b[x]) + beta·c[seg x]
//       a (m, k) rows of width lda = k; c (m, n); op(b[x]) = b[x]ᵀ with TRANS_B 1, b (E, n, k),
//       or b[x] with TRANS_B 0, b (E, k, n); b[x] starts at x·strideB. Rows from offsets[E]
//       on are never written; the walk over segments and row tiles is common/grouped_rows.glsl.
//       Host K slices (lavapipe's loop cap, Swift `matmulMaxK`): each dispatch sees a and b
//       as views starting at its first k, with k = the slice and beta = 1 after the first.
//   TRANS_A 1:  c[x] = a[seg x]ᵀ · b[seg x] + beta·c[x]    (the experts' weight gradients)
//       a (k, m) with lda = m; b (k, n) with ldb = n; c (E, m, n), c[x] at x·strideC; here k
//       is the rows R of a and b, bounding every segment. The reduction runs over the
//       segment's rows, data-dependent: each dispatch covers rows sliceFirst ..<
//       sliceFirst + sliceRows of every segment, the host dispatching ceil(R / sliceRows)
//       slices (the worst case, one segment of all R rows), beta = 1 after the first. The
//       first slice writes every c[x] (beta·c[x] for an empty segment); a later slice skips
//       the segments it does not reach.
//   beta = 0 never reads c. Sums run over k in order per output (common/matmul_tile.glsl).
// Bindings: 0 a, 1 b, 2 offsets (E + 1) i32 (readonly), 3 c (read when beta ≠ 0, written).
// Push (after boff[8]): m, n, k, lda, ldb, strideB, strideC, experts, sliceFirst, sliceRows,
//   beta → Swift `GroupedMatmulPush`.
// Dispatch: x = ceil(n / BN), y = ceil(m / BM), z = 1 (TRANS_A 0: m = R, the worst case, and
//   tiles past offsets[E] exit) or E (TRANS_A 1), each clamped to the device's
//   maxComputeWorkGroupCount; workgroups grid-stride over what does not fit. Workgroup
//   (BM/TM)·(BN/TN) invocations; tiles in specialization constants 3..7.
// Variant defines (Swift `GroupedMatmulVariant.defines` mirrors this list):
//   TRANS_A 0|1   weight-gradient form (b must then be TRANS_B 0)
//   TRANS_B 0|1   b[x] stored (n, k) instead of (k, n)
//   B_TYPE 0|1|2  TRANS_A 0: b stored f32, f16 or bf16 (frozen experts under mixed precision),
//                 bound as uint words and widened as it is staged (common/half.glsl)
// variant: TRANS_A=0 TRANS_B=1
// variant: TRANS_A=1 TRANS_B=0
// variant: TRANS_A=0 TRANS_B=1 B_TYPE=2
// variant: TRANS_A=0 TRANS_B=0 B_TYPE=1
#ifndef TRANS_A
#define TRANS_A 0
#endif
#ifndef TRANS_B
#define TRANS_B 0
#endif
#ifndef B_TYPE
#define B_TYPE 0
#endif

#include "common/push.glsl"
#include "common/half.glsl"

layout(set = 0, binding = 0) readonly buffer BufA { float a[]; };
#if B_TYPE == 0
layout(set = 0, binding = 1) readonly buffer BufB { float b[]; };
#else
layout(set = 0, binding = 1) readonly buffer BufB { uint b[]; };
#endif
layout(set = 0, binding = 3) buffer BufC { float c[]; };

PUSH_BEGIN
  uint m;
  uint n;
  uint k;
  uint lda;
  uint ldb;
  uint strideB;
  uint strideC;
  uint experts;
  uint sliceFirst;
  uint sliceRows;
  float beta;
PUSH_END

#define MM_A_K_FAST (1 - TRANS_A)
#define MM_B_K_FAST TRANS_B
#include "common/matmul_tile.glsl"
#define GROUPED_OFFSETS 2
#include "common/grouped_rows.glsl"

uint baseA, baseB, baseC;  // the current product's first element of op(A), op(B) and C

float mm_load_a(uint row, uint kk) {
#if TRANS_A
  return a[baseA + kk * pc.lda + row];
#else
  return a[baseA + row * pc.lda + kk];
#endif
}

float b_at(uint e) {
#if B_TYPE == 0
  return b[e];
#else
  return HALF_TO_F32(B_TYPE, half_bits(b[e >> 1], e));
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
#if !TRANS_A
  if (row < rowLo) return;
#endif
  uint i = baseC + row * pc.n + col;
  c[i] = pc.beta == 0.0 ? acc : acc + pc.beta * c[i];
}

// TRANS_A 0: expert x's product for rows row0 ..< rowHi (common/grouped_rows.glsl).
void grouped_segment(uint x, uint row0, uint rowHi) {
  const uint tilesN = (pc.n + BN - 1) / BN;
  baseB = (B_TYPE == 0 ? pc.boff[1] : 2u * pc.boff[1]) + x * pc.strideB;
  for (uint tx = gl_WorkGroupID.x; tx < tilesN; tx += gl_NumWorkGroups.x) {
    mm_zero();
    mm_accumulate(row0, tx * BN, rowHi, pc.n, pc.k);
    mm_store(row0, tx * BN, rowHi, pc.n);
  }
}

void main() {
#if TRANS_A
  const uint tilesN = (pc.n + BN - 1) / BN, tilesM = (pc.m + BM - 1) / BM;
  for (uint x = gl_WorkGroupID.z; x < pc.experts; x += gl_NumWorkGroups.z) {
    uint hi = segment_bound(x + 1u, pc.k), lo = min(segment_bound(x, pc.k), hi);
    uint segRows = hi - lo;
    if (pc.sliceFirst > 0u && pc.sliceFirst >= segRows) continue;  // uniform: nothing to add
    uint kLen = pc.sliceFirst < segRows ? min(segRows - pc.sliceFirst, pc.sliceRows) : 0u;
    baseA = pc.boff[0] + (lo + pc.sliceFirst) * pc.lda;
    baseB = pc.boff[1] + (lo + pc.sliceFirst) * pc.ldb;
    baseC = pc.boff[3] + x * pc.strideC;
    for (uint ty = gl_WorkGroupID.y; ty < tilesM; ty += gl_NumWorkGroups.y) {
      for (uint tx = gl_WorkGroupID.x; tx < tilesN; tx += gl_NumWorkGroups.x) {
        mm_zero();
        mm_accumulate(ty * BM, tx * BN, pc.m, pc.n, kLen);
        mm_store(ty * BM, tx * BN, pc.m, pc.n);
      }
    }
  }
#else
  baseA = pc.boff[0];
  baseC = pc.boff[3];
  grouped_rows(pc.experts, pc.m);
#endif
}
