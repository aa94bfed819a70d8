#version 450
// preference_loss: a DPO-family loss of P = rows/2 pairs.    CPU twin: CPUBackend.preferenceLoss
//   Pair i: rows 2i (chosen) and 2i+1 (rejected); π policy, ref reference summed answer
//   log-probs, len answer tokens. kind 0 sigmoid, 1 hinge, 2 ipo, 3 robust, 4 reward
//   (PreferenceLossKind):
//     Δ = (π_c − ref_c)/l_c − (π_r − ref_r)/l_r   (l = len for ipo, else 1),  x = β·Δ
//     sigmoid: ℓ = −(1−ε)·logσ(x) − ε·logσ(−x),   dℓ/dΔ = β·(−(1−ε)·σ(−x) + ε·σ(x))
//     hinge:   ℓ = max(0, 1 − x),                  dℓ/dΔ = 1 − x > 0 ? −β : 0
//     ipo:     ℓ = (Δ − 1/(2β))²,                  dℓ/dΔ = 2·(Δ − 1/(2β))
//     robust:  ℓ = (−(1−ε)·logσ(x) + ε·logσ(−x))/(1−2ε), dℓ/dΔ = −β·((1−ε)·σ(−x) + ε·σ(x))/(1−2ε)
//   kind 4 reward (Bradley–Terry; π are scores, ref margins; β, ε unused):
//              ℓ = −logσ(Δ),                       dℓ/dΔ = −σ(−Δ);  reward_x = π_x
//   With D = pairsInStep[0]: row weight w_c = −(dℓ/dΔ)/(l_c·D), w_r = (dℓ/dΔ)/(l_r·D);
//   lossSum[0] += Σℓ/D. RPO (alpha > 0, Lc = Σ len of chosen rows > 0, s = P/D):
//   lossSum[0] += α·s·(−Σπ_c)/Lc and w_c += α·s/Lc. tokenWeights[r·T + t] = w_r.
//   metrics[0..6] += Σℓ, Σreward_c, Σreward_r, #(reward_c > reward_r), Σπ_c, Σπ_r, P with
//   reward_x = β(π_x − ref_x) (kinds 0–3).
//   Sums run in pair order on one invocation (deterministic); f32 throughout.
// Shapes: policy, reference, answerTokens (rows) f32, rows ≤ 512; pairsInStep, lossSum (1);
//   tokenWeights (rows·T); metrics (8).
// Bindings: 0 policy, 1 reference, 2 answerTokens, 3 pairsInStep (readonly), 4 tokenWeights,
//   5 lossSum, 6 metrics.
// Push (after boff[8]): rows, tokens, kind, beta, eps, alpha → Swift `PreferenceLossPush`.
// Dispatch: one workgroup of spec constant 0 invocations.
#include "common/push.glsl"

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

layout(set = 0, binding = 0) readonly buffer BufPolicy { float policy[]; };
layout(set = 0, binding = 1) readonly buffer BufRef { float ref[]; };
layout(set = 0, binding = 2) readonly buffer BufLen { float len[]; };
layout(set = 0, binding = 3) readonly buffer BufPairs { float pairsInStep[]; };
layout(set = 0, binding = 4) buffer BufWeights { float tokenWeights[]; };
layout(set = 0, binding = 5) buffer BufLoss { float lossSum[]; };
layout(set = 0, binding = 6) buffer BufMetrics { float metrics[]; };

PUSH_BEGIN
  uint rows;
  uint tokens;
  uint kind;
  float beta;
  float eps;
  float alpha;
PUSH_END

const uint MAX_PAIRS = 256u;
shared float rowW[2u * MAX_PAIRS];
shared float pairLoss[MAX_PAIRS];
shared float rpoW;

// log(1 + u) accurate for small u (log1p is not in GLSL 450).
float log1p_(float u) {
  float w = 1.0 + u;
  return w == 1.0 ? u : log(w) * u / (w - 1.0);
}
float logSigmoid(float x) { return x >= 0.0 ? -log1p_(exp(-x)) : x - log1p_(exp(x)); }
float sigmoid(float x) { return x >= 0.0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x)); }

void main() {
  uint tid = gl_LocalInvocationID.x, nt = gl_WorkGroupSize.x;
  uint pairs = pc.rows / 2u;
  float d = pairsInStep[pc.boff[3]];
  float beta = pc.beta, eps = pc.eps;
  for (uint i = tid; i < pairs; i += nt) {
    uint c = 2u * i, r = c + 1u;
    float lc = pc.kind == 2u ? max(len[pc.boff[2] + c], 1.0) : 1.0;
    float lr = pc.kind == 2u ? max(len[pc.boff[2] + r], 1.0) : 1.0;
    float delta = (policy[pc.boff[0] + c] - ref[pc.boff[1] + c]) / lc
                - (policy[pc.boff[0] + r] - ref[pc.boff[1] + r]) / lr;
    float x = beta * delta, loss, dDelta;
    if (pc.kind == 0u) {
      loss = -(1.0 - eps) * logSigmoid(x) - eps * logSigmoid(-x);
      dDelta = beta * (-(1.0 - eps) * sigmoid(-x) + eps * sigmoid(x));
    } else if (pc.kind == 1u) {
      loss = max(0.0, 1.0 - x);
      dDelta = 1.0 - x > 0.0 ? -beta : 0.0;
    } else if (pc.kind == 2u) {
      float m = delta - 1.0 / (2.0 * beta);
      loss = m * m;
      dDelta = 2.0 * m;
    } else if (pc.kind == 3u) {
      loss = (-(1.0 - eps) * logSigmoid(x) + eps * logSigmoid(-x)) / (1.0 - 2.0 * eps);
      dDelta = -beta * ((1.0 - eps) * sigmoid(-x) + eps * sigmoid(x)) / (1.0 - 2.0 * eps);
    } else {
      loss = -logSigmoid(delta);
      dDelta = -sigmoid(-delta);
    }
    pairLoss[i] = loss;
    rowW[c] = -dDelta / lc / d;
    rowW[r] = dDelta / lr / d;
  }
  barrier();
  if (tid == 0u) {
    float sLoss = 0.0, sRc = 0.0, sRr = 0.0, sAcc = 0.0, sPc = 0.0, sPr = 0.0, chosenLen = 0.0;
    for (uint i = 0u; i < pairs; ++i) {
      uint c = 2u * i, r = c + 1u;
      float pc_ = policy[pc.boff[0] + c], pr = policy[pc.boff[0] + r];
      bool scores = pc.kind == 4u;
      float rc = scores ? pc_ : beta * (pc_ - ref[pc.boff[1] + c]);
      float rr = scores ? pr : beta * (pr - ref[pc.boff[1] + r]);
      sLoss += pairLoss[i]; sRc += rc; sRr += rr; sAcc += rc > rr ? 1.0 : 0.0;
      sPc += pc_; sPr += pr; chosenLen += len[pc.boff[2] + c];
    }
    float total = sLoss / d;
    rpoW = 0.0;
    if (pc.alpha > 0.0 && chosenLen > 0.0) {
      float share = float(pairs) / d;
      total += pc.alpha * (-sPc / chosenLen) * share;
      rpoW = pc.alpha * share / chosenLen;
    }
    lossSum[pc.boff[5]] += total;
    uint m = pc.boff[6];
    metrics[m] += sLoss; metrics[m + 1u] += sRc; metrics[m + 2u] += sRr; metrics[m + 3u] += sAcc;
    metrics[m + 4u] += sPc; metrics[m + 5u] += sPr; metrics[m + 6u] += float(pairs);
  }
  barrier();
  uint n = pc.rows * pc.tokens;
  for (uint i = tid; i < n; i += nt) {
    uint row = i / pc.tokens;
    tokenWeights[pc.boff[4] + i] = rowW[row] + ((row & 1u) == 0u ? rpoW : 0.0);
  }
}
