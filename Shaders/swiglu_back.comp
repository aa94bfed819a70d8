#version 450
// swiglu_back: gradients of out = act(g) ⊙ u.   CPU twin: CPUBackend.gatedActivationBackward
//   ACT 0 (silu):   dUp = dy · g·σ(g);  dGate = dy · u · σ(g)·(1 + g·(1 − σ(g)))
//   ACT 1 (gelu_tanh, t = tanh(√(2/π)(g + 0.044715·g³))):
//                   dUp = dy · ½g(1 + t);
//                   dGate = dy · u · (½(1 + t) + ½g(1 − t²)·√(2/π)·(1 + 3·0.044715·g²))
//   both overwritten.
// variant: ACT=1
// Shapes: dy, gate, up, dGate, dUp (n) f32, same count.
// Bindings: 0 dy, 1 gate, 2 up (readonly), 3 dGate, 4 dUp. dGate/dUp may alias dy, gate or
//   up (each invocation reads its element before writing it).
// Push (after boff[8]): n → Swift `SwiGLUBackPush`.
// Dispatch: one invocation per element; workgroups of spec constant 0 (256) invocations
//   on a 2D grid (common/grid.glsl).
#include "common/push.glsl"
#include "common/grid.glsl"
#include "common/tanh.glsl"

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

layout(set = 0, binding = 0) readonly buffer BufDy { float dy[]; };
layout(set = 0, binding = 1) readonly buffer BufGate { float gate[]; };
layout(set = 0, binding = 2) readonly buffer BufUp { float up[]; };
layout(set = 0, binding = 3) buffer BufDGate { float dgate[]; };
layout(set = 0, binding = 4) buffer BufDUp { float dup[]; };

PUSH_BEGIN
  uint n;
PUSH_END

#ifndef ACT
#define ACT 0
#endif

void main() {
  uint i = global_linear_id();
  if (i >= pc.n) return;
  float d = dy[pc.boff[0] + i];
  float g = gate[pc.boff[1] + i];
  float u = up[pc.boff[2] + i];
#if ACT == 1
  const float c = 0.7978845608028654, k = 0.044715;
  float z = c * (g + k * g * g * g);
  float t = tanh_safe(z);
  dgate[pc.boff[3] + i] = d * u * (0.5 * (1.0 + t) + 0.5 * g * (1.0 - t * t) * c * (1.0 + 3.0 * k * g * g));
  dup[pc.boff[4] + i] = d * 0.5 * g * (1.0 + t);
#else
  float sig = 1.0 / (1.0 + exp(-g));
  dgate[pc.boff[3] + i] = d * u * sig * (1.0 + g * (1.0 - sig));
  dup[pc.boff[4] + i] = d * g * sig;
#endif
}
