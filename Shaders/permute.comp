#version 450
// permute: out = x with its axes reordered, as torch.permute(x, dims).contiguous().
//                                                      CPU twin: CPUBackend.permute
// Shapes: x and out padded on the left to rank 4; out index (i0, i1, i2, i3) over out
//   dims o[4] reads x at Σ_j i_j · s[j], where s[j] is x's element stride along the axis
//   that output axis j comes from (ShapeCheck.permute).
// Bindings: 0 x (f32, readonly), 1 out (f32).
// Push: n (elements), o1, o2, o3 (out dims 1…3), s0, s1, s2, s3 (x strides per out axis).
// Dispatch: one invocation per output element; elementGroups(n) workgroups of WG_SIZE.
#include "common/push.glsl"
#include "common/grid.glsl"

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

layout(set = 0, binding = 0) readonly buffer X { float x[]; };
layout(set = 0, binding = 1) buffer Out { float y[]; };

PUSH_BEGIN
  uint n;
  uint o1;
  uint o2;
  uint o3;
  uint s0;
  uint s1;
  uint s2;
  uint s3;
PUSH_END

void main() {
  uint i = global_linear_id();
  if (i >= pc.n) return;
  uint i3 = i % pc.o3, r = i / pc.o3;
  uint i2 = r % pc.o2; r /= pc.o2;
  uint i1 = r % pc.o1, i0 = r / pc.o1;
  y[pc.boff[1] + i] = x[pc.boff[0] + i0 * pc.s0 + i1 * pc.s1 + i2 * pc.s2 + i3 * pc.s3];
}
