#version 450
// grouped_matmul_nf4: one product per expert segment of rows, the experts' matrices frozen
// as one NF4 weight.                                        CPU twin: CPUBackend.groupedMatmulNF4
//   W (E·r, cols) NF4 stacks the E experts (see dequantize_nf4.comp for the packing); W_x is
//   rows x·r ..< (x + 1)·r, global elements x·strideB ..< (x + 1)·strideB with strideB =
//   r·cols. Absmax blocks and double-quant groups count over the whole stack, so an element
//   is decoded from its global index (a block may straddle two experts).
//   Segment x is rows offsets[x] ..< offsets[x + 1] of a and c (device data: the host never
//   reads it); rows from offsets[E] on are never written (common/grouped_rows.glsl).
//   TRANS_B 1 (forward):         c (R, r)[seg x]    = a (R, cols)[seg x] · W_xᵀ + beta·c
//   TRANS_B 0 (input gradient):  c (R, cols)[seg x] = a (R, r)[seg x] · W_x + beta·c
//   So n = c's width, k = a's width (lda) and op(W_x)[kk, col] = W_x[col, kk] (TRANS_B 1) or
//   W_x[kk, col] (TRANS_B 0). W is dequantised as its tile is staged (code · absmax, f32):
//   the dense experts never exist in device memory.
//   Host K slices (lavapipe's loop cap, Swift `matmulMaxK`): dispatch i covers
//   kFirst ..< kFirst + k of the reduction, beta = 1 after the first. a and W are indexed
//   from kFirst in the shader (no views), so a slice may start at any k, mid-byte and
//   mid-block included. beta = 0 never reads c. Sums run over k in order per output
//   (common/matmul_tile.glsl).
// Bindings: 0 a f32, 1 packed (uint words), 2 absmax f32 or codes (NF4_DQ = 1), 3 offsets
//   (E + 1) i32, all readonly; 4 c (read when beta ≠ 0, written); 5 nested scales (NF4_DQ = 1
//   only, readonly); absmax as in dequantize_nf4.comp (common/nf4.glsl NF4_ABSMAX).
// Push (after boff[8]): m, n, k, kFirst, lda, cols, strideB, experts, blockSize, beta,
//   nestedBlock, absmaxOffset → Swift `GroupedMatmulNF4Push`.
// Dispatch: x = ceil(n / BN), y = ceil(R / BM), z = 1 (m = R, the worst case; tiles past
//   offsets[E] exit), clamped to maxComputeWorkGroupCount with grid-stride loops. Workgroup
//   (BM/TM)·(BN/TN) invocations; tiles in specialization constants 3..7.
// Variant defines (Swift `groupedMatmulNF4` sets them):
//   TRANS_B 0|1   see above
//   NF4_DQ 0|1    f32 or double-quantised absmax
// variant: TRANS_B=0
// variant: NF4_DQ=1
// variant: TRANS_B=0 NF4_DQ=1
#ifndef TRANS_B
#define TRANS_B 1
#endif
#ifndef NF4_DQ
#define NF4_DQ 0
#endif

#include "common/push.glsl"
#include "common/nf4.glsl"

layout(set = 0, binding = 0) readonly buffer BufA { float a[]; };
layout(set = 0, binding = 1) readonly buffer Packed { uint packed[]; };
layout(set = 0, binding = 4) buffer BufC { float c[]; };

PUSH_BEGIN
  uint m;
  uint n;
  uint k;
  uint kFirst;
  uint lda;
  uint cols;
  uint strideB;
  uint experts;
  uint blockSize;
  float beta;
  uint nestedBlock;
  float absmaxOffset;
PUSH_END

NF4_ABSMAX(2, 5)

#define MM_A_K_FAST 1
#define MM_B_K_FAST TRANS_B
#include "common/matmul_tile.glsl"
#define GROUPED_OFFSETS 3
#include "common/grouped_rows.glsl"

uint baseB;  // the current expert's first element of W (global over the stack)

float mm_load_a(uint row, uint kk) {
  return a[pc.boff[0] + row * pc.lda + pc.kFirst + kk];
}

// Element e of the stacked W dequantised: packed word e/8, absmax block e/blockSize.
float nf4_element(uint e) {
  uint word = packed[pc.boff[1] + (e >> 3u)];
  return NF4_CODE[nf4_index(word, e & 7u)] * block_absmax(e / pc.blockSize);
}

float mm_load_b(uint kk, uint col) {
  uint kg = pc.kFirst + kk;
#if TRANS_B
  return nf4_element(baseB + col * pc.cols + kg);
#else
  return nf4_element(baseB + kg * pc.cols + col);
#endif
}

void mm_write(uint row, uint col, float acc) {
  if (row < rowLo) return;
  uint i = pc.boff[4] + row * pc.n + col;
  c[i] = pc.beta == 0.0 ? acc : acc + pc.beta * c[i];
}

// Expert x's product for rows row0 ..< rowHi (common/grouped_rows.glsl).
void grouped_segment(uint x, uint row0, uint rowHi) {
  const uint tilesN = (pc.n + BN - 1) / BN;
  baseB = x * pc.strideB;
  for (uint tx = gl_WorkGroupID.x; tx < tilesN; tx += gl_NumWorkGroups.x) {
    mm_zero();
    mm_accumulate(row0, tx * BN, rowHi, pc.n, pc.k);
    mm_store(row0, tx * BN, rowHi, pc.n);
  }
}

void main() {
  grouped_rows(pc.experts, pc.m);
}
