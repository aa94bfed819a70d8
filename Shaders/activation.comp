#version 450
// activation: an ungated MLP's activation and its backward, elementwise.
//                                  CPU twin: CPUBackend.activation / activationBackward
//   ACT 0 (gelu, BERT's exact): x·Φ(x) = ½·x·(1 + erf(x/√2)); derivative Φ(x) + x·φ(x).
//   ACT 1 (gelu_tanh): ½·x·(1 + tanh(√(2/π)·(x + 0.044715·x³))).
//   ACT 2 (sigmoid): σ(x) = 1 / (1 + e^−x) from e^−|x| (no overflow); derivative σ(1 − σ).
//   BACKWARD 0: out = act(x).  BACKWARD 1: out = dy ⊙ act'(x).
//   GLSL has no erf: Abramowitz–Stegun 7.1.26 (|error| ≤ 1.5e-7), odd-extended.
// variant: ACT=1
// variant: BACKWARD=1
// variant: ACT=1 BACKWARD=1
// variant: ACT=2
// variant: ACT=2 BACKWARD=1
// Shapes: x, dy, out (n) f32. out may alias x or dy.
// Bindings: 0 x (readonly), 1 dy (readonly; BACKWARD 1 only), 2 out.
// Push (after boff[8]): n → Swift `ActivationPush`.
// Dispatch: one invocation per element; workgroups of spec constant 0 (256) invocations
//   on a 2D grid (common/grid.glsl).
#include "common/push.glsl"
#include "common/grid.glsl"
#include "common/tanh.glsl"

#ifndef ACT
#define ACT 0
#endif
#ifndef BACKWARD
#define BACKWARD 0
#endif

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

layout(set = 0, binding = 0) readonly buffer BufX { float x[]; };
layout(set = 0, binding = 1) readonly buffer BufDy { float dy[]; };
layout(set = 0, binding = 2) buffer BufOut { float o[]; };

PUSH_BEGIN
  uint n;
PUSH_END

float erf_approx(float v) {
  float a = abs(v);
  float t = 1.0 / (1.0 + 0.3275911 * a);
  float poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))));
  float e = 1.0 - poly * exp(-a * a);
  return v < 0.0 ? -e : e;
}

void main() {
  uint i = global_linear_id();
  if (i >= pc.n) return;
  float v = x[pc.boff[0] + i];
#if ACT == 0
  float cdf = 0.5 * (1.0 + erf_approx(v * 0.70710678118654752));
  float value = v * cdf;
  float slope = cdf + v * exp(-0.5 * v * v) * 0.39894228040143268;
#elif ACT == 2
  float e = exp(-abs(v));
  float value = v >= 0.0 ? 1.0 / (1.0 + e) : e / (1.0 + e);
  float slope = value * (1.0 - value);
#else
  const float c = 0.7978845608028654, k = 0.044715;
  float t = tanh_safe(c * (v + k * v * v * v));
  float value = 0.5 * v * (1.0 + t);
  float slope = 0.5 * (1.0 + t) + 0.5 * v * (1.0 - t * t) * c * (1.0 + 3.0 * k * v * v);
#endif
#if BACKWARD == 1
  o[pc.boff[2] + i] = dy[pc.boff[1] + i] * slope;
#else
  o[pc.boff[2] + i] = value;
#endif
}
