import VKFCore

// MARK: - Elementwise ops and the gradient-norm reduction

extension CPUBackend {
  public func add(_ a: Tensor, _ b: Tensor, alpha: Float, into out: Tensor) throws {
    try validate(.add, a, b, out)
    try ShapeCheck.broadcast(.add, a, b, out)
    broadcast(a, b, out) { x, y in x + alpha * y }
  }

  public func mul(_ a: Tensor, _ b: Tensor, into out: Tensor) throws {
    try validate(.mul, a, b, out)
    try ShapeCheck.broadcast(.mul, a, b, out)
    broadcast(a, b, out) { x, y in x * y }
  }

  public func scale(_ x: Tensor, by alpha: Float, softcap: Float, into out: Tensor) throws {
    try validate(.scale, x, out)
    try ShapeCheck.scale(x, out)
    try ShapeCheck.softcap(.scale, softcap)
    let px = UncheckedSendable(UnsafePointer(f32(x))), po = UncheckedSendable(f32(out))
    CPUParallel.forRanges(x.count) { r in
      let px = px.value, po = po.value
      if softcap > 0 {
        for i in r { po[i] = CPUMath.softcap(alpha * px[i], softcap) }
      } else {
        for i in r { po[i] = alpha * px[i] }
      }
    }
  }

  /// out[r, c] = weights[r] · x[r, c], a row per step so the inner loop vectorises.
  public func scaleRows(_ x: Tensor, weights: Tensor, into out: Tensor) throws {
    try validate(.scaleRows, x, weights, out)
    // x, out: (rows, cols); weights: (rows)
    let (rows, cols) = try ShapeCheck.scaleRows(x, weights, out)
    guard x.count > 0 else { return }
    let px = UncheckedSendable(UnsafePointer(f32(x))), pw = UncheckedSendable(UnsafePointer(f32(weights)))
    let po = UncheckedSendable(f32(out))
    CPUParallel.forRanges(rows, cost: cols) { rs in
      for r in rs {
        let w = pw.value[r], xr = px.value + r * cols, or = po.value + r * cols
        for c in 0..<cols { or[c] = w * xr[c] }
      }
    }
  }

  /// out[0] += Σ x², each core's part summed in Double and the parts added in order.
  public func dropoutMask(seed: Tensor, stream: UInt32, p: Float, into mask: Tensor) throws {
    try validate(.dropoutMask, seed, mask)
    try ShapeCheck.dropoutMask(seed: seed, p: p, mask: mask)
    let words = i32(seed)
    let key = DropoutMask.key(seedLow: UInt32(bitPattern: words[0]), seedHigh: UInt32(bitPattern: words[1]),
                              stream: stream)
    let threshold = DropoutMask.threshold(p), keep = DropoutMask.keepScale(p)
    let out = UncheckedSendable(f32(mask))
    CPUParallel.forRanges(mask.count) { r in
      for i in r { out.value[i] = DropoutMask.unit(key: key, UInt32(i)) < threshold ? 0 : keep }
    }
  }

  public func sumOfSquares(_ x: Tensor, into out: Tensor) throws {
    try validate(.sumOfSquares, x, out)
    try ShapeCheck.sumOfSquares(x, out)
    let n = x.count
    let chunks = CPUParallel.chunkCount(n)
    let px = UncheckedSendable(UnsafePointer(f32(x)))
    var parts = [Double](repeating: 0, count: chunks)
    parts.withUnsafeMutableBufferPointer { buf in
      let p = UncheckedSendable(buf.baseAddress.unsafelyUnwrapped)
      CPUParallel.forChunks(n) { c, r in
        p.value[c] = CPUMath.sumOfSquares(px.value + r.lowerBound, r.count)
      }
    }
    let o = f32(out)
    o[0] = Float(Double(o[0]) + parts.reduce(0, +))
  }

  /// out[i] = f(a[i], b[i % b.count]), a row of b at a time so the inner loop vectorises.
  @inline(__always)
  private func broadcast(_ a: Tensor, _ b: Tensor, _ out: Tensor, _ f: (Float, Float) -> Float) {
    let n = a.count, bc = b.count
    guard n > 0 else { return }
    let pa = UncheckedSendable(UnsafePointer(f32(a))), pb = UncheckedSendable(UnsafePointer(f32(b)))
    let po = UncheckedSendable(f32(out))
    if bc == n {
      CPUParallel.forRanges(n) { r in
        let pa = pa.value, pb = pb.value, po = po.value
        for i in r { po[i] = f(pa[i], pb[i]) }
      }
    } else if bc == 1 {
      let y = pb.value[0]
      CPUParallel.forRanges(n) { r in
        let pa = pa.value, po = po.value
        for i in r { po[i] = f(pa[i], y) }
      }
    } else {
      CPUParallel.forRanges(n / bc, cost: bc) { reps in
        let pb = pb.value
        for rep in reps {
          let x = pa.value + rep * bc, o = po.value + rep * bc
          for j in 0..<bc { o[j] = f(x[j], pb[j]) }
        }
      }
    }
  }
}
