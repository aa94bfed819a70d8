/// Scalar kernels the row-wise ops share, written so that LLVM vectorises the loops that
/// call them (no libm calls, no trapping conversions) or with explicit SIMD accumulators
/// where a float reduction would otherwise stay scalar (Swift has no fast-math).
enum CPUMath {
  // MARK: - exp

  /// e^x for f32 in ~1 ulp (Cephes `expf`: x = n·ln2 + r, degree-6 polynomial in r, then
  /// scale by 2ⁿ through the exponent bits). Branch-free so loops calling it vectorise;
  /// exact 0 below −87.3 (where expf goes subnormal), +∞ above 88.7, NaN stays NaN.
  @inline(__always)
  static func exp(_ x: Float) -> Float {
    let hi: Float = 88.72283, lo: Float = -87.33654
    let xc = Swift.min(Swift.max(x, lo), hi)
    // n = round(x / ln 2) with the 1.5·2²³ trick: its low mantissa bits hold n.
    let magic: Float = 12_582_912
    let t = xc * 1.442695041 + magic
    let n = t - magic
    let r = xc - n * 0.693359375 + n * 2.12194440e-4
    let z = r * r
    var p: Float = 1.9875691500e-4
    p = p * r + 1.3981999507e-3
    p = p * r + 8.3334519073e-3
    p = p * r + 4.1665795894e-2
    p = p * r + 1.6666665459e-1
    p = p * r + 5.0000001201e-1
    let y = p * z + r + 1
    // 2ⁿ: n ∈ [−126, 128]; build it as 2^(n/2)·2^(n−n/2) so n = 128 does not overflow.
    let ni = Int32(bitPattern: t.bitPattern &- magic.bitPattern)
    let half = ni >> 1
    let s1 = Float(bitPattern: UInt32(bitPattern: (half &+ 127) << 23))
    let s2 = Float(bitPattern: UInt32(bitPattern: (ni &- half &+ 127) << 23))
    let e = y * s1 * s2
    let under: Float = x < lo ? 0 : e
    return x > hi ? .infinity : under
  }

  /// Soft-capping cap·tanh(s / cap) (Gemma 2's scores and logits), tanh u = 1 − 2/(e^{2u} + 1):
  /// saturates to ±cap without NaN, absolute error ~1e-7·cap near 0 (what a softmax sees).
  @inline(__always)
  static func softcap(_ s: Float, _ cap: Float) -> Float { cap * (1 - 2 / (exp(2 * s / cap) + 1)) }

  /// Logistic sigmoid 1 / (1 + e^(−x)), saturating cleanly to 0 and 1.
  @inline(__always)
  static func sigmoid(_ x: Float) -> Float { 1 / (1 + exp(-x)) }

  // MARK: - Reductions

  /// Elements per block of a float SIMD reduction before the block sum joins a Double:
  /// each of the 16 lanes adds ≤ 256 terms in f32, the blocks are exact-ish in Double.
  static let reductionBlock = 4096

  /// max over p[0..<n] (−∞ for n = 0).
  static func max(_ p: UnsafePointer<Float>, _ n: Int) -> Float {
    var i = 0
    var acc = SIMD16<Float>(repeating: -.infinity)
    let raw = UnsafeRawPointer(p)
    while i + 16 <= n {
      // Not pointwiseMax: its NaN handling compiles to a per-lane loop (10× slower).
      // A NaN never wins here, but it still reaches the output through exp(NaN − m).
      let v = raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
      acc.replace(with: v, where: v .> acc)
      i += 16
    }
    var m = acc.max()
    while i < n { m = Swift.max(m, p[i]); i += 1 }
    return m
  }

  /// Σ p[i] with f32 SIMD lanes inside blocks and a Double across blocks.
  static func sum(_ p: UnsafePointer<Float>, _ n: Int) -> Double {
    var total = 0.0
    var start = 0
    let raw = UnsafeRawPointer(p)
    while start < n {
      let end = Swift.min(n, start + reductionBlock)
      var acc = SIMD16<Float>()
      var i = start
      while i + 16 <= end {
        acc += raw.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
        i += 16
      }
      var s = Double(acc.sum())
      while i < end { s += Double(p[i]); i += 1 }
      total += s
      start = end
    }
    return total
  }

  /// Σ a[i]·b[i] with the same blocking as `sum`.
  static func dot(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ n: Int) -> Double {
    var total = 0.0
    var start = 0
    let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b)
    while start < n {
      let end = Swift.min(n, start + reductionBlock)
      var acc = SIMD16<Float>()
      var i = start
      while i + 16 <= end {
        let x = ra.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
        let y = rb.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
        acc += x * y  // not addProduct: fma is a libcall on baseline x86-64
        i += 16
      }
      var s = Double(acc.sum())
      while i < end { s += Double(a[i]) * Double(b[i]); i += 1 }
      total += s
      start = end
    }
    return total
  }

  /// Σ a[i]·b[i]·c[i] with the same blocking as `sum`.
  static func dot3(_ a: UnsafePointer<Float>, _ b: UnsafePointer<Float>, _ c: UnsafePointer<Float>,
                   _ n: Int) -> Double {
    var total = 0.0
    var start = 0
    let ra = UnsafeRawPointer(a), rb = UnsafeRawPointer(b), rc = UnsafeRawPointer(c)
    while start < n {
      let end = Swift.min(n, start + reductionBlock)
      var acc = SIMD16<Float>()
      var i = start
      while i + 16 <= end {
        let x = ra.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
        let y = rb.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
        let z = rc.loadUnaligned(fromByteOffset: i * 4, as: SIMD16<Float>.self)
        acc += x * y * z
        i += 16
      }
      var s = Double(acc.sum())
      while i < end { s += Double(a[i] * b[i] * c[i]); i += 1 }
      total += s
      start = end
    }
    return total
  }

  /// Σ p[i]² (see `dot`).
  static func sumOfSquares(_ p: UnsafePointer<Float>, _ n: Int) -> Double { dot(p, p, n) }
}
