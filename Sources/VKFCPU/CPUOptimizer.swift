import VKFCore

// MARK: - AdamW (torch.optim.AdamW, decoupled weight decay)

extension CPUBackend {
  /// Reads the packed hyper-parameters (`AdamWHyperParameters.packed`) and updates param,
  /// m and v in place. Clipping uses Σ of the raw gradient squares, as the kernels do.
  public func adamW(param: Tensor, grad: Tensor, m: Tensor, v: Tensor, hyper: Tensor,
                    gradSumOfSquares: Tensor?) throws {
    try validate(.adamW, param, grad, m, v, hyper, gradSumOfSquares)
    try ShapeCheck.adamW(param, grad, m, v, hyper, gradSumOfSquares)
    let h = f32(hyper)
    let lr = h[0], beta1 = h[1], beta2 = h[2], eps = h[3], wd = h[4]
    let bc1 = h[5], bc2 = h[6], gradScale = h[7], maxGradNorm = h[8]
    var clip: Float = 1
    if maxGradNorm > 0, gradSumOfSquares == nil {
      throw VKFError.shapeMismatch(op: "adamW",
        detail: "maxGradNorm \(maxGradNorm) > 0 needs gradSumOfSquares from sumOfSquares")
    }
    if let s = gradSumOfSquares {
      let sum = f32(s)[0]
      // A non-finite Σgrad² (or loss folded into it) skips the step, as adam_w.comp does.
      guard sum.isFinite else { return }
      if maxGradNorm > 0 {
        clip = AdamWHyperParameters.clipFactor(sumOfSquares: sum, gradScale: gradScale, maxGradNorm: maxGradNorm)
      }
    }
    let gScale = gradScale * clip
    let decay = 1 - lr * wd
    let stepSize = lr / bc1
    let sqrtBC2 = bc2.squareRoot()
    let pp = UncheckedSendable(f32(param)), pg = UncheckedSendable(UnsafePointer(f32(grad)))
    let pm = UncheckedSendable(f32(m)), pv = UncheckedSendable(f32(v))
    CPUParallel.forRanges(param.count, cost: 4) { r in
      let o = r.lowerBound
      CPUBackend.adamWKernel(pp.value + o, pg.value + o, pm.value + o, pv.value + o, r.count,
                             gScale: gScale, beta1: beta1, beta2: beta2, decay: decay,
                             stepSize: stepSize, sqrtBC2: sqrtBC2, eps: eps)
    }
  }

  /// The element loop, with every scalar a parameter so LLVM keeps them in registers and
  /// vectorises (captured closure values may alias the stores and block that).
  static func adamWKernel(_ p: UnsafeMutablePointer<Float>, _ g: UnsafePointer<Float>,
                          _ m: UnsafeMutablePointer<Float>, _ v: UnsafeMutablePointer<Float>,
                          _ n: Int, gScale: Float, beta1: Float, beta2: Float, decay: Float,
                          stepSize: Float, sqrtBC2: Float, eps: Float) {
    for i in 0..<n {
      let gi = g[i] * gScale
      let mi = beta1 * m[i] + (1 - beta1) * gi
      let vi = beta2 * v[i] + (1 - beta2) * (gi * gi)
      m[i] = mi; v[i] = vi
      // torch: param.mul_(1 − lr·wd); param.addcdiv_(m, v.sqrt() / sqrt(bc2) + eps, −lr/bc1).
      // `.magnitude` (v ≥ 0 anyway) tells LLVM the root cannot set errno, so it vectorises.
      p[i] = p[i] * decay - stepSize * (mi / (vi.magnitude.squareRoot() / sqrtBC2 + eps))
    }
  }
}
