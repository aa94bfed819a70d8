#version 450
// adam_w: one AdamW step, torch.optim.AdamW semantics.          CPU twin: CPUBackend.adamW
//   hyper = AdamWHyperParameters.packed:
//     [lr, beta1, beta2, eps, wd, bc1, bc2, gradScale, maxGradNorm, 0…]
//   clip = min(1, maxGradNorm / (gradScale·sqrt(S) + 1e-6)) when maxGradNorm > 0 and the host bound
//          S = sumSq[0] (hasSumSq = 1), else 1   (AdamWHyperParameters.clipFactor)
//   g = grad·gradScale·clip
//   p ← p·(1 − lr·wd);  m ← β1·m + (1−β1)·g;  v ← β2·v + (1−β2)·g²
//   p ← p − (lr / bc1) · m / (sqrt(v) / sqrt(bc2) + eps)
//   A bound S that is not finite (NaN/inf, a non-finite gradient or loss folded in) skips
//   the update: param, m and v keep their values, so the host can stop the run after the
//   step's only wait with the previous step's parameters intact.
//   Per-step values live in the hyper buffer, not push constants, so recorded work replays.
// Shapes: grad, param, m, v (n) f32; hyper (16) f32; sumSq (1) f32.
// Bindings: 0 grad, 1 hyper, 2 sumSq (readonly; without one the host binds hyper again and
//   sets hasSumSq = 0), 3 param, 4 m, 5 v (read and written).
// Push (after boff[8]): n, hasSumSq → Swift `AdamWPush`.
// Dispatch: one invocation per element; workgroups of spec constant 0 (256) invocations
//   on a 2D grid (common/grid.glsl).
#include "common/push.glsl"
#include "common/grid.glsl"

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

layout(set = 0, binding = 0) readonly buffer BufGrad { float grad[]; };
layout(set = 0, binding = 1) readonly buffer BufHyper { float hyper[]; };
layout(set = 0, binding = 2) readonly buffer BufSumSq { float sumsq[]; };
layout(set = 0, binding = 3) buffer BufParam { float param[]; };
layout(set = 0, binding = 4) buffer BufM { float mom1[]; };
layout(set = 0, binding = 5) buffer BufV { float mom2[]; };

PUSH_BEGIN
  uint n;
  uint hasSumSq;
PUSH_END

void main() {
  uint i = global_linear_id();
  if (i >= pc.n) return;
  uint h = pc.boff[1];
  float lr = hyper[h + 0u], beta1 = hyper[h + 1u], beta2 = hyper[h + 2u];
  float eps = hyper[h + 3u], wd = hyper[h + 4u];
  float bc1 = hyper[h + 5u], bc2 = hyper[h + 6u];
  float gradScale = hyper[h + 7u], maxGradNorm = hyper[h + 8u];

  float clip = 1.0;
  if (pc.hasSumSq != 0u) {
    float s = sumsq[pc.boff[2]];
    // Exponent all ones: NaN or inf (a bit test no fast-math rewrite can drop).
    if ((floatBitsToUint(s) & 0x7f800000u) == 0x7f800000u) return;
    if (maxGradNorm > 0.0) clip = min(1.0, maxGradNorm / (gradScale * sqrt(s) + 1e-6));
  }
  // Grouped exactly as CPUBackend.adamW so the two agree to the last few ulp.
  float g = grad[pc.boff[0] + i] * (gradScale * clip);

  uint ip = pc.boff[3] + i, im = pc.boff[4] + i, iv = pc.boff[5] + i;
  float m = beta1 * mom1[im] + (1.0 - beta1) * g;
  float v = beta2 * mom2[iv] + (1.0 - beta2) * (g * g);
  float stepSize = lr / bc1;
  param[ip] = param[ip] * (1.0 - lr * wd) - stepSize * (m / (sqrt(v) / sqrt(bc2) + eps));
  mom1[im] = m;
  mom2[iv] = v;
}
