#version 450
// variant: USE_SUBGROUP=1
// rms_norm: out = x / sqrt(mean(x²) + eps) · (weight + weightOffset), row-wise.
//                                                                  CPU twin: CPUBackend.rmsNorm
//
// Shapes: x, out (rows, cols) f32 row-major; weight (cols); rstd (rows) gets
//   1 / sqrt(Σx²/cols + eps) for the backward pass.
// Bindings: 0 x (readonly), 1 weight (readonly), 2 out, 3 rstd.
// Push (after boff[8]): rows, cols, eps, weightOffset → Swift `RMSNormPush`.
// Dispatch: one workgroup per row, RED_WG (spec constant 0, power of two) invocations that
//   stride over the row; rows spread over a 2D grid (common/grid.glsl).
#include "common/push.glsl"
#include "common/grid.glsl"
#include "common/reduce.glsl"

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

layout(set = 0, binding = 0) readonly buffer BufX { float x[]; };
layout(set = 0, binding = 1) readonly buffer BufW { float w[]; };
layout(set = 0, binding = 2) buffer BufOut { float o[]; };
layout(set = 0, binding = 3) buffer BufRstd { float rstd[]; };

PUSH_BEGIN
  uint rows;
  uint cols;
  float eps;
  float weightOffset;  // added to every weight: Gemma's (1 + w); 0 otherwise
PUSH_END

void main() {
  uint row = wg_linear_id();
  if (row >= pc.rows) return;  // uniform over the workgroup
  uint t = gl_LocalInvocationID.x;
  uint xb = pc.boff[0] + row * pc.cols;
  uint ob = pc.boff[2] + row * pc.cols;

  float ss = 0.0;
  for (uint j = t; j < pc.cols; j += RED_WG) {
    float v = x[xb + j];
    ss += v * v;
  }
  ss = wg_reduce_sum(ss);
  float r = 1.0 / sqrt(ss / float(pc.cols) + pc.eps);

  for (uint j = t; j < pc.cols; j += RED_WG) {
    o[ob + j] = x[xb + j] * r * (w[pc.boff[1] + j] + pc.weightOffset);
  }
  if (t == 0u) rstd[pc.boff[3] + row] = r;
}
