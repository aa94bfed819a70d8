import VKFCore

// MARK: - Causal softmax over attention scores
// Legend: x (…, TQ, TK); row r of the flattened (rows, TK) view is query q = r % TQ, which
// sees keys j ≤ p = q + (TK − TQ) (queries are the last TQ positions of TK), and with a
// sliding window only j > p − window.

extension CPUBackend {
  public func causalSoftmax(_ x: Tensor, scale: Float, window: Int, keyStarts: Tensor?, into out: Tensor) throws {
    try validate(.causalSoftmax, x, out)
    if let keyStarts { try validate(.causalSoftmax, keyStarts) }
    let (rows, TQ, TK) = try ShapeCheck.causalSoftmax(.causalSoftmax, x, out)
    try ShapeCheck.window(.causalSoftmax, window)
    let groups = try ShapeCheck.keyStarts(.causalSoftmax, keyStarts, rows: rows, tq: TQ)
    guard TK > 0 else { return }
    // Rows per sequence (a group of score matrices) and each sequence's first visible key.
    let rowsPerGroup = groups > 0 ? rows / groups : rows
    let starts = keyStarts.map { t in (0..<t.count).map { max(0, Int(i32(t)[$0])) } } ?? []
    let px = UncheckedSendable(UnsafePointer(f32(x))), po = UncheckedSendable(f32(out))
    CPUParallel.forRanges(rows, cost: 2 * TK) { range in
      for r in range {
        let xr = px.value + r * TK, o = po.value + r * TK
        var vis = Self.visibleKeys(r % TQ + (TK - TQ), window: window)
        if groups > 0 { vis = min(max(vis.lowerBound, starts[r / rowsPerGroup]), vis.upperBound)..<vis.upperBound }
        let (lo, n) = (vis.lowerBound, vis.count)
        guard n > 0 else { o.update(repeating: 0, count: TK); continue }  // a padding query
        // Scale first, into the output (x may alias out), then subtract the max so exp ≤ 1.
        for j in vis { o[j] = scale * xr[j] }
        let m = CPUMath.max(o + lo, n)
        for j in vis { o[j] = CPUMath.exp(o[j] - m) }
        let inv = Float(1 / CPUMath.sum(o + lo, n))
        for j in vis { o[j] *= inv }
        o.update(repeating: 0, count: lo)
        (o + vis.upperBound).update(repeating: 0, count: TK - vis.upperBound)
      }
    }
  }

  public func causalSoftmaxBackward(_ dOut: Tensor, out y: Tensor, scale: Float,
                                    into dx: Tensor) throws {
    try validate(.causalSoftmaxBackward, dOut, y, dx)
    let (rows, TQ, TK) = try ShapeCheck.causalSoftmaxBackward(dOut, y, dx)
    guard TK > 0 else { return }
    let pdy = UncheckedSendable(UnsafePointer(f32(dOut))), py = UncheckedSendable(UnsafePointer(f32(y)))
    let pdx = UncheckedSendable(f32(dx))
    CPUParallel.forRanges(rows, cost: 2 * TK) { range in
      for r in range {
        let dy = pdy.value + r * TK, yr = py.value + r * TK, d = pdx.value + r * TK
        let visible = r % TQ + (TK - TQ) + 1
        // The dot is taken before dx is written: dx may alias dOut.
        let dot = Float(CPUMath.dot(dy, yr, visible))
        for j in 0..<visible { d[j] = scale * yr[j] * (dy[j] - dot) }
        (d + visible).update(repeating: 0, count: TK - visible)
      }
    }
  }
}
