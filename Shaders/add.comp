#version 450
// add: out[i] = a[i] + alpha·b[i mod nb].                           CPU twin: CPUBackend.add
// Shapes: a, out (n) f32; b (nb) f32 with nb dividing n (nb == n: same shape; otherwise b
//   repeats over a's rows, e.g. a bias). out may alias a or b.
// Bindings: 0 a, 1 b (readonly), 2 out.
// Push (after boff[8]): n, nb, alpha → Swift `BinaryPush` (shared with mul.comp).
// Dispatch: one invocation per element; workgroups of spec constant 0 (256) invocations
//   on a 2D grid (common/grid.glsl).
#include "common/push.glsl"
#include "common/grid.glsl"

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

layout(set = 0, binding = 0) readonly buffer BufA { float a[]; };
layout(set = 0, binding = 1) readonly buffer BufB { float b[]; };
layout(set = 0, binding = 2) buffer BufOut { float o[]; };

PUSH_BEGIN
  uint n;
  uint nb;
  float alpha;
PUSH_END

void main() {
  uint i = global_linear_id();
  if (i >= pc.n) return;
  o[pc.boff[2] + i] = a[pc.boff[0] + i] + pc.alpha * b[pc.boff[1] + i % pc.nb];
}
