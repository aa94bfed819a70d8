#version 450
// variant: USE_SUBGROUP=1
// layer_norm_back: gradients of out = x̂·w + b, x̂ = (x − mean)·rstd.
//                                                     CPU twin: CPUBackend.layerNormBackward
//   dx[i,j]  = r_i·(g[i,j] − mean_k g[i,k] − x̂[i,j]·mean_k g[i,k]·x̂[i,k]),  g = dy·w  (overwritten)
//   dW[j]   += Σ_i dy[i,j]·x̂[i,j];   dB[j] += Σ_i dy[i,j]                       (accumulated)
// Shapes: dy, x, dx (rows, cols) f32; w, dW, dB (cols); mean, rstd (rows) from layer_norm.
//
// Three passes, chosen by the PASS define (Swift `LayerNormBackPass` mirrors this list):
//   PASS 0  dx.   Bindings: 0 dy, 1 x, 2 w, 3 mean, 4 rstd (readonly), 5 dx.
//                 One workgroup per row (2D grid), RED_WG invocations stride over the row.
//   PASS 1  dW and dB partial sums over blocks of rowsPerBlock rows.
//                 Bindings: 0 dy, 1 x, 2 mean, 3 rstd (readonly), 4 out.
//                 out = scratch (blocks, 2, cols): [b, 0, j] block b's dW sum, [b, 1, j] its dB.
//                 Dispatch x = ceil(cols / RED_WG), y = blocks; one invocation per column.
//   PASS 2  dW[j] += Σ_b scratch[b, 0, j] (hasWeight), dB[j] += Σ_b scratch[b, 1, j] (hasBias).
//                 Bindings: 0 scratch (readonly), 1 dW, 2 dB (any f32 buffer when not wanted).
//                 Dispatch x = ceil(cols / RED_WG); one invocation per column.
// Column sums are two-level (≤ rowsPerBlock, then ≤ blocks terms in a chain), deterministic,
// and free of float atomics.
// Push (after boff[8]): rows, cols, rowsPerBlock, blocks, hasWeight, hasBias
//   → Swift `LayerNormBackPush`.
// variant: PASS=1
// variant: PASS=2
#ifndef PASS
#define PASS 0
#endif
#include "common/push.glsl"
#include "common/grid.glsl"
#include "common/reduce.glsl"

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

PUSH_BEGIN
  uint rows;
  uint cols;
  uint rowsPerBlock;
  uint blocks;
  uint hasWeight;
  uint hasBias;
PUSH_END

#if PASS == 0
layout(set = 0, binding = 0) readonly buffer BufDy { float dy[]; };
layout(set = 0, binding = 1) readonly buffer BufX { float x[]; };
layout(set = 0, binding = 2) readonly buffer BufW { float w[]; };
layout(set = 0, binding = 3) readonly buffer BufMean { float mean_in[]; };
layout(set = 0, binding = 4) readonly buffer BufRstd { float rstd_in[]; };
layout(set = 0, binding = 5) buffer BufDx { float dx[]; };

void main() {
  uint row = wg_linear_id();
  if (row >= pc.rows) return;  // uniform over the workgroup
  uint t = gl_LocalInvocationID.x;
  uint dyb = pc.boff[0] + row * pc.cols;
  uint xb = pc.boff[1] + row * pc.cols;
  uint dxb = pc.boff[5] + row * pc.cols;
  float m = mean_in[pc.boff[3] + row], r = rstd_in[pc.boff[4] + row];

  float sg = 0.0, sgx = 0.0;
  for (uint j = t; j < pc.cols; j += RED_WG) {
    float g = dy[dyb + j] * w[pc.boff[2] + j];
    sg += g;
    sgx += g * (x[xb + j] - m) * r;
  }
  float meanG = wg_reduce_sum(sg) / float(pc.cols);
  float meanGX = wg_reduce_sum(sgx) / float(pc.cols);
  for (uint j = t; j < pc.cols; j += RED_WG) {
    float xh = (x[xb + j] - m) * r;
    dx[dxb + j] = r * (dy[dyb + j] * w[pc.boff[2] + j] - meanG - xh * meanGX);
  }
}

#elif PASS == 1
layout(set = 0, binding = 0) readonly buffer BufDy { float dy[]; };
layout(set = 0, binding = 1) readonly buffer BufX { float x[]; };
layout(set = 0, binding = 2) readonly buffer BufMean { float mean_in[]; };
layout(set = 0, binding = 3) readonly buffer BufRstd { float rstd_in[]; };
layout(set = 0, binding = 4) buffer BufOut { float o[]; };

void main() {
  uint j = gl_GlobalInvocationID.x;
  uint b = gl_WorkGroupID.y;
  if (j >= pc.cols) return;
  uint r0 = b * pc.rowsPerBlock;
  uint r1 = min(r0 + pc.rowsPerBlock, pc.rows);
  float sw = 0.0, sb = 0.0;
  for (uint i = r0; i < r1; ++i) {
    float d = dy[pc.boff[0] + i * pc.cols + j];
    sw += d * (x[pc.boff[1] + i * pc.cols + j] - mean_in[pc.boff[2] + i]) * rstd_in[pc.boff[3] + i];
    sb += d;
  }
  o[pc.boff[4] + (2u * b) * pc.cols + j] = sw;
  o[pc.boff[4] + (2u * b + 1u) * pc.cols + j] = sb;
}

#elif PASS == 2
layout(set = 0, binding = 0) readonly buffer BufPartial { float partial[]; };
layout(set = 0, binding = 1) buffer BufDw { float dw[]; };
layout(set = 0, binding = 2) buffer BufDb { float db[]; };

void main() {
  uint j = gl_GlobalInvocationID.x;
  if (j >= pc.cols) return;
  float sw = 0.0, sb = 0.0;
  for (uint b = 0u; b < pc.blocks; ++b) {
    sw += partial[pc.boff[0] + (2u * b) * pc.cols + j];
    sb += partial[pc.boff[0] + (2u * b + 1u) * pc.cols + j];
  }
  if (pc.hasWeight != 0u) dw[pc.boff[1] + j] += sw;
  if (pc.hasBias != 0u) db[pc.boff[2] + j] += sb;
}
#endif
