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
//   kind 5 orpo (odds ratio on averages a_x = π_x/max(len_x, 1); ref unused):
//              lo = (a_c − a_r) − (log(1−e^a_c) − log(1−e^a_r)),  ℓ = −β·logσ(lo),
//              w_c = β·σ(−lo)·(−1/expm1(a_c))/(len_c·D), w_r = −β·σ(−lo)·(−1/expm1(a_r))/(len_r·D)
//              (w = −dℓ/dπ / D); reward_x = β·a_x; metrics 4, 5 take a_x; metrics 7, 8 += Σlogσ(lo), Σlo.
//   With D = pairsInStep[0]: row weight w_c = −(dℓ/dΔ)/(l_c·D), w_r = (dℓ/dΔ)/(l_r·D);
//   lossSum[0] += Σℓ/D. RPO (alpha > 0, Lc = Σ len of chosen rows > 0, s = P/D):
//   lossSum[0] += α·s·(−Σπ_c)/Lc and w_c += α·s/Lc. tokenWeights[r·T + t] = w_r.
//   metrics[0..6] += Σℓ, Σreward_c, Σreward_r, #(reward_c > reward_r), Σπ_c, Σπ_r, P with
//   reward_x = β(π_x − ref_x) (kinds 0–3).
//   Sums run in pair order on one invocation (deterministic); f32 throughout.
// Shapes: policy, reference, answerTokens (rows) f32, rows ≤ 512; pairsInStep, lossSum (1);
//   tokenWeights (rows·T); metrics (12).
// Bindings: 0 policy, 1 reference, 2 answerTokens, 3 pairsInStep (readonly), 4 tokenWeights,
//   5 lossSum, 6 metrics.
// Push (after boff[8]): rows, tokens, kind, beta, eps, alpha → Swift `PreferenceLossPush`.
// Dispatch: one workgroup of spec constant 0 invocations.
#include "common/push.glsl"
#include "common/tanh.glsl"

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
shared float pairRatio[MAX_PAIRS];
shared float pairOdds[MAX_PAIRS];
shared float rpoW;

// log(1 + u) accurate for small u (log1p is not in GLSL 450).
float log1p_(float u) {
  float w = 1.0 + u;
  return w == 1.0 ? u : log(w) * u / (w - 1.0);
}
float logSigmoid(float x) { return x >= 0.0 ? -log1p_(exp(-x)) : x - log1p_(exp(x)); }
float sigmoid(float x) { return x >= 0.0 ? 1.0 / (1.0 + exp(-x)) : exp(x) / (1.0 + exp(x)); }
// e^x − 1 without cancellation near 0: 2t/(1 − t), t = tanh(x/2).
float expm1_(float x) {
  float t = tanh_safe(0.5 * x);
  return 2.0 * t / (1.0 - t);
}
// log(1 − e^x) for x < 0 (TRL's log1mexp, branch at −ln 2).
float log1mexp(float x) { return x < -0.69314718 ? log1p_(-exp(x)) : log(-expm1_(x)); }

void main() {
  uint tid = gl_LocalInvocationID.x, nt = gl_WorkGroupSize.x;
  uint pairs = pc.rows / 2u;
  float d = pairsInStep[pc.boff[3]];
  float beta = pc.beta, eps = pc.eps;
  for (uint i = tid; i < pairs; i += nt) {
    uint c = 2u * i, r = c + 1u;
    pairRatio[i] = 0.0;
    pairOdds[i] = 0.0;
    if (pc.kind == 5u) {
      float lc = max(len[pc.boff[2] + c], 1.0), lr = max(len[pc.boff[2] + r], 1.0);
      float ac = policy[pc.boff[0] + c] / lc, ar = policy[pc.boff[0] + r] / lr;
      float lo = (ac - ar) - (log1mexp(ac) - log1mexp(ar));
      float dLo = -beta * sigmoid(-lo);
      pairLoss[i] = -beta * logSigmoid(lo);
      pairRatio[i] = logSigmoid(lo);
      pairOdds[i] = lo;
      rowW[c] = -(dLo * (-1.0 / expm1_(ac))) / lc / d;
      rowW[r] = -(dLo * (1.0 / expm1_(ar))) / lr / d;
      continue;
    }
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
    float sRatio = 0.0, sOdds = 0.0, sAc = 0.0, sAr = 0.0;
    for (uint i = 0u; i < pairs; ++i) {
      uint c = 2u * i, r = c + 1u;
      float pc_ = policy[pc.boff[0] + c], pr = policy[pc.boff[0] + r];
      float ac = pc_ / max(len[pc.boff[2] + c], 1.0), ar = pr / max(len[pc.boff[2] + r], 1.0);
      bool scores = pc.kind == 4u, orpo = pc.kind == 5u;
      float rc = scores ? pc_ : orpo ? beta * ac : beta * (pc_ - ref[pc.boff[1] + c]);
      float rr = scores ? pr : orpo ? beta * ar : beta * (pr - ref[pc.boff[1] + r]);
      sLoss += pairLoss[i]; sRc += rc; sRr += rr; sAcc += rc > rr ? 1.0 : 0.0;
      sPc += pc_; sPr += pr; chosenLen += len[pc.boff[2] + c];
      sAc += ac; sAr += ar; sRatio += pairRatio[i]; sOdds += pairOdds[i];
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
    metrics[m + 4u] += pc.kind == 5u ? sAc : sPc; metrics[m + 5u] += pc.kind == 5u ? sAr : sPr;
    metrics[m + 6u] += float(pairs);
    metrics[m + 7u] += sRatio; metrics[m + 8u] += sOdds;
  }
  barrier();
  uint n = pc.rows * pc.tokens;
  for (uint i = tid; i < n; i += nt) {
    uint row = i / pc.tokens;
    tokenWeights[pc.boff[4] + i] = rowW[row] + ((row & 1u) == 0u ? rpoW : 0.0);
  }
}
