#version 450
// swiglu: out = act(gate) ⊙ up (a gated MLP's activation).
//                                                  CPU twin: CPUBackend.gatedActivation
//   ACT 0 (SwiGLU): silu(g) = g·σ(g), σ(g) = 1 / (1 + exp(−g)).
//   ACT 1 (GeGLU, Gemma): gelu_tanh(g) = ½·g·(1 + tanh(√(2/π)·(g + 0.044715·g³))).
// variant: ACT=1
// Shapes: gate, up, out (n) f32 (any shape, same count). out may alias gate or up.
// Bindings: 0 gate, 1 up (readonly), 2 out.
// Push (after boff[8]): n → Swift `SwiGLUPush`.
// Dispatch: one invocation per element; workgroups of spec constant 0 (256) invocations
//   on a 2D grid (common/grid.glsl).
// σ(g) for g ≪ 0: exp(−g) overflows to +inf and 1/(1+inf) = 0, the correct limit.
#include "common/push.glsl"
#include "common/grid.glsl"
#include "common/tanh.glsl"

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

layout(set = 0, binding = 0) readonly buffer BufGate { float gate[]; };
layout(set = 0, binding = 1) readonly buffer BufUp { float up[]; };
layout(set = 0, binding = 2) buffer BufOut { float o[]; };

PUSH_BEGIN
  uint n;
PUSH_END

#ifndef ACT
#define ACT 0
#endif

void main() {
  uint i = global_linear_id();
  if (i >= pc.n) return;
  float g = gate[pc.boff[0] + i];
#if ACT == 1
  float z = 0.7978845608028654 * (g + 0.044715 * g * g * g);
  float t = tanh_safe(z);
  o[pc.boff[2] + i] = 0.5 * g * (1.0 + t) * up[pc.boff[1] + i];
#else
  float sig = 1.0 / (1.0 + exp(-g));
  o[pc.boff[2] + i] = g * sig * up[pc.boff[1] + i];
#endif
}
