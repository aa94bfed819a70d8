#version 450
// swiglu: out = silu(gate) ⊙ up, silu(g) = g·σ(g), σ(g) = 1 / (1 + exp(−g)).
//                                                              CPU twin: CPUBackend.swiglu
// Shapes: gate, up, out (n) f32 (any shape, same count). out may alias gate or up.
// Bindings: 0 gate, 1 up (readonly), 2 out.
// Push (after boff[8]): n → Swift `SwiGLUPush`.
// Dispatch: one invocation per element; workgroups of spec constant 0 (256) invocations
//   on a 2D grid (common/grid.glsl).
// σ(g) for g ≪ 0: exp(−g) overflows to +inf and 1/(1+inf) = 0, the correct limit.
#include "common/push.glsl"
#include "common/grid.glsl"

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

layout(set = 0, binding = 0) readonly buffer BufGate { float gate[]; };
layout(set = 0, binding = 1) readonly buffer BufUp { float up[]; };
layout(set = 0, binding = 2) buffer BufOut { float o[]; };

PUSH_BEGIN
  uint n;
PUSH_END

void main() {
  uint i = global_linear_id();
  if (i >= pc.n) return;
  float g = gate[pc.boff[0] + i];
  float sig = 1.0 / (1.0 + exp(-g));
  o[pc.boff[2] + i] = g * sig * up[pc.boff[1] + i];
}
