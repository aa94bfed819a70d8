#version 450
// moe_aux_loss: the load-balancing loss of summed router statistics (transformers'
//   load_balancing_loss_func).                              CPU twin: CPUBackend.moeAuxLoss
//   With M = stats[2e], f_x = stats[x] / M, P_x = stats[e + x] / M and
//   c = coefficient·weight[0] (coefficient when hasWeight = 0):
//     lossSum[0]  += c·e·Σ_x f_x·P_x      (the sum in expert order, by one invocation, as on
//                                           the CPU)
//     gradient[x]  = c·e·f_x / M
//   When M is not > 0 (no counted token) the gradient is 0 and lossSum is left alone.
// Shapes: stats (2e + 1) f32; weight (1) f32; lossSum (1) f32; gradient (e) f32.
// Bindings: 0 stats, 1 weight (any f32 buffer when hasWeight = 0), readonly; 2 lossSum (read
//   and written), 3 gradient.
// Push (after boff[8]): e, coefficient, hasWeight → Swift `MoEAuxLossPush`.
// Dispatch: one workgroup of spec constant 0 invocations; invocation t writes gradients
//   t, t + WG, …; invocation 0 the loss (e iterations).
#include "common/push.glsl"
#include "common/grid.glsl"

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

layout(set = 0, binding = 0) readonly buffer BufStats { float stats[]; };
layout(set = 0, binding = 1) readonly buffer BufWeight { float weight[]; };
layout(set = 0, binding = 2) buffer BufLoss { float lossSum[]; };
layout(set = 0, binding = 3) buffer BufGradient { float gradient[]; };

PUSH_BEGIN
  uint e;
  float coefficient;
  uint hasWeight;
PUSH_END

void main() {
  uint t = gl_LocalInvocationID.x;
  uint sb = pc.boff[0];
  float c = pc.coefficient * (pc.hasWeight != 0u ? weight[pc.boff[1]] : 1.0);
  float m = stats[sb + 2u * pc.e];
  bool counted = m > 0.0;
  float ce = c * float(pc.e);
  for (uint x = t; x < pc.e; x += WG_SIZE) {
    gradient[pc.boff[3] + x] = counted ? ce * (stats[sb + x] / m) / m : 0.0;
  }
  if (t == 0u && counted) {
    float aux = 0.0;
    for (uint x = 0u; x < pc.e; ++x) aux += (stats[sb + x] / m) * (stats[sb + pc.e + x] / m);
    lossSum[pc.boff[2]] += ce * aux;
  }
}
