import VKFCore

/// One decoder layer's inference forward over new tokens at positions past..<past+Tnew,
/// attending over the layer's KV cache: the same math as `DecoderLayer.forward` (same
/// `Linear`s, RMSNorm, RoPE, grouped-query matmuls), with keys and values of earlier tokens
/// read from the cache instead of recomputed, and nothing kept for a backward pass.
///
/// Legend: B batch, Tn new tokens per row, N = B·Tn, Tk = past + Tn keys per row, C hidden,
/// NH/KVH query/kv heads, G = NH/KVH, HS head size, F MLP width.
///
/// The causal mask needs no offset: `causalSoftmax` over (…, Tn, Tk) lets query row i see
/// keys j ≤ i + (Tk − Tn) = past + i, exactly its own position and every earlier one (within
/// the layer's sliding window, when it has one: the cache keeps every key, the mask hides
/// the old ones).
struct CachedDecoderLayer {
  let shape: TransformerShape
  let weights: DecoderLayerWeights
  let invFreq: Tensor
  /// This layer's cache, (P, B, KVH·HS) each.
  let keys, values: Tensor
  let scratch: InferenceScratch
  /// This layer's sliding window, 0 = none.
  var window = 0
  /// Each row's first attended key (B) for a left-padded batch, or nil.
  var keyStarts: Tensor?

  /// x (N, C) in scratch.x ← x + attention + MLP, in place; the new keys/values are stored
  /// in rows [past, past+Tn) of the cache. `scratch.positions` must hold past + t per token.
  func forward(_ be: Backend, batch b: Int, newTokens tn: Int, past: Int) throws {
    let s = shape, w = weights, sc = scratch
    let (nh, kvh, hs, g) = (s.heads, s.kvHeads, s.headDim, s.groupSize)
    let n = b * tn, tk = past + tn
    let x = try sc.x.leading([n, s.hidden]), h = try sc.h.leading([n, s.hidden])
    let proj = try sc.proj.leading([n, s.hidden])
    let positions = try sc.positions.leading([n])
    try be.rmsNorm(x, weight: w.inputNorm, weightOffset: s.normWeightOffset, eps: s.rmsNormEps, into: h, rstd: try sc.rstd.leading([n]))
    // q: (N, NH·HS) → rope over (N, NH, HS) → permuted head-major (B, NH, Tn, HS) into qA
    // With per-head q/k RMSNorm (Qwen3) the projection goes to qB and is normalised into qA.
    try w.q.forward(be, h, into: try (w.qNorm == nil ? sc.qA : sc.qB).leading([n, s.qWidth]))
    if let qn = w.qNorm {
      try be.rmsNorm(try sc.qB.leading([n * nh, hs]), weight: qn, weightOffset: s.normWeightOffset, eps: s.rmsNormEps,
                     into: try sc.qA.leading([n * nh, hs]), rstd: try sc.rstd.leading([n * nh]))
    }
    try be.rope(try sc.qA.leading([n, nh, hs]), positions: positions, invFreq: invFreq,
                into: try sc.qB.leading([n, nh, hs]))
    try be.permute(try sc.qB.leading([b, tn, nh, hs]), dims: [0, 2, 1, 3], into: try sc.qA.leading([b, nh, tn, hs]))
    // k, v: (N, KVH·HS) = (B, Tn, KVH·HS) → cache rows [past, tk) as (Tn, B, KVH·HS)
    try w.k.forward(be, h, into: try (w.kNorm == nil ? sc.kA : sc.kB).leading([n, s.kvWidth]))
    if let kn = w.kNorm {
      try be.rmsNorm(try sc.kB.leading([n * kvh, hs]), weight: kn, weightOffset: s.normWeightOffset, eps: s.rmsNormEps,
                     into: try sc.kA.leading([n * kvh, hs]), rstd: try sc.rstd.leading([n * kvh]))
    }
    try be.rope(try sc.kA.leading([n, kvh, hs]), positions: positions, invFreq: invFreq,
                into: try sc.kB.leading([n, kvh, hs]))
    try be.permute(try sc.kB.leading([b, tn, s.kvWidth]), dims: [1, 0, 2], into: try keys.rows(past..<tk))
    try w.v.forward(be, h, into: try sc.kA.leading([n, s.kvWidth]))
    try be.permute(try sc.kA.leading([b, tn, s.kvWidth]), dims: [1, 0, 2], into: try values.rows(past..<tk))
    // Cached prefix (Tk, B, KVH, HS) → head-major (B, KVH, Tk, HS), viewed (B·KVH, Tk, HS)
    let kHead = try sc.kHead.leading([b, kvh, tk, hs]), vHead = try sc.vHead.leading([b, kvh, tk, hs])
    try be.permute(try keys.rows(0..<tk).reshaped([tk, b, kvh, hs]), dims: [1, 2, 0, 3], into: kHead)
    try be.permute(try values.rows(0..<tk).reshaped([tk, b, kvh, hs]), dims: [1, 2, 0, 3], into: vHead)
    // scores (B·KVH, G·Tn, Tk) = q (B·KVH, G·Tn, HS) · kᵀ = (B·NH, Tn, Tk); causal softmax
    let scores = try sc.scores.leading([b * kvh, g * tn, tk]), probs = try sc.probs.leading([b * kvh, g * tn, tk])
    try be.matmul(try sc.qA.leading([b * kvh, g * tn, hs]), try kHead.reshaped([b * kvh, tk, hs]),
                  into: scores, transposeA: false, transposeB: true, alpha: 1, beta: 0)
    var softmaxScale = s.attentionScale
    if s.attentionSoftcap > 0 {  // Gemma 2: scaled scores capped, then the softmax unscaled
      try be.scale(scores, by: s.attentionScale, softcap: s.attentionSoftcap, into: scores)
      softmaxScale = 1
    }
    try be.causalSoftmax(try scores.reshaped([b * nh, tn, tk]), scale: softmaxScale,
                         window: window, keyStarts: keyStarts, into: try probs.reshaped([b * nh, tn, tk]))
    // out (B·KVH, G·Tn, HS) = P · v → (B, NH, Tn, HS) permuted to (B, Tn, NH, HS) = (N, NH·HS)
    try be.matmul(probs, try vHead.reshaped([b * kvh, tk, hs]), into: try sc.qB.leading([b * kvh, g * tn, hs]),
                  transposeA: false, transposeB: false, alpha: 1, beta: 0)
    try be.permute(try sc.qB.leading([b, nh, tn, hs]), dims: [0, 2, 1, 3], into: try sc.qA.leading([b, tn, nh, hs]))
    try w.o.forward(be, try sc.qA.leading([n, s.qWidth]), into: proj)
    if let norm = w.attnOutNorm {  // sandwich (Gemma 2/3): x += RMSNorm(o(attn)), through h
      try be.rmsNorm(proj, weight: norm, weightOffset: s.normWeightOffset, eps: s.rmsNormEps, into: h,
                     rstd: try sc.rstd.leading([n]))
      try be.add(x, h, alpha: 1, into: x)
    } else {
      try be.add(x, proj, alpha: 1, into: x)
    }
    // MLP
    try be.rmsNorm(x, weight: w.postNorm, weightOffset: s.normWeightOffset, eps: s.rmsNormEps, into: h, rstd: try sc.rstd.leading([n]))
    if let ex = w.experts {
      try expertsForward(be, ex, h, tokens: n, into: proj)
    } else {
      guard let gateProj = w.gate, let upProj = w.up, let downProj = w.down else {
        throw VKFError.other("CachedDecoderLayer: a dense layer without its MLP projections")
      }
      let gate = try sc.gate.leading([n, s.intermediate]), up = try sc.up.leading([n, s.intermediate])
      let act = try sc.act.leading([n, s.intermediate])
      try gateProj.forward(be, h, into: gate)
      try upProj.forward(be, h, into: up)
      try be.gatedActivation(s.activation, gate: gate, up: up, into: act)
      try downProj.forward(be, act, into: proj)
    }
    if let norm = w.mlpOutNorm {
      try be.rmsNorm(proj, weight: norm, weightOffset: s.normWeightOffset, eps: s.rmsNormEps, into: h,
                     rstd: try sc.rstd.leading([n]))
      try be.add(x, h, alpha: 1, into: x)
    } else {
      try be.add(x, proj, alpha: 1, into: x)
    }
  }

  /// A sparse layer's MLP on h (N, C) into out: route, run each token's K experts, combine
  /// (`DecoderLayer.expertsForward` without keeping anything).
  private func expertsForward(_ be: Backend, _ ex: ExpertWeights, _ h: Tensor, tokens n: Int, into out: Tensor) throws {
    guard let ms = shape.moe, let r = scratch.moe else {
      throw VKFError.other("CachedDecoderLayer: a sparse layer without routing buffers")
    }
    let m = r.routed, rows = [r.rowCount, ms.intermediate]
    let logits = try r.logits.leading([n, ms.experts])
    let probs = try m.probs.leading([n, ms.experts]), weights = try m.weights.leading([n, ms.topK])
    let experts = try m.experts.leading([n, ms.topK]), slots = try m.slots.leading([n, ms.topK])
    let (g, u, act) = (try scratch.gate.leading(rows), try scratch.up.leading(rows), try scratch.act.leading(rows))
    try ex.router.forward(be, h, into: logits)
    try be.moeRoute(logits: logits, topK: ms.topK, normalize: ms.normalizeTopK, probs: probs, weights: weights,
                    experts: experts)
    try be.moeDispatch(experts: experts, expertCount: ms.experts, alignment: r.alignment, offsets: m.offsets,
                       slots: slots, sources: m.sources)
    try be.moeGather(h, sources: m.sources, topK: ms.topK, weights: nil, into: r.inputs)
    try be.expertMatmul(r.inputs, ex.gate, experts: ms.experts, into: g, offsets: m.offsets, transposeB: true, beta: 0)
    try be.expertMatmul(r.inputs, ex.up, experts: ms.experts, into: u, offsets: m.offsets, transposeB: true, beta: 0)
    try ex.adapter?.gateUpForward(be, x: r.inputs, offsets: m.offsets, gate: g, up: u)
    try be.gatedActivation(shape.activation, gate: g, up: u, into: act)
    try be.expertMatmul(act, ex.down, experts: ms.experts, into: m.rows, offsets: m.offsets, transposeB: true, beta: 0)
    try ex.adapter?.downForward(be, x: act, offsets: m.offsets, into: m.rows)
    try be.moeCombine(m.rows, slots: slots, weights: weights, into: out, accumulate: false)
    if let w = ex.shared {
      // out += σ(h·scalarᵀ) ⊙ shared expert(h), on the pass's N tokens.
      guard let sc = r.shared, let gs = m.sharedGate, let us = m.sharedUp, let zs = m.sharedLogit else {
        throw VKFError.other("CachedDecoderLayer: a shared expert without its buffers")
      }
      let f = ms.sharedIntermediate
      let (g, u, z) = (try gs.leading([n, f]), try us.leading([n, f]), try zs.leading([n, 1]))
      let (act, so, sigma) = (try sc.act.leading([n, f]), try sc.out.leading([n, shape.hidden]), try sc.sigma.leading([n, 1]))
      try w.forward(be, x: h, activation: shape.activation, logit: z, sigma: sigma, gate: g, up: u, act: act,
                    output: so, into: out)
    }
  }
}
