import VKFCore

/// One pre-norm Llama decoder layer as an explicit forward/backward pair over Backend ops:
/// x → x1 = x + o(attn(rope(q(n1)), rope(k(n1)), v(n1))) → y = x1 + down(silu(gate(n2))·up(n2)),
/// with n1 = RMSNorm(x), n2 = RMSNorm(x1). Matches transformers' LlamaDecoderLayer /
/// Qwen2DecoderLayer (eager attention, repeat_kv head order).
///
/// Legend: B batch, T tokens per row, N = B·T, C hidden, NH/KVH query/kv heads,
/// G = NH/KVH queries per kv head, HS head size, F MLP width.
///
/// Grouped-query attention without copies: head-major queries (B, NH, T, HS) are, in memory,
/// (B·KVH, G·T, HS) — query head h = kvHead·G + g, as repeat_kv orders them — so each kv
/// head's G·T query rows meet its (T, HS) keys in one batched matmul, and the (B·KVH, G·T, T)
/// scores are the (B·NH, T, T) the causal softmax expects. dk and dv sum over the group
/// inside the matmul.
struct DecoderLayer {
  let shape: TransformerShape
  let weights: DecoderLayerWeights
  let arena: ActivationArena
  let invFreq: Tensor
  /// `Backend.attention` (no T×T buffers) instead of scores → causal softmax → P·v.
  var fused = true
  /// This layer's sliding window (keys i − window < j ≤ i), 0 = full causal attention.
  var window = 0

  private var b: Int { arena.batch }
  private var t: Int { arena.tokens }
  var n: Int { arena.batch * arena.tokens }
  private var attentionScale: Float { shape.attentionScale }

  // MARK: - Forward

  /// Runs the layer on x into y, keeping what the backward needs in `a`. With
  /// `recomputing`, stops after the MLP activation (the backward needs no more).
  // x: (N, C) → y: (N, C)
  func forward(_ be: Backend, x: Tensor, y: Tensor, saving a: LayerActivations,
               recomputing: Bool = false) throws {
    let s = shape, w = weights
    let (nh, kvh, hs) = (s.heads, s.kvHeads, s.headDim)
    try be.rmsNorm(x, weight: w.inputNorm, weightOffset: s.normWeightOffset, eps: s.rmsNormEps, into: a.h1,
                   rstd: a.rstd1)
    // q: (N, NH·HS) [→ per-head RMSNorm] → rope over (N, NH, HS) → (B, T, NH, HS) permuted
    // to (B, NH, T, HS)
    try w.q.forward(be, a.h1, into: a.qRaw ?? arena.qA)
    if let qn = w.qNorm, let raw = a.qRaw, let rstd = a.qRstd {
      try be.rmsNorm(try raw.reshaped([n * nh, hs]), weight: qn, weightOffset: s.normWeightOffset, eps: s.rmsNormEps,
                     into: try arena.qA.reshaped([n * nh, hs]), rstd: rstd)
    }
    try be.rope(try arena.qA.reshaped([n, nh, hs]), positions: arena.positions, invFreq: invFreq,
                into: try arena.qB.reshaped([n, nh, hs]))
    try be.permute(try arena.qB.reshaped([b, t, nh, hs]), dims: [0, 2, 1, 3], into: a.q)
    try w.k.forward(be, a.h1, into: a.kRaw ?? arena.kA)
    if let kn = w.kNorm, let raw = a.kRaw, let rstd = a.kRstd {
      try be.rmsNorm(try raw.reshaped([n * kvh, hs]), weight: kn, weightOffset: s.normWeightOffset, eps: s.rmsNormEps,
                     into: try arena.kA.reshaped([n * kvh, hs]), rstd: rstd)
    }
    try be.rope(try arena.kA.reshaped([n, kvh, hs]), positions: arena.positions, invFreq: invFreq,
                into: try arena.kB.reshaped([n, kvh, hs]))
    try be.permute(try arena.kB.reshaped([b, t, kvh, hs]), dims: [0, 2, 1, 3], into: a.k)
    try w.v.forward(be, a.h1, into: arena.kA)
    try be.permute(try arena.kA.reshaped([b, t, kvh, hs]), dims: [0, 2, 1, 3], into: a.v)
    if fused {
      // out (B, NH, T, HS) and each row's log-sum-exp, key block by key block.
      try be.attention(q: a.q, k: a.k, v: a.v, scale: attentionScale, window: window,
                       softcap: s.attentionSoftcap, into: try arena.qA.reshaped([b, nh, t, hs]), lse: a.probs)
    } else {
      guard s.attentionSoftcap == 0 else {
        throw VKFError.other("DecoderLayer: attention soft-capping runs on the fused attention only "
          + "(the unfused reference path keeps no capped scores for its backward)")
      }
      // scores (B·KVH, G·T, T) = q (B·KVH, G·T, HS) · kᵀ; softmax over (B·NH, T, T)
      try be.matmul(try grouped(a.q), try perKV(a.k), into: try groupedScores(arena.scores),
                    transposeA: false, transposeB: true, alpha: 1, beta: 0)
      try be.causalSoftmax(arena.scores, scale: attentionScale, window: window, into: a.probs)
      // out (B·KVH, G·T, HS) = P · v
      try be.matmul(try groupedScores(a.probs), try perKV(a.v), into: try grouped(arena.qA),
                    transposeA: false, transposeB: false, alpha: 1, beta: 0)
    }
    // out (B, NH, T, HS) permuted to (B, T, NH, HS) = (N, NH·HS)
    try be.permute(try arena.qA.reshaped([b, nh, t, hs]), dims: [0, 2, 1, 3],
                   into: try a.attn.reshaped([b, t, nh, hs]))
    if let norm = w.attnOutNorm, let oOut = a.oOut, let rstd = a.rstd3 {
      // Sandwich (Gemma 2/3): x1 = x + RMSNorm(o(attn)).
      try w.o.forward(be, a.attn, into: oOut)
      try be.rmsNorm(oOut, weight: norm, weightOffset: s.normWeightOffset, eps: s.rmsNormEps, into: a.x1, rstd: rstd)
    } else {
      try w.o.forward(be, a.attn, into: a.x1)
    }
    try be.add(a.x1, x, alpha: 1, into: a.x1)
    // MLP
    try be.rmsNorm(a.x1, weight: w.postNorm, weightOffset: s.normWeightOffset, eps: s.rmsNormEps, into: a.h2, rstd: a.rstd2)
    if let ex = w.experts, let m = a.moe {
      // Sparse: y = x1 + Σ_k w_k·expert_k(n2); the backward reads the experts' outputs, so a
      // recomputing pass runs it whole.
      try expertsForward(be, ex, saved: a, routed: m, into: y, recomputing: recomputing)
      try be.add(y, a.x1, alpha: 1, into: y)
      return
    }
    guard let gate = w.gate, let up = w.up, let down = w.down else {
      throw VKFError.other("DecoderLayer: a dense layer without its MLP projections")
    }
    let (g, u, act) = try denseMLP(a)
    try gate.forward(be, a.h2, into: g)
    try up.forward(be, a.h2, into: u)
    try be.gatedActivation(s.activation, gate: g, up: u, into: act)
    if let norm = w.mlpOutNorm, let downOut = a.downOut, let rstd = a.rstd4 {
      // Sandwich: y = x1 + RMSNorm(down(act)). A recomputing pass runs it too (the backward
      // reads down's output and 1/rms), rewriting y with the same values.
      try down.forward(be, act, into: downOut)
      try be.rmsNorm(downOut, weight: norm, weightOffset: s.normWeightOffset, eps: s.rmsNormEps, into: y, rstd: rstd)
      try be.add(y, a.x1, alpha: 1, into: y)
      return
    }
    if recomputing { return }
    try down.forward(be, act, into: y)
    try be.add(y, a.x1, alpha: 1, into: y)
  }

  /// The dense MLP's gate, up and activation buffers as (N, F) (leading views of the arena's
  /// MLP buffers, which a mixture-of-experts model sizes for its expert rows too).
  func denseMLP(_ a: LayerActivations) throws -> (gate: Tensor, up: Tensor, act: Tensor) {
    let shape = [n, self.shape.intermediate]
    return (try a.gate.leading(shape), try a.up.leading(shape), try a.act.leading(shape))
  }

  // MARK: - Backward

  /// Turns dL/dy in `dResidual` into dL/dx (in place), accumulating parameter gradients.
  // x: (N, C)  dResidual: (N, C) dL/dy → dL/dx
  func backward(_ be: Backend, x: Tensor, saved a: LayerActivations) throws {
    let s = shape, w = weights, ar = arena, ones = arena.ones
    let (nh, kvh, hs) = (s.heads, s.kvHeads, s.headDim)
    let dRes = ar.dResidual
    if let ex = w.experts, let m = a.moe {
      try expertsBackward(be, ex, saved: a, routed: m)  // dL/dn2 into dHidden
    } else {
      guard let gate = w.gate, let up = w.up, let down = w.down else {
        throw VKFError.other("DecoderLayer: a dense layer without its MLP projections")
      }
      // MLP: y = x1 + down(act); act = silu(gate)·up is not kept per layer: recomputed here.
      let (g, u, act) = try denseMLP(a)
      let shape = [n, s.intermediate]
      let (dAct, dGate, dUp) = (try ar.dAct.leading(shape), try ar.dGate.leading(shape), try ar.dUp.leading(shape))
      try be.gatedActivation(s.activation, gate: g, up: u, into: act)
      let dDown = try throughOutputNorm(be, w.mlpOutNorm, x: a.downOut, rstd: a.rstd4, dWeight: w.mlpOutNormGrad)
      try down.backward(be, dy: dDown, x: act, dx: dAct, accumulateInput: false, ones: ones)
      try be.gatedActivationBackward(s.activation, dAct, gate: g, up: u, dGate: dGate, dUp: dUp)
      try gate.backward(be, dy: dGate, x: a.h2, dx: ar.dHidden, accumulateInput: false, ones: ones)
      try up.backward(be, dy: dUp, x: a.h2, dx: ar.dHidden, accumulateInput: true, ones: ones)
    }
    try be.rmsNormBackward(ar.dHidden, x: a.x1, weight: w.postNorm, weightOffset: s.normWeightOffset, rstd: a.rstd2, dx: ar.dTemp,
                           dWeight: w.postNormGrad)
    try be.add(dRes, ar.dTemp, alpha: 1, into: dRes)  // dRes = dL/dx1
    // Attention: x1 = x + o(attn)
    let dO = try throughOutputNorm(be, w.attnOutNorm, x: a.oOut, rstd: a.rstd3, dWeight: w.attnOutNormGrad)
    try w.o.backward(be, dy: dO, x: a.attn, dx: ar.dAttn, accumulateInput: false, ones: ones)
    let dOut = try ar.qA.reshaped([b, nh, t, hs])
    try be.permute(try ar.dAttn.reshaped([b, t, nh, hs]), dims: [0, 2, 1, 3], into: dOut)
    if fused {
      // The forward's output, head-major, in dAttn (free once dOut is permuted out of it).
      let out = try ar.dAttn.reshaped([b, nh, t, hs])
      try be.permute(try a.attn.reshaped([b, t, nh, hs]), dims: [0, 2, 1, 3], into: out)
      try be.attentionBackward(dOut, q: a.q, k: a.k, v: a.v, out: out, lse: a.probs, scale: attentionScale,
                               window: window, softcap: shape.attentionSoftcap, delta: ar.scores, dq: try ar.qB.reshaped([b, nh, t, hs]),
                               dk: try ar.dkHead.reshaped([b, kvh, t, hs]), dv: try ar.dvHead.reshaped([b, kvh, t, hs]))
    } else {
      // dP = dO·vᵀ, dv = Pᵀ·dO (summed over each kv group)
      try be.matmul(try grouped(dOut), try perKV(a.v), into: try groupedScores(ar.scores),
                    transposeA: false, transposeB: true, alpha: 1, beta: 0)
      try be.matmul(try groupedScores(a.probs), try grouped(dOut), into: try perKV(ar.dvHead),
                    transposeA: true, transposeB: false, alpha: 1, beta: 0)
      try be.causalSoftmaxBackward(ar.scores, out: a.probs, scale: attentionScale, into: ar.scores)
      // dq = dS·k, dk = dSᵀ·q (head-major)
      try be.matmul(try groupedScores(ar.scores), try perKV(a.k), into: try grouped(ar.qB),
                    transposeA: false, transposeB: false, alpha: 1, beta: 0)
      try be.matmul(try groupedScores(ar.scores), try grouped(a.q), into: try perKV(ar.dkHead),
                    transposeA: true, transposeB: false, alpha: 1, beta: 0)
    }
    // Back to token-major and through RoPE: dq → dAttn (N, NH·HS), dk → kB, dv → kA (N, KVH·HS)
    try be.permute(try ar.qB.reshaped([b, nh, t, hs]), dims: [0, 2, 1, 3],
                   into: try ar.qA.reshaped([b, t, nh, hs]))
    try be.ropeBackward(try ar.qA.reshaped([n, nh, hs]), positions: ar.positions, invFreq: invFreq,
                        into: try ar.dAttn.reshaped([n, nh, hs]))
    try be.permute(try ar.dkHead.reshaped([b, kvh, t, hs]), dims: [0, 2, 1, 3],
                   into: try ar.kA.reshaped([b, t, kvh, hs]))
    try be.ropeBackward(try ar.kA.reshaped([n, kvh, hs]), positions: ar.positions, invFreq: invFreq,
                        into: try ar.kB.reshaped([n, kvh, hs]))
    try be.permute(try ar.dvHead.reshaped([b, kvh, t, hs]), dims: [0, 2, 1, 3],
                   into: try ar.kA.reshaped([b, t, kvh, hs]))
    // Through the per-head q/k RMSNorm (Qwen3): dq → qA, dk → dkHead (both free here).
    var dq = ar.dAttn, dk = ar.kB
    if let qn = w.qNorm, let raw = a.qRaw, let rstd = a.qRstd {
      try be.rmsNormBackward(try ar.dAttn.reshaped([n * nh, hs]), x: try raw.reshaped([n * nh, hs]), weight: qn, weightOffset: s.normWeightOffset,
                             rstd: rstd, dx: try ar.qA.reshaped([n * nh, hs]), dWeight: w.qNormGrad)
      dq = ar.qA
    }
    if let kn = w.kNorm, let raw = a.kRaw, let rstd = a.kRstd {
      try be.rmsNormBackward(try ar.kB.reshaped([n * kvh, hs]), x: try raw.reshaped([n * kvh, hs]), weight: kn, weightOffset: s.normWeightOffset,
                             rstd: rstd, dx: try ar.dkHead.reshaped([n * kvh, hs]), dWeight: w.kNormGrad)
      dk = try ar.dkHead.reshaped([n, s.kvWidth])
    }
    try w.q.backward(be, dy: dq, x: a.h1, dx: ar.dHidden, accumulateInput: false, ones: ones)
    try w.k.backward(be, dy: dk, x: a.h1, dx: ar.dHidden, accumulateInput: true, ones: ones)
    try w.v.backward(be, dy: ar.kA, x: a.h1, dx: ar.dHidden, accumulateInput: true, ones: ones)
    try be.rmsNormBackward(ar.dHidden, x: x, weight: w.inputNorm, weightOffset: s.normWeightOffset, rstd: a.rstd1, dx: ar.dTemp,
                           dWeight: w.inputNormGrad)
    try be.add(dRes, ar.dTemp, alpha: 1, into: dRes)  // dRes = dL/dx
  }

  /// dL/d(a block's output before its sandwich norm) from dL/dy in `dResidual`: into `dTemp`
  /// through the norm (accumulating its weight's gradient), or `dResidual` itself without one.
  /// `dTemp` must be free: it is, before the MLP's and before the attention's input gradients.
  func throughOutputNorm(_ be: Backend, _ norm: Tensor?, x: Tensor?, rstd: Tensor?,
                                 dWeight: Tensor?) throws -> Tensor {
    guard let norm, let x, let rstd else { return arena.dResidual }
    try be.rmsNormBackward(arena.dResidual, x: x, weight: norm, weightOffset: shape.normWeightOffset, rstd: rstd,
                           dx: arena.dTemp, dWeight: dWeight)
    return arena.dTemp
  }

  // MARK: - Grouped views

  /// Head-major queries (B, NH, T, HS) as (B·KVH, G·T, HS).
  private func grouped(_ q: Tensor) throws -> Tensor {
    try q.reshaped([b * shape.kvHeads, shape.groupSize * t, shape.headDim])
  }

  /// Head-major keys/values (B, KVH, T, HS) as (B·KVH, T, HS).
  private func perKV(_ k: Tensor) throws -> Tensor {
    try k.reshaped([b * shape.kvHeads, t, shape.headDim])
  }

  /// Scores (B, NH, T, T) as (B·KVH, G·T, T).
  private func groupedScores(_ p: Tensor) throws -> Tensor {
    try p.reshaped([b * shape.kvHeads, shape.groupSize * t, t])
  }
}
