#version 450
// scale: out[i] = alpha·x[i], or softcap·tanh(alpha·x[i] / softcap) when softcap > 0 (Gemma 2's
//   soft-capped scores and logits).                               CPU twin: CPUBackend.scale
// Shapes: x, out (n) f32. out may alias x.
// Bindings: 0 x (readonly), 1 out.
// Push (after boff[8]): n, alpha, softcap → Swift `ScalePush`.
// Dispatch: one invocation per element; workgroups of spec constant 0 (256) invocations
//   on a 2D grid (common/grid.glsl).
#include "common/push.glsl"
#include "common/grid.glsl"
#include "common/tanh.glsl"

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

layout(set = 0, binding = 0) readonly buffer BufX { float x[]; };
layout(set = 0, binding = 1) buffer BufOut { float o[]; };

PUSH_BEGIN
  uint n;
  float alpha;
  float softcap;
PUSH_END

void main() {
  uint i = global_linear_id();
  if (i >= pc.n) return;
  float s = pc.alpha * x[pc.boff[0] + i];
  if (pc.softcap > 0.0) s = softcapped(s, pc.softcap);
  o[pc.boff[1] + i] = s;
}
