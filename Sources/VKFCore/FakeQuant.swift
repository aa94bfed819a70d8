/// Quantisation-aware training's fake quantisation: a weight replaced by the dequantised form
/// of the quantisation its export will apply, so training sees the rounding it will suffer.
public enum FakeQuant: UInt32, Sendable, CaseIterable {
  /// int8 per output row, symmetric: scale = max|w_row| / 127.5 (2⁻²³ when 0),
  /// q = rint(clamp(w/scale, −128, 127)), ŵ = q·scale — `vkfinetune quantize`'s default
  /// (compressed-tensors' channel scheme) exactly.
  case int8Channel = 0
  /// llama.cpp's Q4_0 blocks of 32: d = (first value of largest magnitude) / −8, q = min(15,
  /// trunc(w·(1/d) + 8.5)), ŵ = (q − 8)·f16(d) — what `export --outtype q4_0` stores.
  case q4_0 = 1

  /// Consecutive row-major elements sharing one scale (int8Channel: the row length).
  public func blockSize(cols: Int) -> Int { self == .int8Channel ? cols : 32 }

  /// ŵ for `count` values of rows of `cols`, block `range` (the CPU reference of `fakeQuantize`).
  public func apply(_ w: UnsafePointer<Float>, into out: UnsafeMutablePointer<Float>, cols: Int, blocks: Range<Int>) {
    let n = blockSize(cols: cols)
    for b in blocks {
      let x = w + b * n, y = out + b * n
      switch self {
      case .int8Channel:
        var lo: Float = 0, hi: Float = 0
        for j in 0..<n { lo = min(lo, x[j]); hi = max(hi, x[j]) }
        var scale = max(abs(lo), abs(hi)) / 127.5
        if scale == 0 { scale = Float.ulpOfOne }
        for j in 0..<n {
          let v = x[j] / scale
          y[j] = (v.isNaN ? 0 : min(max(v, -128), 127).rounded(.toNearestOrEven)) * scale
        }
      case .q4_0:
        var amax: Float = 0, extreme: Float = 0
        for j in 0..<n where abs(x[j]) > amax { amax = abs(x[j]); extreme = x[j] }
        let d = extreme / -8
        let id: Float = d != 0 ? 1 / d : 0
        let stored = Float(Float16(d))
        for j in 0..<n {
          let t = x[j] * id + 8.5
          let q = t.isNaN ? 0 : min(15, max(0, t.rounded(.towardZero)))
          y[j] = (q - 8) * stored
        }
      }
    }
  }
}
