#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif
import VKFCore

// MARK: - RMSNorm (Llama's LlamaRMSNorm: weight · x / sqrt(mean(x²) + eps))
// Legend: R rows (tokens), C channels (the last dimension).

extension CPUBackend {
  public func rmsNorm(_ x: Tensor, weight: Tensor, weightOffset: Float, eps: Float, into out: Tensor,
                      rstd: Tensor) throws {
    try validate(.rmsNorm, x, weight, out, rstd)
    try ShapeCheck.rmsNorm(x, weight, out, rstd)
    let C = x.lastDim, R = x.rowCount
    guard C > 0 else { return }
    let px = UncheckedSendable(UnsafePointer(f32(x))), pw = UncheckedSendable(UnsafePointer(f32(weight)))
    let po = UncheckedSendable(f32(out)), pr = UncheckedSendable(f32(rstd))
    CPUParallel.forRanges(R, cost: C) { rows in
      let w = pw.value
      for r in rows {
        let xr = px.value + r * C, o = po.value + r * C
        // Mean of squares in Double: the one reduction where f32 error would reach the output.
        let ms = CPUMath.sumOfSquares(xr, C) / Double(C)
        let s = Float(1 / (ms + Double(eps)).squareRoot())
        pr.value[r] = s
        if weightOffset == 0 {
          for j in 0..<C { o[j] = w[j] * (xr[j] * s) }
        } else {
          for j in 0..<C { o[j] = (w[j] + weightOffset) * (xr[j] * s) }
        }
      }
    }
  }

  /// dx = rstd·(dy⊙w' − x·rstd²·Σ(dy⊙w'⊙x)/C) with w' = w + offset; dWeight += Σ_rows dy⊙x·rstd.
  public func rmsNormBackward(_ dOut: Tensor, x: Tensor, weight: Tensor, weightOffset: Float, rstd: Tensor,
                              dx: Tensor, dWeight: Tensor?) throws {
    try validate(.rmsNormBackward, dOut, x, weight, rstd, dx, dWeight)
    try ShapeCheck.rmsNormBackward(dOut, x, weight, rstd, dx, dWeight)
    let C = x.lastDim, R = x.rowCount
    guard C > 0, R > 0 else { return }
    let chunks = CPUParallel.chunkCount(R, cost: 3 * C)
    // Per-chunk dWeight partials, summed in chunk order afterwards: deterministic; then, with
    // an offset, w' = w + offset (one scratch request: a second one may move the first).
    let partialCount = dWeight == nil ? 0 : chunks * C
    let buffer = try scratch.floats(partialCount + (weightOffset == 0 ? 0 : C))
    let partial = UncheckedSendable(dWeight == nil ? nil : buffer)
    if let p = partial.value { p.update(repeating: 0, count: chunks * C) }
    let pdy = UncheckedSendable(UnsafePointer(f32(dOut))), px = UncheckedSendable(UnsafePointer(f32(x)))
    let pw = UncheckedSendable(UnsafePointer(f32(weight))), pr = UncheckedSendable(UnsafePointer(f32(rstd)))
    let pdx = UncheckedSendable(f32(dx))
    // With an offset, w' = w + offset in a scratch row after the partials.
    let shifted = UncheckedSendable(weightOffset == 0 ? nil : buffer + partialCount)
    if let sw = shifted.value { for i in 0..<C { sw[i] = pw.value[i] + weightOffset } }
    CPUParallel.forChunks(R, cost: 3 * C) { chunk, rows in
      let acc = partial.value.map { $0 + chunk * C }
      let w = shifted.value.map { UnsafePointer($0) } ?? pw.value
      for r in rows {
        let dy = pdy.value + r * C, xr = px.value + r * C, d = pdx.value + r * C
        let s = pr.value[r]
        // Everything that reads dy happens before dx is written: dx may alias dOut.
        let dot = CPUMath.dot3(dy, w, xr, C)
        if let acc { for i in 0..<C { acc[i] += dy[i] * (xr[i] * s) } }
        let k = s * s * Float(dot / Double(C))
        for i in 0..<C { d[i] = s * (dy[i] * w[i] - xr[i] * k) }
      }
    }
    if let dWeight, let p = partial.value {
      let dw = f32(dWeight)
      for c in 0..<chunks { for i in 0..<C { dw[i] += p[c * C + i] } }
    }
  }
}

// MARK: - Rotary position embedding (Hugging Face rotate-half)
// Legend: T tokens, NH heads, HS head size, H = HS/2.

extension CPUBackend {
  public func rope(_ x: Tensor, positions: Tensor, invFreq: Tensor, into out: Tensor) throws {
    try validate(.rope, x, positions, invFreq, out)
    try ShapeCheck.rope(.rope, x, positions, invFreq, out)
    rotate(x, positions: positions, invFreq: invFreq, into: out, sign: 1)
  }

  public func ropeBackward(_ dOut: Tensor, positions: Tensor, invFreq: Tensor,
                           into dx: Tensor) throws {
    try validate(.ropeBackward, dOut, positions, invFreq, dx)
    try ShapeCheck.rope(.ropeBackward, dOut, positions, invFreq, dx)
    rotate(dOut, positions: positions, invFreq: invFreq, into: dx, sign: -1)
  }

  /// out[i] = x[i]·c − x[i+H]·s·sign; out[i+H] = x[i+H]·c + x[i]·s·sign, with angle
  /// Float(pos)·invFreq[i] in f32 as transformers computes it. In place is fine.
  private func rotate(_ x: Tensor, positions: Tensor, invFreq: Tensor, into out: Tensor,
                      sign: Float) {
    let T = x.shape[0], NH = x.shape[1], HS = x.shape[2], H = HS / 2
    guard T > 0, H > 0 else { return }
    let px = UncheckedSendable(UnsafePointer(f32(x))), po = UncheckedSendable(f32(out))
    let pos = UncheckedSendable(UnsafePointer(i32(positions)))
    let inv = UncheckedSendable(UnsafePointer(f32(invFreq)))
    CPUParallel.forRanges(T, cost: NH * HS) { tokens in
      withUnsafeTemporaryAllocation(of: Float.self, capacity: HS) { cs in
        let c = cs.baseAddress.unsafelyUnwrapped, s = c + H
        for t in tokens {
          let p = Float(pos.value[t])
          for i in 0..<H {
            let angle = p * inv.value[i]
            c[i] = cosf(angle); s[i] = sinf(angle) * sign
          }
          for h in 0..<NH {
            // Separate half pointers: `i + H` indexing carries an overflow check per element
            // that stops LLVM from vectorising the loop.
            let x1 = px.value + (t * NH + h) * HS, x2 = x1 + H
            let o1 = po.value + (t * NH + h) * HS, o2 = o1 + H
            for i in 0..<H {
              let a = x1[i], b = x2[i]
              o1[i] = a * c[i] - b * s[i]
              o2[i] = b * c[i] + a * s[i]
            }
          }
        }
      }
    }
  }
}
