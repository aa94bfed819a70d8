import VKFCore

// MARK: - LayerNorm (BERT's torch.nn.LayerNorm: (x − μ)/sqrt(σ² + ε) · w + b, biased σ²)
// Legend: R rows (tokens), C channels (the last dimension), x̂ = (x − μ)·rstd.

extension CPUBackend {
  public func layerNorm(_ x: Tensor, weight: Tensor, bias: Tensor, eps: Float, into out: Tensor, mean: Tensor,
                        rstd: Tensor) throws {
    try validate(.layerNorm, x, weight, bias, out, mean, rstd)
    try ShapeCheck.layerNorm(x, weight, bias, out, mean, rstd)
    let C = x.lastDim, R = x.rowCount
    guard C > 0 else { return }
    let px = UncheckedSendable(UnsafePointer(f32(x))), pw = UncheckedSendable(UnsafePointer(f32(weight)))
    let pb = UncheckedSendable(UnsafePointer(f32(bias))), po = UncheckedSendable(f32(out))
    let pm = UncheckedSendable(f32(mean)), pr = UncheckedSendable(f32(rstd))
    CPUParallel.forRanges(R, cost: 2 * C) { rows in
      let w = pw.value, b = pb.value
      for r in rows {
        let xr = px.value + r * C, o = po.value + r * C
        // Two passes in Double (mean, then the centred squares): no cancellation in σ².
        let mu = CPUMath.sum(xr, C) / Double(C)
        var ss = 0.0
        for j in 0..<C { let d = Double(xr[j]) - mu; ss += d * d }
        let s = Float(1 / (ss / Double(C) + Double(eps)).squareRoot()), m = Float(mu)
        pm.value[r] = m
        pr.value[r] = s
        for j in 0..<C { o[j] = (xr[j] - m) * s * w[j] + b[j] }
      }
    }
  }

  /// dx = rstd·(g − mean(g) − x̂·mean(g⊙x̂)) with g = dOut⊙w; dWeight += Σ dOut⊙x̂, dBias += Σ dOut.
  public func layerNormBackward(_ dOut: Tensor, x: Tensor, weight: Tensor, mean: Tensor, rstd: Tensor, dx: Tensor,
                                dWeight: Tensor?, dBias: Tensor?) throws {
    try validate(.layerNormBackward, dOut, x, weight, mean, rstd, dx, dWeight, dBias)
    try ShapeCheck.layerNormBackward(dOut, x, weight, mean, rstd, dx, dWeight, dBias)
    let C = x.lastDim, R = x.rowCount
    guard C > 0, R > 0 else { return }
    let chunks = CPUParallel.chunkCount(R, cost: 4 * C)
    // Per-chunk partials of dWeight and dBias, summed in chunk order afterwards: deterministic.
    let partial = UncheckedSendable(try scratch.floats(2 * chunks * C))
    partial.value.update(repeating: 0, count: 2 * chunks * C)
    let pdy = UncheckedSendable(UnsafePointer(f32(dOut))), px = UncheckedSendable(UnsafePointer(f32(x)))
    let pw = UncheckedSendable(UnsafePointer(f32(weight))), pm = UncheckedSendable(UnsafePointer(f32(mean)))
    let pr = UncheckedSendable(UnsafePointer(f32(rstd))), pdx = UncheckedSendable(f32(dx))
    CPUParallel.forChunks(R, cost: 4 * C) { chunk, rows in
      let accW = partial.value + 2 * chunk * C, accB = accW + C, w = pw.value
      for r in rows {
        let dy = pdy.value + r * C, xr = px.value + r * C, d = pdx.value + r * C
        let m = pm.value[r], s = pr.value[r]
        // Everything that reads dy happens before dx is written: dx may alias dOut.
        var sumG = 0.0, sumGX = 0.0
        for j in 0..<C {
          let xh = (xr[j] - m) * s, g = dy[j] * w[j]
          sumG += Double(g)
          sumGX += Double(g * xh)
          accW[j] += dy[j] * xh
          accB[j] += dy[j]
        }
        let meanG = Float(sumG / Double(C)), meanGX = Float(sumGX / Double(C))
        for j in 0..<C {
          let xh = (xr[j] - m) * s
          d[j] = s * (dy[j] * w[j] - meanG - xh * meanGX)
        }
      }
    }
    for (target, offset) in [(dWeight, 0), (dBias, C)] {
      guard let target else { continue }
      let t = f32(target), p = partial.value
      for c in 0..<chunks { for i in 0..<C { t[i] += p[2 * c * C + offset + i] } }
    }
  }
}
