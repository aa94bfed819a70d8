#version 450
// moe_route_back: dLogits through the router.            CPU twin: CPUBackend.moeRouteBackward
//   For token i with picks x_s = experts[i, s], routing weights w_s, their gradients
//   g_s = dWeights[i, s], probabilities p = probs[i, :] and mask m = tokenMask[i] (1 without):
//     dp[j]       = auxGradient[j]·m                      (0·m without auxGradient)
//     dp[x_s]    += normalize ? (g_s − Σ_s' w_s'·g_s') / Σ_s' p[x_s'] : g_s
//     dLogits[j]  = p[j]·(dp[j] − Σ_j' p[j']·dp[j'])      (the softmax's backward)
//   Sums run in pick / expert order, as on the CPU. dp lives in the dLogits row itself (the
//   invocation that owns the row writes and rereads it).
//   A pick outside [0, e) is skipped (the CPU backend throws).
// Shapes: dWeights, weights (n, k) f32; probs, dLogits (n, e) f32; experts (n, k) i32;
//   auxGradient (e) f32; tokenMask (n) f32.
// Bindings: 0 dWeights, 1 probs, 2 weights, 3 experts, 4 auxGradient (any f32 buffer when
//   hasAux = 0), 5 tokenMask (any f32 buffer when hasMask = 0), all readonly; 6 dLogits.
// Push (after boff[8]): n, e, k, normalize, hasAux, hasMask → Swift `MoERouteBackPush`.
// Dispatch: one invocation per token, workgroups of spec constant 0 on a 2D grid
//   (common/grid.glsl). Loops: 3e + 2k iterations per invocation.
#include "common/push.glsl"
#include "common/grid.glsl"

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

layout(set = 0, binding = 0) readonly buffer BufDWeights { float dweights[]; };
layout(set = 0, binding = 1) readonly buffer BufProbs { float probs[]; };
layout(set = 0, binding = 2) readonly buffer BufWeights { float weights[]; };
layout(set = 0, binding = 3) readonly buffer BufExperts { int experts[]; };
layout(set = 0, binding = 4) readonly buffer BufAux { float aux[]; };
layout(set = 0, binding = 5) readonly buffer BufMask { float mask[]; };
layout(set = 0, binding = 6) buffer BufDLogits { float dlogits[]; };

PUSH_BEGIN
  uint n;
  uint e;
  uint k;
  uint normalize;
  uint hasAux;
  uint hasMask;
PUSH_END

void main() {
  uint i = global_linear_id();
  if (i >= pc.n) return;
  uint pb = pc.boff[1] + i * pc.e, db = pc.boff[6] + i * pc.e;
  uint kb = i * pc.k;
  float m = pc.hasMask != 0u ? mask[pc.boff[5] + i] : 1.0;

  for (uint j = 0u; j < pc.e; ++j) {
    dlogits[db + j] = (pc.hasAux != 0u ? aux[pc.boff[4] + j] : 0.0) * m;
  }
  float picked = 0.0, dot = 0.0;
  for (uint s = 0u; s < pc.k; ++s) {
    int x = experts[pc.boff[3] + kb + s];
    if (x >= 0 && uint(x) < pc.e) picked += probs[pb + uint(x)];
    dot += weights[pc.boff[2] + kb + s] * dweights[pc.boff[0] + kb + s];
  }
  for (uint s = 0u; s < pc.k; ++s) {
    int x = experts[pc.boff[3] + kb + s];
    if (x < 0 || uint(x) >= pc.e) continue;
    float g = dweights[pc.boff[0] + kb + s];
    dlogits[db + uint(x)] += pc.normalize != 0u ? (g - dot) / picked : g;
  }
  float sum = 0.0;
  for (uint j = 0u; j < pc.e; ++j) sum += probs[pb + j] * dlogits[db + j];
  for (uint j = 0u; j < pc.e; ++j) dlogits[db + j] = probs[pb + j] * (dlogits[db + j] - sum);
}
