#version 450
// variant: USE_SUBGROUP=1
// rms_norm_back: gradients of out = x·r·w' with r = 1/sqrt(mean(x²) + eps), w' = w + offset.
//                                                        CPU twin: CPUBackend.rmsNormBackward
//   dx[i,j]  = r_i·w_j·dy[i,j] − x[i,j]·r_i³·(Σ_k dy[i,k]·w_k·x[i,k]) / cols   (overwritten)
//   dW[j]   += Σ_i dy[i,j]·x[i,j]·r_i                                           (accumulated)
// Shapes: dy, x, dx (rows, cols) f32; w, dW (cols); rstd (rows) = r from rms_norm.
//
// Three passes, chosen by the PASS define (Swift `RMSNormBackPass` mirrors this list):
//   PASS 0  dx.   Bindings: 0 dy, 1 x, 2 w, 3 rstd (readonly), 4 dx.
//                 One workgroup per row (2D grid), RED_WG invocations stride over the row.
//   PASS 1  dW partial sums over blocks of rowsPerBlock rows.
//                 Bindings: 0 dy, 1 x, 2 rstd (readonly), 3 out.
//                 direct = 0: out = scratch (blocks, cols), out[b, j] = block b's sum;
//                 direct = 1 (blocks == 1): out = dW, out[j] += the sum.
//                 Dispatch x = ceil(cols / RED_WG), y = blocks; one invocation per column.
//   PASS 2  dW[j] += Σ_b scratch[b, j].  Bindings: 0 scratch (readonly), 1 dW.
//                 Dispatch x = ceil(cols / RED_WG); one invocation per column.
// Column sums are therefore two-level (≤ rowsPerBlock, then ≤ blocks terms in a chain),
// deterministic, and free of float atomics.
// Push (after boff[8]): rows, cols, rowsPerBlock, blocks, direct, weightOffset
//   → Swift `RMSNormBackPush`.
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
  uint direct;
  float weightOffset;  // pass 0: w' = w + weightOffset (Gemma's 1 + w)
PUSH_END

#if PASS == 0
layout(set = 0, binding = 0) readonly buffer BufDy { float dy[]; };
layout(set = 0, binding = 1) readonly buffer BufX { float x[]; };
layout(set = 0, binding = 2) readonly buffer BufW { float w[]; };
layout(set = 0, binding = 3) readonly buffer BufRstd { float rstd[]; };
layout(set = 0, binding = 4) buffer BufDx { float dx[]; };

void main() {
  uint row = wg_linear_id();
  if (row >= pc.rows) return;  // uniform over the workgroup
  uint t = gl_LocalInvocationID.x;
  uint dyb = pc.boff[0] + row * pc.cols;
  uint xb = pc.boff[1] + row * pc.cols;
  uint dxb = pc.boff[4] + row * pc.cols;

  float dot = 0.0;
  for (uint j = t; j < pc.cols; j += RED_WG) {
    dot += dy[dyb + j] * (w[pc.boff[2] + j] + pc.weightOffset) * x[xb + j];
  }
  dot = wg_reduce_sum(dot);
  float r = rstd[pc.boff[3] + row];
  float c = r * r * r * dot / float(pc.cols);
  for (uint j = t; j < pc.cols; j += RED_WG) {
    dx[dxb + j] = r * (w[pc.boff[2] + j] + pc.weightOffset) * dy[dyb + j] - x[xb + j] * c;
  }
}

#elif PASS == 1
layout(set = 0, binding = 0) readonly buffer BufDy { float dy[]; };
layout(set = 0, binding = 1) readonly buffer BufX { float x[]; };
layout(set = 0, binding = 2) readonly buffer BufRstd { float rstd[]; };
layout(set = 0, binding = 3) buffer BufOut { float o[]; };

void main() {
  uint j = gl_GlobalInvocationID.x;
  uint b = gl_WorkGroupID.y;
  if (j >= pc.cols) return;
  uint r0 = b * pc.rowsPerBlock;
  uint r1 = min(r0 + pc.rowsPerBlock, pc.rows);
  float s = 0.0;
  for (uint i = r0; i < r1; ++i) {
    s += dy[pc.boff[0] + i * pc.cols + j] * x[pc.boff[1] + i * pc.cols + j] * rstd[pc.boff[2] + i];
  }
  if (pc.direct != 0u) {
    o[pc.boff[3] + j] += s;
  } else {
    o[pc.boff[3] + b * pc.cols + j] = s;
  }
}

#elif PASS == 2
layout(set = 0, binding = 0) readonly buffer BufPartial { float partial[]; };
layout(set = 0, binding = 1) buffer BufDw { float dw[]; };

void main() {
  uint j = gl_GlobalInvocationID.x;
  if (j >= pc.cols) return;
  float s = 0.0;
  for (uint b = 0u; b < pc.blocks; ++b) s += partial[pc.boff[0] + b * pc.cols + j];
  dw[pc.boff[1] + j] += s;
}
#endif
