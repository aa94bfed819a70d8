// The mixture-of-experts ops of `CheckingBackend`: each runs on both backends and is compared.

extension CheckingBackend {
  public var moeRowAlignment: Int { primary.moeRowAlignment }

  public func moeRoute(logits: Tensor, topK: Int, normalize: Bool, probs: Tensor, weights: Tensor,
                       experts: Tensor) throws {
    try check(.moeRoute, inputs: [logits], outputs: [probs, weights, experts]) { b, m in
      try b.moeRoute(logits: m(logits), topK: topK, normalize: normalize, probs: m(probs), weights: m(weights),
                     experts: m(experts))
    }
  }
  public func moeDispatch(experts: Tensor, expertCount: Int, alignment: Int, offsets: Tensor, slots: Tensor,
                          sources: Tensor) throws {
    // The reference uses the primary's alignment so the layouts compare row for row.
    try check(.moeDispatch, inputs: [experts], outputs: [offsets, slots, sources]) { b, m in
      try b.moeDispatch(experts: m(experts), expertCount: expertCount, alignment: alignment, offsets: m(offsets),
                        slots: m(slots), sources: m(sources))
    }
  }
  public func moeGather(_ x: Tensor, sources: Tensor, topK: Int, weights: Tensor?, into rows: Tensor) throws {
    try check(.moeGather, inputs: [x, sources, weights], outputs: [rows]) { b, m in
      try b.moeGather(m(x), sources: m(sources), topK: topK, weights: weights.map(m), into: m(rows))
    }
  }
  public func moeCombine(_ rows: Tensor, slots: Tensor, weights: Tensor?, into out: Tensor, accumulate: Bool) throws {
    try check(.moeCombine, inputs: [rows, slots, weights], outputs: [out]) { b, m in
      try b.moeCombine(m(rows), slots: m(slots), weights: weights.map(m), into: m(out), accumulate: accumulate)
    }
  }
  public func moeCombineBackward(_ dOut: Tensor, rows: Tensor, slots: Tensor, dWeights: Tensor) throws {
    try check(.moeCombineBackward, inputs: [dOut, rows, slots], outputs: [dWeights]) { b, m in
      try b.moeCombineBackward(m(dOut), rows: m(rows), slots: m(slots), dWeights: m(dWeights))
    }
  }
  public func groupedMatmul(_ a: Tensor, _ bt: Tensor, into c: Tensor, offsets: Tensor, transposeA: Bool,
                            transposeB: Bool, beta: Float) throws {
    try check(.groupedMatmul, inputs: [a, bt, offsets], outputs: [c]) { b, m in
      try b.groupedMatmul(m(a), m(bt), into: m(c), offsets: m(offsets), transposeA: transposeA,
                          transposeB: transposeB, beta: beta)
    }
  }
  public func groupedMatmulNF4(_ a: Tensor, _ w: NF4Weight, experts: Int, into c: Tensor, offsets: Tensor,
                               transposeB: Bool, beta: Float) throws {
    try check(.groupedMatmulNF4, inputs: [a, offsets] + w.tensors, outputs: [c]) { b, m in
      try b.groupedMatmulNF4(m(a), w.mapped(m), experts: experts, into: m(c), offsets: m(offsets),
                             transposeB: transposeB, beta: beta)
    }
  }
  public func moeRouterStatistics(probs: Tensor, experts: Tensor, tokenMask: Tensor?, into stats: Tensor) throws {
    try check(.moeRouterStatistics, inputs: [probs, experts, tokenMask], outputs: [stats]) { b, m in
      try b.moeRouterStatistics(probs: m(probs), experts: m(experts), tokenMask: tokenMask.map(m), into: m(stats))
    }
  }
  public func moeAuxLoss(stats: Tensor, coefficient: Float, weight: Tensor?, lossSum: Tensor, gradient: Tensor) throws {
    try check(.moeAuxLoss, inputs: [stats, weight], outputs: [lossSum, gradient]) { b, m in
      try b.moeAuxLoss(stats: m(stats), coefficient: coefficient, weight: weight.map(m), lossSum: m(lossSum),
                       gradient: m(gradient))
    }
  }
  public func moeRouteBackward(dWeights: Tensor, probs: Tensor, weights: Tensor, experts: Tensor, normalize: Bool,
                               auxGradient: Tensor?, tokenMask: Tensor?, into dLogits: Tensor) throws {
    try check(.moeRouteBackward, inputs: [dWeights, probs, weights, experts, auxGradient, tokenMask],
              outputs: [dLogits]) { b, m in
      try b.moeRouteBackward(dWeights: m(dWeights), probs: m(probs), weights: m(weights), experts: m(experts),
                             normalize: normalize, auxGradient: auxGradient.map(m), tokenMask: tokenMask.map(m),
                             into: m(dLogits))
    }
  }
}
