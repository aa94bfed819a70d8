import VKFCore

// MARK: - Causal softmax over attention scores
// Legend: x (…, TQ, TK); row r of the flattened (rows, TK) view is query q = r % TQ, which
// sees keys j ≤ q + (TK − TQ) (queries are the last TQ positions of TK).

extension CPUBackend {
  public func causalSoftmax(_ x: Tensor, scale: Float, into out: Tensor) throws {
    try validate(.causalSoftmax, x, out)
    let (rows, TQ, TK) = try ShapeCheck.causalSoftmax(.causalSoftmax, x, out)
    guard TK > 0 else { return }
    let px = UncheckedSendable(UnsafePointer(f32(x))), po = UncheckedSendable(f32(out))
    CPUParallel.forRanges(rows, cost: 2 * TK) { range in
      for r in range {
        let xr = px.value + r * TK, o = po.value + r * TK
        let visible = r % TQ + (TK - TQ) + 1
        // Scale first, into the output (x may alias out), then subtract the max so exp ≤ 1.
        for j in 0..<visible { o[j] = scale * xr[j] }
        let m = CPUMath.max(o, visible)
        for j in 0..<visible { o[j] = CPUMath.exp(o[j] - m) }
        let inv = Float(1 / CPUMath.sum(o, visible))
        for j in 0..<visible { o[j] *= inv }
        (o + visible).update(repeating: 0, count: TK - visible)
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
