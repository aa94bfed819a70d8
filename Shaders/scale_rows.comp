#version 450
// scale_rows: out[r, c] = weights[r] · x[r, c].                 CPU twin: CPUBackend.scaleRows
// Shapes: x, out (rows, cols) f32, row-major; weights (rows) f32. out may alias x (each
//   invocation reads its element before writing it). The host splits tensors past one
//   binding into row chunks (VulkanBackend.scaleRows), so n below is one chunk's elements.
// Bindings: 0 x, 1 weights (readonly), 2 out.
// Push (after boff[8]): n (= rows·cols of the chunk), cols → Swift `ScaleRowsPush`.
// Dispatch: one invocation per element; workgroups of spec constant 0 (256) invocations
//   on a 2D grid (common/grid.glsl).
#include "common/push.glsl"
#include "common/grid.glsl"

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

layout(set = 0, binding = 0) readonly buffer BufX { float x[]; };
layout(set = 0, binding = 1) readonly buffer BufW { float w[]; };
layout(set = 0, binding = 2) buffer BufOut { float o[]; };

PUSH_BEGIN
  uint n;
  uint cols;
PUSH_END

void main() {
  uint i = global_linear_id();
  if (i >= pc.n) return;
  o[pc.boff[2] + i] = w[pc.boff[1] + i / pc.cols] * x[pc.boff[0] + i];
}
