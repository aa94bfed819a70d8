import VKFCore

// A sparse layer's MLP: a router picks K of E experts per token, each expert a gated MLP, and
// the token's output is their outputs weighted by the routing weights (transformers'
// MixtralSparseMoeBlock / Qwen3MoeSparseMoeBlock).
// Legend: N tokens, E experts, K experts per token, R expert rows, C hidden, F expert width.
//
// The (token, expert) pairs run as rows grouped by expert (`Backend.moeDispatch`): each
// projection is one grouped matmul over all experts, and nothing reads the routing on the host.

extension DecoderLayer {
  /// n2 (the saved h2) → the weighted sum of its experts' outputs, into `out` (N, C); keeps
  /// the routing and the experts' outputs in `routed` and gate / up rows in `a`. Adds the
  /// layer's routing to the load-balancing sums unless `recomputing` (they were added once).
  func expertsForward(_ be: Backend, _ ex: ExpertWeights, saved a: LayerActivations, routed m: RoutedActivations,
                      into out: Tensor, recomputing: Bool) throws {
    let (ms, sc) = try moeParts()
    let (g, u, act) = try expertRows(a)
    try ex.router.forward(be, a.h2, into: sc.router)  // logits (N, E)
    try be.moeRoute(logits: sc.router, topK: ms.topK, normalize: ms.normalizeTopK, probs: m.probs,
                    weights: m.weights, experts: m.experts)
    try be.moeDispatch(experts: m.experts, expertCount: ms.experts, alignment: sc.alignment, offsets: m.offsets,
                       slots: m.slots, sources: m.sources)
    try be.moeGather(a.h2, sources: m.sources, topK: ms.topK, weights: nil, into: sc.rowsA)  // (R, C)
    try be.expertMatmul(sc.rowsA, ex.gate, experts: ms.experts, into: g, offsets: m.offsets, transposeB: true, beta: 0)
    try be.expertMatmul(sc.rowsA, ex.up, experts: ms.experts, into: u, offsets: m.offsets, transposeB: true, beta: 0)
    try ex.adapter?.gateUpForward(be, x: sc.rowsA, offsets: m.offsets, gate: g, up: u)
    try be.gatedActivation(shape.activation, gate: g, up: u, into: act)
    try be.expertMatmul(act, ex.down, experts: ms.experts, into: m.rows, offsets: m.offsets, transposeB: true, beta: 0)
    try ex.adapter?.downForward(be, x: act, offsets: m.offsets, into: m.rows)
    try be.moeCombine(m.rows, slots: m.slots, weights: m.weights, into: out, accumulate: false)
    if let shared = ex.shared { try sharedExpertForward(be, shared, saved: a, routed: m, into: out) }
    if !recomputing, ms.auxLossCoefficient > 0 {
      try be.moeRouterStatistics(probs: m.probs, experts: m.experts, tokenMask: sc.tokenMask, into: sc.stats)
    }
  }

  /// dL/dy in `dResidual` → dL/dn2 in `dHidden`, accumulating the experts' and the router's
  /// gradients (and the load-balancing loss's, from `auxGradient`, when it is on).
  func expertsBackward(_ be: Backend, _ ex: ExpertWeights, saved a: LayerActivations, routed m: RoutedActivations) throws {
    let (ms, sc) = try moeParts()
    let ar = arena
    let (g, u, act) = try expertRows(a)
    let rows = [sc.rowCount, ms.intermediate]
    let (dAct, dGate, dUp) = (try ar.dAct.leading(rows), try ar.dGate.leading(rows), try ar.dUp.leading(rows))
    let dOut = ar.dResidual
    // Through the combine: the routing weights' gradient, and each row's share of dL/dy.
    try be.moeCombineBackward(dOut, rows: m.rows, slots: m.slots, dWeights: sc.dWeights)
    try be.moeGather(dOut, sources: m.sources, topK: ms.topK, weights: m.weights, into: sc.rowsA)  // dL/d rows
    // Through down: act is recomputed (not kept per layer).
    try be.gatedActivation(shape.activation, gate: g, up: u, into: act)
    try be.expertMatmul(sc.rowsA, ex.down, experts: ms.experts, into: dAct, offsets: m.offsets, transposeB: false, beta: 0)
    try ex.adapter?.downBackward(be, dy: sc.rowsA, x: act, offsets: m.offsets, dx: dAct)
    if let dDown = ex.downGrad {
      try be.groupedMatmul(sc.rowsA, act, into: dDown, offsets: m.offsets, transposeA: true, transposeB: false, beta: 1)
    }
    try be.gatedActivationBackward(shape.activation, dAct, gate: g, up: u, dGate: dGate, dUp: dUp)
    // Through gate and up: their inputs gathered again (rowsA is free), then dL/d rows into rowsB.
    try be.moeGather(a.h2, sources: m.sources, topK: ms.topK, weights: nil, into: sc.rowsA)
    if let dG = ex.gateGrad {
      try be.groupedMatmul(dGate, sc.rowsA, into: dG, offsets: m.offsets, transposeA: true, transposeB: false, beta: 1)
    }
    if let dU = ex.upGrad {
      try be.groupedMatmul(dUp, sc.rowsA, into: dU, offsets: m.offsets, transposeA: true, transposeB: false, beta: 1)
    }
    try be.expertMatmul(dGate, ex.gate, experts: ms.experts, into: sc.rowsB, offsets: m.offsets, transposeB: false, beta: 0)
    try be.expertMatmul(dUp, ex.up, experts: ms.experts, into: sc.rowsB, offsets: m.offsets, transposeB: false, beta: 1)
    try ex.adapter?.gateUpBackward(be, dGate: dGate, dUp: dUp, x: sc.rowsA, offsets: m.offsets, dx: sc.rowsB)
    try be.moeCombine(sc.rowsB, slots: m.slots, weights: nil, into: ar.dHidden, accumulate: false)
    // Through the router: top-K weights (and the load-balancing loss) → logits → n2.
    try be.moeRouteBackward(dWeights: sc.dWeights, probs: m.probs, weights: m.weights, experts: m.experts,
                            normalize: ms.normalizeTopK, auxGradient: ms.auxLossCoefficient > 0 ? sc.auxGradient : nil,
                            tokenMask: sc.tokenMask, into: sc.router)
    try ex.router.backward(be, dy: sc.router, x: a.h2, dx: ar.dHidden, accumulateInput: true, ones: ar.ones)
    if let shared = ex.shared { try sharedExpertBackward(be, shared, saved: a, routed: m) }
  }

  /// out (N, C) += σ(h2·scalarᵀ) ⊙ down(act(h2·gateᵀ) ⊙ h2·upᵀ): Qwen2-MoE's shared expert on
  /// every token, its gate and up products and the scalar gate's logit kept for the backward.
  private func sharedExpertForward(_ be: Backend, _ w: SharedExpertWeights, saved a: LayerActivations,
                                   routed m: RoutedActivations, into out: Tensor) throws {
    guard let sc = arena.moe?.shared, let g = m.sharedGate, let u = m.sharedUp, let z = m.sharedLogit else {
      throw VKFError.other("DecoderLayer: a shared expert in an arena without its buffers")
    }
    try w.forward(be, x: a.h2, activation: shape.activation, logit: z, sigma: sc.sigma, gate: g, up: u, act: sc.act,
                  output: sc.out, into: out)
  }

  /// dL/dy (in `dResidual`) through the shared expert and its scalar gate: their gradients,
  /// and dL/dh2 added into `dHidden`.
  private func sharedExpertBackward(_ be: Backend, _ w: SharedExpertWeights, saved a: LayerActivations,
                                    routed m: RoutedActivations) throws {
    let ar = arena
    guard let sc = ar.moe?.shared, let g = m.sharedGate, let u = m.sharedUp, let z = m.sharedLogit,
          let onesC = ar.onesHidden else {
      throw VKFError.other("DecoderLayer: a shared expert in an arena without its buffers")
    }
    let dOut = ar.dResidual, n = dOut.rowCount
    // The expert's output again (act is not kept per layer), then dL/dσ = Σ_c dy ⊙ output.
    try be.gatedActivation(shape.activation, gate: g, up: u, into: sc.act)
    try w.down.forward(be, sc.act, into: sc.out)
    try be.mul(sc.out, dOut, into: sc.out)
    try be.matmul(sc.out, try onesC.reshaped([onesC.count, 1]), into: sc.dSigma, transposeA: false, transposeB: false,
                  alpha: 1, beta: 0)
    try be.activationBackward(.sigmoid, sc.dSigma, x: z, into: sc.dSigma)  // dL/dlogit (N, 1)
    try w.scalar.backward(be, dy: sc.dSigma, x: a.h2, dx: ar.dHidden, accumulateInput: true, ones: ar.ones)
    // dL/d(output) = σ ⊙ dy, then down, the gated activation, gate and up.
    try be.activation(.sigmoid, z, into: sc.sigma)
    try be.scaleRows(dOut, weights: try sc.sigma.reshaped([n]), into: sc.out)
    try w.down.backward(be, dy: sc.out, x: sc.act, dx: sc.dAct, accumulateInput: false, ones: ar.ones)
    try be.gatedActivationBackward(shape.activation, sc.dAct, gate: g, up: u, dGate: sc.act, dUp: sc.dUp)
    try w.gate.backward(be, dy: sc.act, x: a.h2, dx: ar.dHidden, accumulateInput: true, ones: ar.ones)
    try w.up.backward(be, dy: sc.dUp, x: a.h2, dx: ar.dHidden, accumulateInput: true, ones: ar.ones)
  }

  /// The model's expert settings and the arena's expert scratch.
  private func moeParts() throws -> (MoEShape, MoEScratch) {
    guard let ms = shape.moe, let sc = arena.moe else {
      throw VKFError.other("DecoderLayer: a sparse layer in an arena without expert buffers")
    }
    return (ms, sc)
  }

  /// The expert rows' gate, up and activation (R, F): leading views of the MLP buffers.
  private func expertRows(_ a: LayerActivations) throws -> (Tensor, Tensor, Tensor) {
    let (ms, sc) = try moeParts()
    let rows = [sc.rowCount, ms.intermediate]
    return (try a.gate.leading(rows), try a.up.leading(rows), try a.act.leading(rows))
  }
}

extension SharedExpertWeights {
  /// out (N, C) += σ(x·scalarᵀ) ⊙ down(act(x·gateᵀ) ⊙ x·upᵀ) for x (N, C): the logit z (N, 1),
  /// gate and up (N, Fs) are kept in the given buffers; σ (N, 1), act (N, Fs) and the
  /// expert's output (N, C) are scratch.
  func forward(_ be: Backend, x: Tensor, activation: GatedActivation, logit z: Tensor, sigma: Tensor, gate g: Tensor,
               up u: Tensor, act: Tensor, output so: Tensor, into out: Tensor) throws {
    try scalar.forward(be, x, into: z)
    try be.activation(.sigmoid, z, into: sigma)
    try gate.forward(be, x, into: g)
    try up.forward(be, x, into: u)
    try be.gatedActivation(activation, gate: g, up: u, into: act)
    try down.forward(be, act, into: so)
    try be.scaleRows(so, weights: try sigma.reshaped([sigma.count]), into: so)
    try be.add(out, so, alpha: 1, into: out)
  }
}
