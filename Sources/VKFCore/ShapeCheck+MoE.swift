// Shape rules of the mixture-of-experts ops (`Backend.moeRoute` …).
// Legend: N tokens, E experts, K experts per token, R expert rows, C row width.

/// Sizes shared by the mixture-of-experts ops.
public enum MoE {
  /// Expert rows a layer needs for N tokens: N·K pairs plus up to alignment − 1 padding rows
  /// per expert, rounded up to a multiple of the alignment.
  public static func rowCapacity(tokens: Int, topK: Int, experts: Int, alignment: Int) -> Int {
    let a = max(1, alignment)
    return (tokens * topK + experts * (a - 1) + a - 1) / a * a
  }
}

extension ShapeCheck {
  /// Returns (N, E, K).
  public static func moeRoute(_ logits: Tensor, topK: Int, probs: Tensor, weights: Tensor, experts: Tensor) throws
    -> (n: Int, e: Int, k: Int) {
    try dtype(.moeRoute, .f32, logits, probs, weights)
    try dtype(.moeRoute, .i32, experts)
    let n = logits.rowCount, e = logits.lastDim
    guard topK >= 1, topK <= e else { throw fail(.moeRoute, "topK \(topK) must be in 1…\(e) (the experts)") }
    try count(.moeRoute, n * e, probs)
    try count(.moeRoute, n * topK, weights, experts)
    try noOverlap(.moeRoute, output: probs, inputs: logits)
    try noOverlap(.moeRoute, output: weights, inputs: logits, probs)
    try noOverlap(.moeRoute, output: experts, inputs: logits, probs, weights)
    return (n, e, topK)
  }

  /// Returns (N, K, R).
  public static func moeDispatch(_ experts: Tensor, expertCount: Int, alignment: Int, offsets: Tensor, slots: Tensor,
                                 sources: Tensor) throws -> (n: Int, k: Int, rows: Int) {
    try dtype(.moeDispatch, .i32, experts, offsets, slots, sources)
    guard expertCount >= 1, alignment >= 1 else {
      throw fail(.moeDispatch, "expertCount \(expertCount) and alignment \(alignment) must be ≥ 1")
    }
    let n = experts.rank >= 2 ? experts.count / experts.lastDim : 0, k = experts.lastDim
    guard experts.rank == 2, n >= 1 else { throw fail(.moeDispatch, "experts \(experts.shape) must be (N, K)") }
    try count(.moeDispatch, expertCount + 1, offsets)
    try count(.moeDispatch, experts.count, slots)
    let need = MoE.rowCapacity(tokens: n, topK: k, experts: expertCount, alignment: alignment)
    guard sources.count >= need else {
      throw fail(.moeDispatch, "sources \(sources.shape) holds fewer than the \(need) rows N·K and padding need")
    }
    return (n, k, sources.count)
  }

  /// Returns (N, K, R, C).
  public static func moeGather(_ x: Tensor, sources: Tensor, topK: Int, weights: Tensor?, rows: Tensor) throws
    -> (n: Int, k: Int, r: Int, c: Int) {
    try dtype(.moeGather, .f32, x, weights, rows)
    try dtype(.moeGather, .i32, sources)
    let n = x.rowCount, c = x.lastDim, r = sources.count
    guard topK >= 1 else { throw fail(.moeGather, "topK \(topK) must be ≥ 1") }
    try count(.moeGather, n * topK, weights)
    guard rows.count == r * c else { throw fail(.moeGather, "rows \(rows.shape) must be (\(r), \(c))") }
    try noOverlap(.moeGather, output: rows, inputs: x, weights)
    return (n, topK, r, c)
  }

  /// Returns (N, K, R, C).
  public static func moeCombine(_ op: Op, _ rows: Tensor, slots: Tensor, weights: Tensor?, out: Tensor) throws
    -> (n: Int, k: Int, r: Int, c: Int) {
    try dtype(op, .f32, rows, weights, out)
    try dtype(op, .i32, slots)
    let c = rows.lastDim, r = rows.rowCount
    guard slots.rank == 2 else { throw fail(op, "slots \(slots.shape) must be (N, K)") }
    let k = slots.lastDim, n = slots.count / max(1, k)
    if op == .moeCombine {
      guard out.count == n * c, out.lastDim == c else { throw fail(op, "out \(out.shape) must be (\(n), \(c))") }
      try count(op, n * k, weights)
      try noOverlap(op, output: out, inputs: rows, weights)
    }
    return (n, k, r, c)
  }

  /// Returns (N, K, R, C).
  public static func moeCombineBackward(_ dOut: Tensor, rows: Tensor, slots: Tensor, dWeights: Tensor) throws
    -> (n: Int, k: Int, r: Int, c: Int) {
    let s = try moeCombine(.moeCombineBackward, rows, slots: slots, weights: nil, out: dOut)
    try dtype(.moeCombineBackward, .f32, dOut, dWeights)
    guard dOut.count == s.n * s.c else { throw fail(.moeCombineBackward, "dOut \(dOut.shape) must be (\(s.n), \(s.c))") }
    try count(.moeCombineBackward, s.n * s.k, dWeights)
    try noOverlap(.moeCombineBackward, output: dWeights, inputs: dOut, rows)
    return s
  }

  /// The geometry of `groupedMatmul`: E experts, rows R, and each product's (m, n, k).
  public struct GroupedGemm: Equatable, Sendable {
    public var experts: Int, rows: Int, m: Int, n: Int, k: Int
  }

  /// Not transposeA: m is the rows of a segment (R in all), k the shared width, n c's width.
  /// transposeA: c (E, m, n) with k the rows.
  public static func groupedMatmul(_ a: Tensor, _ b: Tensor, _ c: Tensor, offsets: Tensor, transposeA: Bool,
                                   transposeB: Bool) throws -> GroupedGemm {
    let op = Op.groupedMatmul
    // b may be frozen experts stored 16-bit (read with f32 accumulation) in the products
    // with b per expert; a weight gradient's operands are f32.
    if !transposeA, b.dtype == .f16 || b.dtype == .bf16 { try dtype(op, .f32, a, c) } else { try dtype(op, .f32, a, b, c) }
    try dtype(op, .i32, offsets)
    let e = offsets.count - 1
    guard e >= 1 else { throw fail(op, "offsets \(offsets.shape) must hold E + 1 ≥ 2 values") }
    if transposeA {
      guard !transposeB else { throw fail(op, "transposeA with transposeB is not a weight gradient") }
      let r = a.rowCount, m = a.lastDim, n = b.lastDim
      guard b.rowCount == r, c.rank == 3, c.shape == [e, m, n] else {
        throw fail(op, "a \(a.shape)ᵀ · b \(b.shape) per segment into c \(c.shape): expected c (\(e), \(m), \(n)) and a, b with the same rows")
      }
      try noOverlap(op, output: c, inputs: a, b)
      return GroupedGemm(experts: e, rows: r, m: m, n: n, k: r)
    }
    guard b.rank == 3, b.shape[0] == e else { throw fail(op, "b \(b.shape) must be (E = \(e), ·, ·)") }
    let r = a.rowCount, k = a.lastDim
    let n = transposeB ? b.shape[1] : b.shape[2], bk = transposeB ? b.shape[2] : b.shape[1]
    guard bk == k, c.rowCount == r, c.lastDim == n else {
      throw fail(op, "a \(a.shape) · b \(b.shape)\(transposeB ? "ᵀ" : "") into c \(c.shape)")
    }
    try noOverlap(op, output: c, inputs: a, b)
    return GroupedGemm(experts: e, rows: r, m: r, n: n, k: k)
  }

  /// Returns (R, n, k, rows per expert): c (R, n) = a (R, k) · op(W_e).
  public static func groupedMatmulNF4(_ a: Tensor, _ w: NF4Weight, experts: Int, _ c: Tensor, offsets: Tensor,
                                      transposeB: Bool) throws -> (rows: Int, n: Int, k: Int, perExpert: Int) {
    let op = Op.groupedMatmulNF4
    try nf4(op, w)
    try dtype(op, .f32, a, c)
    try dtype(op, .i32, offsets)
    guard experts >= 1, offsets.count == experts + 1, w.rows % experts == 0 else {
      throw fail(op, "\(experts) experts over NF4 \(w.rows)×\(w.cols) with offsets \(offsets.shape)")
    }
    let r = w.rows / experts
    let (k, n) = transposeB ? (w.cols, r) : (r, w.cols)
    guard a.lastDim == k, c.lastDim == n, a.rowCount == c.rowCount else {
      throw fail(op, "a \(a.shape) · W_e\(transposeB ? "ᵀ" : "") (\(k)×\(n)) into c \(c.shape)")
    }
    try noOverlap(op, output: c, inputs: a, offsets)
    for t in w.tensors { try noOverlap(op, output: c, inputs: t) }
    return (a.rowCount, n, k, r)
  }

  /// Returns E.
  public static func moeRouterStatistics(probs: Tensor, experts: Tensor, tokenMask: Tensor?, stats: Tensor) throws -> Int {
    let op = Op.moeRouterStatistics
    try dtype(op, .f32, probs, tokenMask, stats)
    try dtype(op, .i32, experts)
    let n = probs.rowCount, e = probs.lastDim
    guard experts.count % max(1, n) == 0, experts.count >= n else {
      throw fail(op, "experts \(experts.shape) must be (\(n), K)")
    }
    try count(op, n, tokenMask)
    try count(op, 2 * e + 1, stats)
    try noOverlap(op, output: stats, inputs: probs, tokenMask)
    return e
  }

  /// Returns E.
  public static func moeAuxLoss(stats: Tensor, weight: Tensor?, lossSum: Tensor, gradient: Tensor) throws -> Int {
    let op = Op.moeAuxLoss
    try dtype(op, .f32, stats, weight, lossSum, gradient)
    let e = gradient.count
    try count(op, 2 * e + 1, stats)
    try count(op, 1, weight, lossSum)
    try noOverlap(op, output: gradient, inputs: stats, lossSum)
    try noOverlap(op, output: lossSum, inputs: stats, weight)
    return e
  }

  /// Returns (N, E, K).
  public static func moeRouteBackward(dWeights: Tensor, probs: Tensor, weights: Tensor, experts: Tensor,
                                      auxGradient: Tensor?, tokenMask: Tensor?, dLogits: Tensor) throws
    -> (n: Int, e: Int, k: Int) {
    let op = Op.moeRouteBackward
    try dtype(op, .f32, dWeights, probs, weights, auxGradient, tokenMask, dLogits)
    try dtype(op, .i32, experts)
    let n = probs.rowCount, e = probs.lastDim, k = experts.count / max(1, n)
    guard k >= 1, experts.count == n * k else { throw fail(op, "experts \(experts.shape) must be (\(n), K)") }
    try count(op, n * k, dWeights, weights)
    try count(op, n * e, dLogits)
    try count(op, e, auxGradient)
    try count(op, n, tokenMask)
    try noOverlap(op, output: dLogits, inputs: probs, dWeights, weights, auxGradient, tokenMask)
    return (n, e, k)
  }
}
