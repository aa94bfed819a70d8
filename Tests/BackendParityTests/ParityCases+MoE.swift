import VKFCore
import VKFTestSupport

/// The mixture-of-experts ops on a small routed layer: 37 tokens, 6 experts, top-2, rows 24
/// wide, experts 20 wide; indices compared exactly, values with the float bounds.
extension ParityTable {
  static let moeTokens = 37, moeExperts = 6, moeTopK = 2, moeWidth = 24, moeHidden = 20

  /// Router logits, the CPU's routing of them and its dispatch at `alignment` (the same on
  /// every backend: index outputs are compared exactly by their own cases).
  static func routed(_ b: Backend, alignment: Int) throws
    -> (probs: Tensor, weights: Tensor, experts: Tensor, offsets: Tensor, slots: Tensor, sources: Tensor, rows: Int) {
    let (n, e, k) = (moeTokens, moeExperts, moeTopK)
    let logits = try b.random([n, e], seed: 300, -3, 3)
    let probs = try b.allocate([n, e]), weights = try b.allocate([n, k]), experts = try b.allocate([n, k], .i32)
    try b.moeRoute(logits: logits, topK: k, normalize: true, probs: probs, weights: weights, experts: experts)
    let r = MoE.rowCapacity(tokens: n, topK: k, experts: e, alignment: alignment)
    let offsets = try b.allocate([e + 1], .i32), slots = try b.allocate([n, k], .i32), sources = try b.allocate([r], .i32)
    try b.moeDispatch(experts: experts, expertCount: e, alignment: alignment, offsets: offsets, slots: slots, sources: sources)
    return (probs, weights, experts, offsets, slots, sources, r)
  }

  static var experts: [ParityCase] {
    let (n, e, k, c, f) = (moeTokens, moeExperts, moeTopK, moeWidth, moeHidden)
    func ints(_ b: Backend, _ t: Tensor) throws -> [Float] { try b.download(t, as: Int32.self).map(Float.init) }
    return [
      ParityCase(op: .moeRoute, name: "\(n)×\(e) top-\(k), renormalised and not", tolerance: .elementwise) { b in
        let logits = try b.random([n, e], seed: 300, -3, 3)
        var out: [[Float]] = []
        for normalize in [true, false] {
          let p = try b.allocate([n, e]), w = try b.allocate([n, k]), x = try b.allocate([n, k], .i32)
          try b.moeRoute(logits: logits, topK: k, normalize: normalize, probs: p, weights: w, experts: x)
          out += [try b.floats(p), try b.floats(w), try ints(b, x)]
        }
        return out
      },
      ParityCase(op: .moeDispatch, name: "alignment 1 and 8", tolerance: .exact) { b in
        try [1, 8].flatMap { a -> [[Float]] in
          let r = try routed(b, alignment: a)
          return [try ints(b, r.offsets), try ints(b, r.slots), try ints(b, r.sources)]
        }
      },
      ParityCase(op: .moeGather, name: "rows of \(c), weighted and not", tolerance: .elementwise) { b in
        let r = try routed(b, alignment: 8), x = try b.random([n, c], seed: 301)
        let plain = try b.allocate([r.rows, c]), weighted = try b.allocate([r.rows, c])
        try b.moeGather(x, sources: r.sources, topK: k, weights: nil, into: plain)
        try b.moeGather(x, sources: r.sources, topK: k, weights: r.weights, into: weighted)
        return [try b.floats(plain), try b.floats(weighted)]
      },
      ParityCase(op: .moeCombine, name: "weighted, then accumulated", tolerance: .elementwise) { b in
        let r = try routed(b, alignment: 8), rows = try b.random([r.rows, c], seed: 302)
        let out = try b.allocate([n, c])
        try b.moeCombine(rows, slots: r.slots, weights: r.weights, into: out, accumulate: false)
        try b.moeCombine(rows, slots: r.slots, weights: nil, into: out, accumulate: true)
        return [try b.floats(out)]
      },
      ParityCase(op: .moeCombineBackward, name: "dot products of \(c)", tolerance: .reduction) { b in
        let r = try routed(b, alignment: 8), rows = try b.random([r.rows, c], seed: 303)
        let d = try b.random([n, c], seed: 304), dw = try b.allocate([n, k])
        try b.moeCombineBackward(d, rows: rows, slots: r.slots, dWeights: dw)
        return [try b.floats(dw)]
      },
      ParityCase(op: .groupedMatmul, name: "forward, input and weight gradients", tolerance: .matmul) { b in
        let r = try routed(b, alignment: 8)
        let xs = try b.allocate([r.rows, c]), x = try b.random([n, c], seed: 305)
        try b.moeGather(x, sources: r.sources, topK: k, weights: nil, into: xs)
        let w = try b.random([e, f, c], seed: 306), h = try b.zeros([r.rows, f])
        try b.groupedMatmul(xs, w, into: h, offsets: r.offsets, transposeA: false, transposeB: true, beta: 0)
        let dx = try b.zeros([r.rows, c])
        try b.groupedMatmul(h, w, into: dx, offsets: r.offsets, transposeA: false, transposeB: false, beta: 0)
        let dw = try b.random([e, f, c], seed: 307)
        try b.groupedMatmul(h, xs, into: dw, offsets: r.offsets, transposeA: true, transposeB: false, beta: 1)
        return [try b.floats(h), try b.floats(dx), try b.floats(dw)]
      },
      ParityCase(op: .groupedMatmul, name: "f16 / bf16 frozen experts, forward and input gradient", tolerance: .matmul) { b in
        let r = try routed(b, alignment: 8), xs = try b.allocate([r.rows, c])
        try b.moeGather(try b.random([n, c], seed: 310), sources: r.sources, topK: k, weights: nil, into: xs)
        let w32 = TestData.uniform(e * f * c, seed: 311)
        var out: [[Float]] = []
        for dtype in [DType.f16, .bf16] {
          let w = try b.tensor(TestData.half(w32, dtype).bits, shape: [e, f, c], dtype)
          let h = try b.zeros([r.rows, f]), dx = try b.zeros([r.rows, c])
          try b.groupedMatmul(xs, w, into: h, offsets: r.offsets, transposeA: false, transposeB: true, beta: 0)
          try b.groupedMatmul(h, w, into: dx, offsets: r.offsets, transposeA: false, transposeB: false, beta: 0)
          out += [try b.floats(h), try b.floats(dx)]
        }
        return out
      },
      // One NF4 weight stacks the experts (E·F, C): F·C = 480 elements are 7.5 blocks of 64,
      // so odd experts start mid-block (the block's absmax spans two experts).
      ParityCase(op: .groupedMatmulNF4, name: "NF4 experts plain and double-quantised, forward and input gradient",
                 tolerance: .matmul) { b in
        let r = try routed(b, alignment: 8), xs = try b.allocate([r.rows, c])
        try b.moeGather(try b.random([n, c], seed: 312), sources: r.sources, topK: k, weights: nil, into: xs)
        let values = TestData.uniform(e * f * c, seed: 313, -0.5, 0.5), dx0 = TestData.uniform(r.rows * c, seed: 314)
        var out: [[Float]] = []
        for doubleQuant in [false, true] {
          let w = try NF4Weight.quantizing(values, rows: e * f, cols: c, on: b, doubleQuant: doubleQuant)
          let h = try b.zeros([r.rows, f]), dx = try b.tensor(dx0, shape: [r.rows, c])
          try b.groupedMatmulNF4(xs, w, experts: e, into: h, offsets: r.offsets, transposeB: true, beta: 0)
          try b.groupedMatmulNF4(h, w, experts: e, into: dx, offsets: r.offsets, transposeB: false, beta: 0.5)
          out += [try b.floats(h), try b.floats(dx)]
        }
        return out
      },
      ParityCase(op: .moeRouterStatistics, name: "masked tokens, two layers", tolerance: .reduction) { b in
        let r = try routed(b, alignment: 1), stats = try b.zeros([2 * e + 1])
        let mask = try b.tensor((0..<n).map { $0 % 5 == 4 ? Float(0) : 1 }, shape: [n])
        try b.moeRouterStatistics(probs: r.probs, experts: r.experts, tokenMask: mask, into: stats)
        try b.moeRouterStatistics(probs: r.probs, experts: r.experts, tokenMask: nil, into: stats)
        return [try b.floats(stats)]
      },
      ParityCase(op: .moeAuxLoss, name: "weighted", tolerance: .reduction) { b in
        let r = try routed(b, alignment: 1), stats = try b.zeros([2 * e + 1])
        try b.moeRouterStatistics(probs: r.probs, experts: r.experts, tokenMask: nil, into: stats)
        let loss = try b.tensor([0.25], shape: [1]), grad = try b.allocate([e]), weight = try b.tensor([0.4], shape: [1])
        try b.moeAuxLoss(stats: stats, coefficient: 0.5, weight: weight, lossSum: loss, gradient: grad)
        return [try b.floats(loss), try b.floats(grad)]
      },
      ParityCase(op: .moeRouteBackward, name: "renormalised and not, with the aux term", tolerance: .elementwise) { b in
        let r = try routed(b, alignment: 1), dw = try b.random([n, k], seed: 308), aux = try b.random([e], seed: 309)
        let mask = try b.tensor((0..<n).map { $0 % 5 == 4 ? Float(0) : 1 }, shape: [n])
        var out: [[Float]] = []
        for normalize in [true, false] {
          let d = try b.allocate([n, e])
          try b.moeRouteBackward(dWeights: dw, probs: r.probs, weights: r.weights, experts: r.experts, normalize: normalize,
                                 auxGradient: normalize ? aux : nil, tokenMask: normalize ? mask : nil, into: d)
          out.append(try b.floats(d))
        }
        return out
      },
    ]
  }
}
