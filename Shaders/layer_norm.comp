#version 450
// variant: USE_SUBGROUP=1
// layer_norm: out = (x − mean)·rstd·weight + bias, row-wise, rstd = 1/sqrt(var + eps) with
//   the biased variance (torch.nn.LayerNorm, BERT's).        CPU twin: CPUBackend.layerNorm
//
// Shapes: x, out (rows, cols) f32 row-major; weight, bias (cols); mean, rstd (rows) keep the
//   row statistics for the backward pass. The variance is a second pass over the centred
//   row (no E[x²] − E[x]² cancellation).
// Bindings: 0 x, 1 weight, 2 bias (readonly), 3 out, 4 mean, 5 rstd.
// Push (after boff[8]): rows, cols, eps → Swift `LayerNormPush`.
// Dispatch: one workgroup per row, RED_WG (spec constant 0, power of two) invocations that
//   stride over the row; rows spread over a 2D grid (common/grid.glsl).
#include "common/push.glsl"
#include "common/grid.glsl"
#include "common/reduce.glsl"

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

layout(set = 0, binding = 0) readonly buffer BufX { float x[]; };
layout(set = 0, binding = 1) readonly buffer BufW { float w[]; };
layout(set = 0, binding = 2) readonly buffer BufB { float bias[]; };
layout(set = 0, binding = 3) buffer BufOut { float o[]; };
layout(set = 0, binding = 4) buffer BufMean { float mean_out[]; };
layout(set = 0, binding = 5) buffer BufRstd { float rstd_out[]; };

PUSH_BEGIN
  uint rows;
  uint cols;
  float eps;
PUSH_END

void main() {
  uint row = wg_linear_id();
  if (row >= pc.rows) return;  // uniform over the workgroup
  uint t = gl_LocalInvocationID.x;
  uint xb = pc.boff[0] + row * pc.cols;
  uint ob = pc.boff[3] + row * pc.cols;

  float s = 0.0;
  for (uint j = t; j < pc.cols; j += RED_WG) s += x[xb + j];
  float m = wg_reduce_sum(s) / float(pc.cols);
  float ss = 0.0;
  for (uint j = t; j < pc.cols; j += RED_WG) {
    float d = x[xb + j] - m;
    ss += d * d;
  }
  float r = 1.0 / sqrt(wg_reduce_sum(ss) / float(pc.cols) + pc.eps);

  for (uint j = t; j < pc.cols; j += RED_WG) {
    o[ob + j] = (x[xb + j] - m) * r * w[pc.boff[1] + j] + bias[pc.boff[2] + j];
  }
  if (t == 0u) {
    mean_out[pc.boff[4] + row] = m;
    rstd_out[pc.boff[5] + row] = r;
  }
}
