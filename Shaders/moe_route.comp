#version 450
// moe_route: the router's softmax and top-K.                    CPU twin: CPUBackend.moeRoute
//   For token i (all in f32, sums in expert order as on the CPU):
//     probs[i, j]    = exp(x[i, j] − m) / Σ_j' exp(x[i, j'] − m),  m = max_j x[i, j]
//     experts[i, s]  (s = 0 ..< k) the k most probable experts, most probable first, ties to
//                    the lower index: the order (p descending, j ascending), so pick s is the
//                    first expert after pick s − 1 in that order (no "chosen" set is kept);
//     weights[i, s]  = probs[i, experts[i, s]], divided by their sum (in pick order) when
//                    normalize = 1 (Mixtral, norm_topk_prob).
//   A NaN logit makes the row's probabilities NaN; its picks are then some in-range experts
//   (the CPU's are too), never an index outside [0, e).
// Shapes: logits, probs (n, e) f32; weights (n, k) f32; experts (n, k) i32; 1 ≤ k ≤ e.
// Bindings: 0 logits (readonly), 1 probs, 2 weights, 3 experts.
// Push (after boff[8]): n, e, k, normalize → Swift `MoERoutePush`.
// Dispatch: one invocation per token, workgroups of spec constant 0 on a 2D grid
//   (common/grid.glsl). Loops: 3e + k·e iterations per invocation (1.4 K at e = 128,
//   k = 8), far below lavapipe's 65535.
#include "common/push.glsl"
#include "common/grid.glsl"

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

layout(set = 0, binding = 0) readonly buffer BufLogits { float logits[]; };
layout(set = 0, binding = 1) buffer BufProbs { float probs[]; };
layout(set = 0, binding = 2) buffer BufWeights { float weights[]; };
layout(set = 0, binding = 3) buffer BufExperts { int experts[]; };

PUSH_BEGIN
  uint n;
  uint e;
  uint k;
  uint normalize;
PUSH_END

void main() {
  uint i = global_linear_id();
  if (i >= pc.n) return;
  uint xb = pc.boff[0] + i * pc.e, pb = pc.boff[1] + i * pc.e;
  uint wb = pc.boff[2] + i * pc.k, eb = pc.boff[3] + i * pc.k;

  float mx = logits[xb];
  for (uint j = 1u; j < pc.e; ++j) mx = max(mx, logits[xb + j]);
  float sum = 0.0;
  for (uint j = 0u; j < pc.e; ++j) {
    float v = exp(logits[xb + j] - mx);
    probs[pb + j] = v;
    sum += v;
  }
  for (uint j = 0u; j < pc.e; ++j) probs[pb + j] = probs[pb + j] / sum;

  // Pick s is the largest probability strictly after (prevP, prev) in (p desc, j asc) order.
  int prev = -1;
  float prevP = 0.0;
  float picked = 0.0;
  for (uint s = 0u; s < pc.k; ++s) {
    int best = -1;
    float bestP = 0.0;
    for (uint j = 0u; j < pc.e; ++j) {
      float p = probs[pb + j];
      bool after = prev < 0 || p < prevP || (p == prevP && int(j) > prev);
      if (after && (best < 0 || p > bestP)) { best = int(j); bestP = p; }
    }
    if (best < 0) {  // only with NaN probabilities: keep the picks distinct and in range
      best = int(s);
      bestP = probs[pb + s];
    }
    experts[eb + s] = best;
    weights[wb + s] = bestP;
    picked += bestP;
    prev = best;
    prevP = bestP;
  }
  if (pc.normalize != 0u) {
    for (uint s = 0u; s < pc.k; ++s) weights[wb + s] = weights[wb + s] / picked;
  }
}
