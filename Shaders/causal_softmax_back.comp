#version 450
// variant: USE_SUBGROUP=1
// causal_softmax_back: dx = scale · y ⊙ (dy − Σ_j dy⊙y), row-wise, from the forward output y.
//                                                CPU twin: CPUBackend.causalSoftmaxBackward
//   dy, y, dx (…, tq, tk) f32 viewed as rows of tk; row r (query i = r mod tq) sees keys
//   j ≤ i + (tk − tq). The dot product runs over visible keys only and masked dx are 0
//   (y is 0 there anyway; this keeps a non-finite dy at a masked key from leaking in).
// Bindings: 0 dy, 1 y (readonly), 2 dx. dx may alias dy (each invocation reads its own
//   elements before writing them).
// Push (after boff[8]): rows, tq, tk, scale → Swift `CausalSoftmaxPush`.
// Dispatch: one workgroup per row (2D grid), RED_WG invocations stride over the row.
#include "common/push.glsl"
#include "common/grid.glsl"
#include "common/reduce.glsl"

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

layout(set = 0, binding = 0) readonly buffer BufDy { float dy[]; };
layout(set = 0, binding = 1) readonly buffer BufY { float y[]; };
layout(set = 0, binding = 2) buffer BufDx { float dx[]; };

PUSH_BEGIN
  uint rows;
  uint tq;
  uint tk;
  float scale;
  uint window;  // the forward's sliding window: unused (masked outputs are 0, so their dx is)
  uint rowsPerGroup;  // the forward's key starts: unused, for the same reason
  uint firstRow;
PUSH_END

void main() {
  uint row = wg_linear_id();
  if (row >= pc.rows) return;  // uniform over the workgroup
  uint t = gl_LocalInvocationID.x;
  uint db = pc.boff[0] + row * pc.tk;
  uint yb = pc.boff[1] + row * pc.tk;
  uint xb = pc.boff[2] + row * pc.tk;
  uint visible = row % pc.tq + (pc.tk - pc.tq) + 1u;

  float dot = 0.0;
  for (uint j = t; j < visible; j += RED_WG) dot += dy[db + j] * y[yb + j];
  dot = wg_reduce_sum(dot);

  for (uint j = t; j < pc.tk; j += RED_WG) {
    dx[xb + j] = j < visible ? pc.scale * y[yb + j] * (dy[db + j] - dot) : 0.0;
  }
}
