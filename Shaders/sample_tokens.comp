#version 450
// variant: USE_SUBGROUP=1
// sample_tokens: ids[r] = row r's next token drawn from logits (see Swift
//   `SamplingParameters`).                                CPU twin: CPUBackend.sampleTokens
//   f(j) = logit, divided by (logit ≥ 0) or times (logit < 0) `penalty` where presence ≠ 0.
//   Greedy (temperature 0): the first j of max f. Otherwise g = f / temperature, and a token
//   is kept while key(g) ≥ low (key: unsigned order = float order):
//   - top-k: low = the k-th largest key — the largest t with #{key ≥ t} ≥ k, by bisection;
//   - top-p: with w = exp(g − max g) and S(t) = Σ_{kept, key ≤ t} w, the largest t with
//     S(t) ≤ (1 − p)·S(∞) is removed: low = t + 1 (bisection; S is monotone in t);
//   - draw: u = unit(seed, row, step) ∈ [0, 1) (Swift `TokenSampling.unit`); the kept token
//     where the running sum of w in index order first exceeds u·Σw. Each invocation sums a
//     contiguous chunk, invocation 0 scans the chunk sums, the one chunk holding u·Σw scans
//     its tokens; rounding past the end falls back to the last kept token.
//   presence[r, id] = 1 afterwards (when bound). entropy[r] (when bound) = H(softmax(l / T)),
//   T the temperature (1 when greedy), unpenalised and unfiltered: log Σe^z − Σe^z·z / Σe^z.
// Shapes: logits (rows, vocab) f32, presence (rows, vocab) i32, ids (rows) i32, entropy (rows) f32.
// Bindings: 0 logits (readonly), 1 presence (logits when hasPresence = 0; unused), 2 ids,
//   3 entropy (ids when hasEntropy = 0; unused).
// Push (after boff[8]): rows, vocab, temperature, topK, topP, penalty, seedLo, seedHi, step,
//   hasPresence, hasEntropy → Swift `SampleTokensPush`.
// Dispatch: one workgroup per row (2D grid), RED_WG invocations.
#include "common/push.glsl"
#include "common/grid.glsl"
#include "common/reduce.glsl"

layout(local_size_x_id = 0, local_size_y = 1, local_size_z = 1) in;

layout(set = 0, binding = 0) readonly buffer BufLogits { float logits[]; };
layout(set = 0, binding = 1) buffer BufPresence { int presence[]; };
layout(set = 0, binding = 2) buffer BufIds { int ids[]; };
layout(set = 0, binding = 3) buffer BufEntropy { float entropy[]; };

PUSH_BEGIN
  uint rows;
  uint vocab;
  float temperature;
  uint topK;
  float topP;
  float penalty;
  uint seedLo;
  uint seedHi;
  uint step;
  uint hasPresence;
  uint hasEntropy;
PUSH_END

const uint NONE = 0xFFFFFFFFu;
shared float arg_v[RED_WG];
shared uint arg_i[RED_WG];
shared float chunk_start[RED_WG + 1u];
shared uint chunk_last[RED_WG];
shared uint chosen;

uint lowbias32(uint x) {
  x ^= x >> 16; x *= 0x7feb352du;
  x ^= x >> 15; x *= 0x846ca68bu;
  x ^= x >> 16;
  return x;
}

uint order_key(float x) {
  uint u = floatBitsToUint(x);
  return (u & 0x80000000u) != 0u ? ~u : (u | 0x80000000u);
}

uint lb, pb;

float penalised(uint j) {
  float l = logits[lb + j];
  if (pc.hasPresence != 0u && pc.penalty != 1.0 && presence[pb + j] != 0) l = l < 0.0 ? l * pc.penalty : l / pc.penalty;
  return l;
}

float scaled(uint j) { return penalised(j) / pc.temperature; }

// The (value, index) pair with the largest value, the smallest index on ties.
uint wg_argmax(float v, uint i) {
  uint t = gl_LocalInvocationID.x;
  arg_v[t] = v; arg_i[t] = i;
  memoryBarrierShared();
  barrier();
  for (uint s = RED_WG / 2u; s > 0u; s >>= 1u) {
    if (t < s) {
      float v2 = arg_v[t + s]; uint i2 = arg_i[t + s];
      if (i2 != NONE && (arg_i[t] == NONE || v2 > arg_v[t] || (v2 == arg_v[t] && i2 < arg_i[t]))) {
        arg_v[t] = v2; arg_i[t] = i2;
      }
    }
    memoryBarrierShared();
    barrier();
  }
  uint r = arg_i[0];
  barrier();
  return r;
}

// Σ_{low ≤ key(g) ≤ t} exp(g − m) over the row (the same order for every t: monotone in t).
float mass_up_to(uint low, uint t, float m) {
  float s = 0.0;
  for (uint j = gl_LocalInvocationID.x; j < pc.vocab; j += RED_WG) {
    float g = scaled(j); uint k = order_key(g);
    if (k >= low && k <= t) s += exp(g - m);
  }
  return wg_reduce_sum(s);
}

uint ceil_mid(uint lo, uint hi) { uint d = hi - lo; return lo + (d >> 1) + (d & 1u); }

void main() {
  uint row = wg_linear_id();
  if (row >= pc.rows) return;  // uniform over the workgroup
  uint t = gl_LocalInvocationID.x;
  lb = pc.boff[0] + row * pc.vocab;
  pb = pc.boff[1] + row * pc.vocab;
  if (pc.hasEntropy != 0u) {
    float te = pc.temperature > 0.0 ? pc.temperature : 1.0;
    float mx = -3.402823466e38;
    for (uint j = t; j < pc.vocab; j += RED_WG) mx = max(mx, logits[lb + j] / te);
    mx = wg_reduce_max(mx);
    float s = 0.0, w = 0.0;
    for (uint j = t; j < pc.vocab; j += RED_WG) {
      float z = logits[lb + j] / te - mx, e = exp(z);
      s += e; w += e * z;
    }
    s = wg_reduce_sum(s);
    w = wg_reduce_sum(w);
    if (t == 0u) entropy[pc.boff[3] + row] = log(s) - w / s;
  }
  uint id;
  if (pc.temperature == 0.0) {
    float best = 0.0; uint bi = NONE;
    for (uint j = t; j < pc.vocab; j += RED_WG) {
      float v = penalised(j);
      if (bi == NONE || v > best) { best = v; bi = j; }
    }
    id = wg_argmax(best, bi);
  } else {
    float m = -3.402823466e38;
    for (uint j = t; j < pc.vocab; j += RED_WG) m = max(m, scaled(j));
    m = wg_reduce_max(m);
    uint low = 0u;
    if (pc.topK > 0u && pc.topK < pc.vocab) {
      uint lo = 0u, hi = NONE;
      while (lo < hi) {  // uniform: every invocation sees the same reduced count
        uint mid = ceil_mid(lo, hi);
        float c = 0.0;
        for (uint j = t; j < pc.vocab; j += RED_WG) c += order_key(scaled(j)) >= mid ? 1.0 : 0.0;
        if (wg_reduce_sum(c) >= float(pc.topK)) lo = mid; else hi = mid - 1u;
      }
      low = lo;
    }
    if (pc.topP < 1.0) {
      float cut = (1.0 - pc.topP) * mass_up_to(low, NONE, m);
      uint lo = 0u, hi = NONE;
      while (lo < hi) {
        uint mid = ceil_mid(lo, hi);
        if (mass_up_to(low, mid, m) <= cut) lo = mid; else hi = mid - 1u;
      }
      low = max(low, lo + 1u);
    }
    // Inverse CDF: chunk sums, a scan by invocation 0, then the chunk holding the target.
    uint chunk = (pc.vocab + RED_WG - 1u) / RED_WG;
    uint begin = min(t * chunk, pc.vocab), end = min(begin + chunk, pc.vocab);
    float s = 0.0; uint last = NONE;
    for (uint j = begin; j < end; j++) {
      float g = scaled(j);
      if (order_key(g) >= low) { s += exp(g - m); last = j; }
    }
    arg_v[t] = s; chunk_last[t] = last;
    if (t == 0u) chosen = NONE;
    memoryBarrierShared();
    barrier();
    if (t == 0u) {
      float total = 0.0;
      for (uint i = 0u; i < RED_WG; i++) { chunk_start[i] = total; total += arg_v[i]; }
      chunk_start[RED_WG] = total;
    }
    memoryBarrierShared();
    barrier();
    uint key = lowbias32(pc.seedLo ^ lowbias32(pc.seedHi ^ lowbias32(pc.step ^ lowbias32(row))));
    float target = float(key >> 8) * (1.0 / 16777216.0) * chunk_start[RED_WG];
    if (s > 0.0 && chunk_start[t] <= target && target < chunk_start[t + 1u]) {
      float acc = chunk_start[t];
      uint pick = last;
      for (uint j = begin; j < end; j++) {
        float g = scaled(j);
        if (order_key(g) < low) continue;
        acc += exp(g - m);
        if (target < acc) { pick = j; break; }
      }
      chosen = pick;
    }
    memoryBarrierShared();
    barrier();
    if (t == 0u && chosen == NONE) {  // the target rounded to the end of the mass
      for (uint i = RED_WG; i > 0u; i--) if (chunk_last[i - 1u] != NONE) { chosen = chunk_last[i - 1u]; break; }
    }
    memoryBarrierShared();
    barrier();
    id = chosen;
  }
  if (t == 0u) {
    ids[pc.boff[2] + row] = int(id);
    if (pc.hasPresence != 0u) presence[pb + id] = 1;
  }
}
