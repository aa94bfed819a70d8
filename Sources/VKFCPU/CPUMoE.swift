import Foundation
import VKFCore

// MARK: - Mixture of experts
// Legend: N tokens, E experts, K experts per token, R expert rows, C row width.
// The ground truth of the expert ops: plain loops in token order (the shaders sum the same
// terms), with OpenBLAS for the per-expert products.

extension CPUBackend {
  public var moeRowAlignment: Int { 1 }

  public func moeRoute(logits: Tensor, topK: Int, normalize: Bool, probs: Tensor, weights: Tensor,
                       experts: Tensor) throws {
    try validate(.moeRoute, logits, probs, weights, experts)
    let (n, e, k) = try ShapeCheck.moeRoute(logits, topK: topK, probs: probs, weights: weights, experts: experts)
    let x = UncheckedSendable(UnsafePointer(f32(logits))), p = UncheckedSendable(f32(probs))
    let w = UncheckedSendable(f32(weights)), ex = UncheckedSendable(i32(experts))
    CPUParallel.forRanges(n, cost: e * (k + 2)) { rows in
      var chosen = [Bool](repeating: false, count: e)  // one per chunk, reset per token
      for i in rows {
        let xr = x.value + i * e, pr = p.value + i * e
        var mx = -Float.infinity
        for j in 0..<e { mx = max(mx, xr[j]) }
        var sum: Float = 0
        for j in 0..<e { pr[j] = expf(xr[j] - mx); sum += pr[j] }
        for j in 0..<e { pr[j] /= sum }
        // Top-K by selection: the largest remaining, lower index first on ties.
        for j in 0..<e { chosen[j] = false }
        var picked: Float = 0
        for s in 0..<k {
          var best = -1
          for j in 0..<e where !chosen[j] && (best < 0 || pr[j] > pr[best]) { best = j }
          chosen[best] = true
          ex.value[i * k + s] = Int32(best)
          w.value[i * k + s] = pr[best]
          picked += pr[best]
        }
        if normalize { for s in 0..<k { w.value[i * k + s] /= picked } }
      }
    }
  }

  public func moeDispatch(experts: Tensor, expertCount: Int, alignment: Int, offsets: Tensor, slots: Tensor,
                          sources: Tensor) throws {
    try validate(.moeDispatch, experts, offsets, slots, sources)
    let (n, k, r) = try ShapeCheck.moeDispatch(experts, expertCount: expertCount, alignment: alignment,
                                               offsets: offsets, slots: slots, sources: sources)
    let ex = i32(experts), off = i32(offsets), sl = i32(slots), src = i32(sources)
    var counts = [Int](repeating: 0, count: expertCount)
    for i in 0..<(n * k) {
      let e = Int(ex[i])
      guard e >= 0, e < expertCount else {
        throw VKFError.outOfRange(op: Op.moeDispatch.rawValue, detail: "expert \(e) of pair \(i) is outside 0..<\(expertCount)")
      }
      counts[e] += 1
    }
    var start = [Int](repeating: 0, count: expertCount + 1)
    for e in 0..<expertCount { start[e + 1] = start[e] + (counts[e] + alignment - 1) / alignment * alignment }
    for e in 0...expertCount { off[e] = Int32(start[e]) }
    for j in 0..<r { src[j] = -1 }
    var next = Array(start.prefix(expertCount))
    for i in 0..<(n * k) {
      let e = Int(ex[i])
      sl[i] = Int32(next[e])
      src[next[e]] = Int32(i)
      next[e] += 1
    }
  }

  public func moeGather(_ x: Tensor, sources: Tensor, topK: Int, weights: Tensor?, into rows: Tensor) throws {
    try validate(.moeGather, x, sources, weights, rows)
    let (n, k, r, c) = try ShapeCheck.moeGather(x, sources: sources, topK: topK, weights: weights, rows: rows)
    let src = UncheckedSendable(UnsafePointer(i32(sources)))
    try checkSources(.moeGather, src.value, r, pairs: n * k)
    let xs = UncheckedSendable(UnsafePointer(f32(x))), out = UncheckedSendable(f32(rows))
    let w = weights.map { UncheckedSendable(UnsafePointer(f32($0))) }
    CPUParallel.forRanges(r, cost: c) { range in
      for j in range {
        let s = Int(src.value[j]), dst = out.value + j * c
        guard s >= 0 else { dst.update(repeating: 0, count: c); continue }
        let from = xs.value + (s / k) * c
        if let w {
          let scale = w.value[s]
          for i in 0..<c { dst[i] = scale * from[i] }
        } else {
          dst.update(from: from, count: c)
        }
      }
    }
  }

  public func moeCombine(_ rows: Tensor, slots: Tensor, weights: Tensor?, into out: Tensor, accumulate: Bool) throws {
    try validate(.moeCombine, rows, slots, weights, out)
    let (n, k, r, c) = try ShapeCheck.moeCombine(.moeCombine, rows, slots: slots, weights: weights, out: out)
    let sl = UncheckedSendable(UnsafePointer(i32(slots)))
    try checkSlots(.moeCombine, sl.value, n * k, rows: r)
    let ys = UncheckedSendable(UnsafePointer(f32(rows))), o = UncheckedSendable(f32(out))
    let w = weights.map { UncheckedSendable(UnsafePointer(f32($0))) }
    CPUParallel.forRanges(n, cost: k * c) { range in
      for t in range {
        let dst = o.value + t * c
        if !accumulate { dst.update(repeating: 0, count: c) }
        for s in 0..<k {
          let from = ys.value + Int(sl.value[t * k + s]) * c, scale = w?.value[t * k + s] ?? 1
          for i in 0..<c { dst[i] += scale * from[i] }
        }
      }
    }
  }

  public func moeCombineBackward(_ dOut: Tensor, rows: Tensor, slots: Tensor, dWeights: Tensor) throws {
    try validate(.moeCombineBackward, dOut, rows, slots, dWeights)
    let (n, k, r, c) = try ShapeCheck.moeCombineBackward(dOut, rows: rows, slots: slots, dWeights: dWeights)
    let sl = UncheckedSendable(UnsafePointer(i32(slots)))
    try checkSlots(.moeCombineBackward, sl.value, n * k, rows: r)
    let dy = UncheckedSendable(UnsafePointer(f32(dOut))), ys = UncheckedSendable(UnsafePointer(f32(rows)))
    let dw = UncheckedSendable(f32(dWeights))
    CPUParallel.forRanges(n, cost: k * c) { range in
      for t in range {
        for s in 0..<k {
          let a = dy.value + t * c, b = ys.value + Int(sl.value[t * k + s]) * c
          var dot: Float = 0
          for i in 0..<c { dot += a[i] * b[i] }
          dw.value[t * k + s] = dot
        }
      }
    }
  }

  public func groupedMatmul(_ a: Tensor, _ b: Tensor, into c: Tensor, offsets: Tensor, transposeA: Bool,
                            transposeB: Bool, beta: Float) throws {
    try validate(.groupedMatmul, a, b, c, offsets)
    let g = try ShapeCheck.groupedMatmul(a, b, c, offsets: offsets, transposeA: transposeA, transposeB: transposeB)
    let off = try segmentBounds(.groupedMatmul, offsets, experts: g.experts, rows: g.rows)
    if b.dtype != .f32 {
      // Frozen 16-bit experts: each segment through the widening matmul (panels of b[e]
      // widened to f32, as the shader stages its tiles).
      let bShape = transposeB ? [g.n, g.k] : [g.k, g.n]
      for e in 0..<g.experts where off[e + 1] > off[e] {
        let rows = off[e + 1] - off[e]
        try matmul(try a.view(offset: off[e] * g.k, shape: [rows, g.k]), try b.view(offset: e * g.n * g.k, shape: bShape),
                   into: try c.view(offset: off[e] * g.n, shape: [rows, g.n]), transposeA: false, transposeB: transposeB,
                   alpha: 1, beta: beta)
      }
      return
    }
    let pa = f32(a), pb = f32(b), pc = f32(c)
    for e in 0..<g.experts {
      let lo = off[e], rows = off[e + 1] - off[e]
      if transposeA {
        CPUBackend.sgemm(true, false, m: g.m, n: g.n, k: rows, alpha: 1, a: pa + lo * g.m, lda: g.m,
                         b: pb + lo * g.n, ldb: g.n, beta: beta, c: pc + e * g.m * g.n, ldc: g.n)
      } else {
        CPUBackend.sgemm(false, transposeB, m: rows, n: g.n, k: g.k, alpha: 1, a: pa + lo * g.k, lda: g.k,
                         b: pb + e * g.n * g.k, ldb: transposeB ? g.k : g.n, beta: beta, c: pc + lo * g.n, ldc: g.n)
      }
    }
  }

  public func groupedMatmulNF4(_ a: Tensor, _ w: NF4Weight, experts: Int, into c: Tensor, offsets: Tensor,
                               transposeB: Bool, beta: Float) throws {
    try validateTensors(.groupedMatmulNF4, [a, c, offsets] + w.tensors)
    try validate(.groupedMatmulNF4)
    let g = try ShapeCheck.groupedMatmulNF4(a, w, experts: experts, c, offsets: offsets, transposeB: transposeB)
    let off = try segmentBounds(.groupedMatmulNF4, offsets, experts: experts, rows: g.rows)
    // Each expert with rows: its matrix (r, cols) dequantised from the stack's blocks, then sgemm.
    let per = g.perExpert * w.cols
    let buffer = try scratch.floats(max(per, 1))
    let pa = UnsafePointer(f32(a)), pc = f32(c), packed = UnsafePointer(u8(w.packed))
    withAbsmax(w) { absmax in
      for e in 0..<experts where off[e + 1] > off[e] {
        let lo = off[e], rows = off[e + 1] - off[e]
        NF4Kernel.dequantizeParallel(packed, absmax, blockSize: w.blockSize, elements: (e * per)..<((e + 1) * per),
                                     into: buffer)
        // transposeB: c (rows, r) = a (rows, cols)·W_eᵀ; else c (rows, cols) = a (rows, r)·W_e.
        CPUBackend.sgemm(false, transposeB, m: rows, n: g.n, k: g.k, alpha: 1, a: pa + lo * g.k, lda: g.k,
                         b: buffer, ldb: w.cols, beta: beta, c: pc + lo * g.n, ldc: g.n)
      }
    }
  }

  public func moeRouterStatistics(probs: Tensor, experts: Tensor, tokenMask: Tensor?, into stats: Tensor) throws {
    try validate(.moeRouterStatistics, probs, experts, tokenMask, stats)
    let e = try ShapeCheck.moeRouterStatistics(probs: probs, experts: experts, tokenMask: tokenMask, stats: stats)
    let n = probs.rowCount
    guard n > 0 else { return }
    let k = experts.count / n
    let p = f32(probs), ex = i32(experts), st = f32(stats), mask = tokenMask.map { f32($0) }
    for t in 0..<n {
      let m = mask?[t] ?? 1
      guard m != 0 else { continue }
      for s in 0..<k {
        let j = Int(ex[t * k + s])
        guard j >= 0, j < e else {
          throw VKFError.outOfRange(op: Op.moeRouterStatistics.rawValue, detail: "expert \(j) outside 0..<\(e)")
        }
        st[j] += m
      }
      for j in 0..<e { st[e + j] += m * p[t * e + j] }
      st[2 * e] += m
    }
  }

  public func moeAuxLoss(stats: Tensor, coefficient: Float, weight: Tensor?, lossSum: Tensor, gradient: Tensor) throws {
    try validate(.moeAuxLoss, stats, weight, lossSum, gradient)
    let e = try ShapeCheck.moeAuxLoss(stats: stats, weight: weight, lossSum: lossSum, gradient: gradient)
    let st = f32(stats), g = f32(gradient)
    let c = coefficient * (weight.map { f32($0)[0] } ?? 1), m = st[2 * e]
    guard m > 0 else {  // no counted token: no loss, no gradient
      g.update(repeating: 0, count: e)
      return
    }
    var aux: Float = 0
    for j in 0..<e {
      let f = st[j] / m
      aux += f * (st[e + j] / m)
      g[j] = c * Float(e) * f / m
    }
    f32(lossSum)[0] += c * Float(e) * aux
  }

  public func moeRouteBackward(dWeights: Tensor, probs: Tensor, weights: Tensor, experts: Tensor, normalize: Bool,
                               auxGradient: Tensor?, tokenMask: Tensor?, into dLogits: Tensor) throws {
    try validate(.moeRouteBackward, dWeights, probs, weights, experts, auxGradient, tokenMask, dLogits)
    let (n, e, k) = try ShapeCheck.moeRouteBackward(dWeights: dWeights, probs: probs, weights: weights, experts: experts,
                                                    auxGradient: auxGradient, tokenMask: tokenMask, dLogits: dLogits)
    let dw = f32(dWeights), p = f32(probs), w = f32(weights), ex = i32(experts), out = f32(dLogits)
    let aux = auxGradient.map { f32($0) }, mask = tokenMask.map { f32($0) }
    for t in 0..<n {
      let pr = p + t * e, dp = out + t * e
      let m = mask?[t] ?? 1
      for j in 0..<e { dp[j] = (aux?[j] ?? 0) * m }
      var picked: Float = 0, dot: Float = 0
      for s in 0..<k {
        let j = Int(ex[t * k + s])
        guard j >= 0, j < e else {
          throw VKFError.outOfRange(op: Op.moeRouteBackward.rawValue, detail: "expert \(j) outside 0..<\(e)")
        }
        picked += pr[j]; dot += w[t * k + s] * dw[t * k + s]
      }
      for s in 0..<k {
        let j = Int(ex[t * k + s])
        dp[j] += normalize ? (dw[t * k + s] - dot) / picked : dw[t * k + s]
      }
      var sum: Float = 0
      for j in 0..<e { sum += pr[j] * dp[j] }
      for j in 0..<e { dp[j] = pr[j] * (dp[j] - sum) }
    }
  }

  // MARK: - Index checks (the shaders skip what these refuse)

  private func checkSources(_ op: Op, _ src: UnsafePointer<Int32>, _ r: Int, pairs: Int) throws {
    for j in 0..<r where src[j] >= Int32(pairs) {
      throw VKFError.outOfRange(op: op.rawValue, detail: "row \(j) names pair \(src[j]) of \(pairs)")
    }
  }

  private func checkSlots(_ op: Op, _ slots: UnsafePointer<Int32>, _ count: Int, rows: Int) throws {
    for i in 0..<count where slots[i] < 0 || Int(slots[i]) >= rows {
      throw VKFError.outOfRange(op: op.rawValue, detail: "slot \(slots[i]) of pair \(i) is outside 0..<\(rows)")
    }
  }

  /// offsets as Ints, checked to rise from 0 and stay within the rows.
  private func segmentBounds(_ op: Op, _ offsets: Tensor, experts: Int, rows: Int) throws -> [Int] {
    let o = i32(offsets)
    let out = (0...experts).map { Int(o[$0]) }
    guard out[0] == 0, zip(out, out.dropFirst()).allSatisfy({ $0 <= $1 }), out[experts] <= rows else {
      throw VKFError.outOfRange(op: op.rawValue, detail: "offsets \(out) must rise from 0 to at most \(rows)")
    }
    return out
  }
}
