// ggml's reference K-quantisers (ggml-quants.c quantize_row_q{4,5,6}_K_ref, what llama-quantize
// runs without an importance matrix): super-blocks of 256, sub-block scales searched by
// weighted least squares and packed in 6 or 8 bits under an f16 super-scale. Every float
// expression keeps the reference's order and single roundings (no fused multiply-add) so the
// bytes equal llama.cpp's.

/// The Q4_K, Q5_K and Q6_K block encoders (one 256-value super-block each).
enum GGUFKQuantize {
  /// ggml's `nearest_int`: the f32 add of 1.5·2²³ rounds to nearest even; the low mantissa
  /// bits are the integer.
  @inline(__always)
  static func nearestInt(_ f: Float) -> Int32 {
    let v = f + 12_582_912
    return Int32(bitPattern: v.bitPattern & 0x007f_ffff) - 0x0040_0000
  }

  /// ggml's `GROUP_MAX_EPS`: a group whose largest magnitude is below it quantises to zero.
  static let groupMaxEps: Float = 1e-15

  /// `make_qkx2_quants`: levels 0…nmax, a scale and a (non-positive) offset for `n` values
  /// minimising the weighted squared error over `nstep + 1` trial scales. Returns the scale;
  /// `theMin` receives −offset.
  @inline(__always)
  static func affineLevels(_ n: Int, _ nmax: Int32, _ x: UnsafePointer<Float>, _ weights: UnsafePointer<Float>,
                           _ levels: UnsafeMutablePointer<UInt8>, _ theMin: inout Float,
                           _ aux: UnsafeMutablePointer<UInt8>, rmin: Float, rdelta: Float, nstep: Int) -> Float {
    var lo = x[0], hi = x[0]
    var sumW = weights[0]
    var sumX = sumW * x[0]
    for i in 1..<n {
      if x[i] < lo { lo = x[i] }
      if x[i] > hi { hi = x[i] }
      let w = weights[i]
      sumW += w
      sumX += w * x[i]
    }
    if lo > 0 { lo = 0 }
    if hi == lo {
      for i in 0..<n { levels[i] = 0 }
      theMin = -lo
      return 0
    }
    let fmax = Float(nmax)
    var iscale = fmax / (hi - lo)
    var scale = 1 / iscale
    var bestError: Float = 0
    for i in 0..<n {
      let l = max(0, min(nmax, nearestInt(iscale * (x[i] - lo))))
      levels[i] = UInt8(l)
      var diff = scale * Float(l) + lo - x[i]
      diff = diff * diff
      bestError += weights[i] * diff
    }
    for step in 0...nstep {
      iscale = (rmin + rdelta * Float(step) + fmax) / (hi - lo)
      var sumL: Float = 0, sumL2: Float = 0, sumXL: Float = 0
      for i in 0..<n {
        let l = max(0, min(nmax, nearestInt(iscale * (x[i] - lo))))
        aux[i] = UInt8(l)
        let w = weights[i], fl = Float(l)
        sumL += w * fl
        sumL2 += w * fl * fl
        sumXL += w * fl * x[i]
      }
      let det = sumW * sumL2 - sumL * sumL
      if det > 0 {
        var thisScale = (sumW * sumXL - sumX * sumL) / det
        var thisMin = (sumL2 * sumX - sumL * sumXL) / det
        if thisMin > 0 {
          thisMin = 0
          thisScale = sumXL / sumL2
        }
        var error: Float = 0
        for i in 0..<n {
          var diff = thisScale * Float(aux[i]) + thisMin - x[i]
          diff = diff * diff
          error += weights[i] * diff
        }
        if error < bestError {
          for i in 0..<n { levels[i] = aux[i] }
          bestError = error
          scale = thisScale
          lo = thisMin
        }
      }
    }
    theMin = -lo
    return scale
  }

  /// `make_qx_quants` with rmse_type 1 (weights x²): signed levels −nmax…nmax−1 stored + nmax,
  /// the scale chosen among 19 trial scales around nmax / (value of largest magnitude).
  @inline(__always)
  static func signedLevels(_ n: Int, _ nmax: Int32, _ x: UnsafePointer<Float>, _ levels: UnsafeMutablePointer<Int8>) -> Float {
    var amax: Float = 0, extreme: Float = 0
    for i in 0..<n where abs(x[i]) > amax { amax = abs(x[i]); extreme = x[i] }
    if amax < groupMaxEps {
      for i in 0..<n { levels[i] = 0 }
      return 0
    }
    let fmax = Float(nmax)
    var iscale = Float(-nmax) / extreme
    var sumLX: Float = 0, sumL2: Float = 0
    for i in 0..<n {
      let l = max(-nmax, min(nmax - 1, nearestInt(iscale * x[i])))
      levels[i] = Int8(l + nmax)
      let w = x[i] * x[i], fl = Float(l)
      sumLX += w * x[i] * fl
      sumL2 += w * fl * fl
    }
    var scale = sumL2 != 0 ? sumLX / sumL2 : 0
    var best = scale * sumLX
    for step in -9...9 where step != 0 {
      iscale = -(fmax + 0.1 * Float(step)) / extreme
      sumLX = 0
      sumL2 = 0
      for i in 0..<n {
        let fl = Float(max(-nmax, min(nmax - 1, nearestInt(iscale * x[i]))))
        let w = x[i] * x[i]
        sumLX += w * x[i] * fl
        sumL2 += w * fl * fl
      }
      if sumL2 > 0 && sumLX * sumLX > best * sumL2 {
        for i in 0..<n { levels[i] = Int8(max(-nmax, min(nmax - 1, nearestInt(iscale * x[i]))) + nmax) }
        scale = sumLX / sumL2
        best = scale * sumLX
      }
    }
    return scale
  }

  /// Q4_K and Q5_K share everything but the level count and the bit packing: eight sub-blocks
  /// of 32 with an affine scale and min each, both quantised to 6 bits under the f16 d and dmin.
  /// Writes d, dmin and the 12 packed scale bytes to `y` and the final levels to `levels`.
  @inline(__always)
  static func affineSuperBlock(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<UInt8>, nmax: Int32,
                               rmin: Float, nstep: Int, levels: UnsafeMutablePointer<UInt8>, scratch: Scratch) {
    var maxScale: Float = 0, maxMin: Float = 0
    let (scales, mins) = (scratch.scales, scratch.mins)
    for j in 0..<8 {
      let xs = x + 32 * j
      var sumX2: Float = 0
      for l in 0..<32 { sumX2 += xs[l] * xs[l] }
      let av = (sumX2 / 32).squareRoot()
      for l in 0..<32 { scratch.weights[l] = av + abs(xs[l]) }
      scales[j] = affineLevels(32, nmax, xs, scratch.weights, levels + 32 * j, &mins[j], scratch.aux,
                               rmin: rmin, rdelta: 0.1, nstep: nstep)
      if scales[j] > maxScale { maxScale = scales[j] }
      if mins[j] > maxMin { maxMin = mins[j] }
    }
    let invScale: Float = maxScale > 0 ? 63 / maxScale : 0
    let invMin: Float = maxMin > 0 ? 63 / maxMin : 0
    let sc = y + 4
    for j in 0..<8 {
      let ls = min(63, UInt8(truncatingIfNeeded: nearestInt(invScale * scales[j])))
      let lm = min(63, UInt8(truncatingIfNeeded: nearestInt(invMin * mins[j])))
      if j < 4 {
        sc[j] = ls
        sc[j + 4] = lm
      } else {
        sc[j + 4] = (ls & 0x0F) | ((lm & 0x0F) << 4)
        sc[j - 4] |= (ls >> 4) << 6
        sc[j] |= (lm >> 4) << 6
      }
    }
    GGUFQuantize.storeHalf(maxScale / 63, y)
    GGUFQuantize.storeHalf(maxMin / 63, y + 2)
    let d = Float(Float16(bitPattern: UInt16(y[0]) | UInt16(y[1]) << 8))
    let dmin = Float(Float16(bitPattern: UInt16(y[2]) | UInt16(y[3]) << 8))
    for j in 0..<8 {
      let (s, m) = scaleMin(j, sc)
      let dj = d * Float(s)
      if dj == 0 { continue }
      let dm = dmin * Float(m)
      for i in 0..<32 {
        levels[32 * j + i] = UInt8(max(0, min(nmax, nearestInt((x[32 * j + i] + dm) / dj))))
      }
    }
  }

  /// Sub-block `j`'s 6-bit scale and min from the 12 packed bytes (`get_scale_min_k4`).
  @inline(__always)
  static func scaleMin(_ j: Int, _ q: UnsafeMutablePointer<UInt8>) -> (UInt8, UInt8) {
    if j < 4 { return (q[j] & 63, q[j + 4] & 63) }
    return ((q[j + 4] & 0x0F) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
  }

  /// Q4_K (144 bytes: f16 d, f16 dmin, 12 scale bytes, 128 bytes of nibbles; each 64 values
  /// share 32 bytes, the first 32 in the low nibbles): levels 0…15, 21 trial scales.
  static func q4_KBlock(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<UInt8>) {
    withScratch { scratch in
      let levels = scratch.levels
      affineSuperBlock(x, y, nmax: 15, rmin: -1, nstep: 20, levels: levels, scratch: scratch)
      let q = y + 16
      for c in 0..<4 {
        for l in 0..<32 { q[32 * c + l] = levels[64 * c + l] | (levels[64 * c + l + 32] << 4) }
      }
    }
  }

  /// Q5_K (176 bytes: f16 d, f16 dmin, 12 scale bytes, 32 bytes of fifth bits, 128 bytes of
  /// nibbles): levels 0…31, 16 trial scales; chunk c's values l and l + 32 put their fifth
  /// bits in bits 2c and 2c + 1 of high byte l.
  static func q5_KBlock(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<UInt8>) {
    withScratch { scratch in
      let levels = scratch.levels
      affineSuperBlock(x, y, nmax: 31, rmin: -0.5, nstep: 15, levels: levels, scratch: scratch)
      let qh = y + 16, ql = y + 48
      for j in 0..<32 { qh[j] = 0 }
      for c in 0..<4 {
        for j in 0..<32 {
          var l1 = levels[64 * c + j], l2 = levels[64 * c + j + 32]
          if l1 > 15 { l1 -= 16; qh[j] |= 1 << (2 * c) }
          if l2 > 15 { l2 -= 16; qh[j] |= 2 << (2 * c) }
          ql[32 * c + j] = l1 | (l2 << 4)
        }
      }
    }
  }

  /// Q6_K (210 bytes: 128 bytes of low nibbles, 64 of high bit pairs, 16 int8 sub-scales, f16
  /// d): sixteen sub-blocks of 16 with signed levels −32…31, their scales quantised to int8
  /// under d = max-magnitude scale / −128.
  static func q6_KBlock(_ x: UnsafePointer<Float>, _ y: UnsafeMutablePointer<UInt8>) {
    withScratch { scratch in
      let levels = UnsafeMutableRawPointer(scratch.levels).assumingMemoryBound(to: Int8.self)
      let scales = scratch.weights  // 16 sub-block scales
      var maxScale: Float = 0, maxAbs: Float = 0
      for b in 0..<16 {
        let s = signedLevels(16, 32, x + 16 * b, levels + 16 * b)
        scales[b] = s
        if abs(s) > maxAbs { maxAbs = abs(s); maxScale = s }
      }
      if maxAbs < groupMaxEps {
        for k in 0..<210 { y[k] = 0 }
        return
      }
      let iscale: Float = -128 / maxScale
      GGUFQuantize.storeHalf(1 / iscale, y + 208)
      let d = Float(Float16(bitPattern: UInt16(y[208]) | UInt16(y[209]) << 8))
      for b in 0..<16 { y[192 + b] = UInt8(truncatingIfNeeded: min(127, nearestInt(iscale * scales[b]))) }
      for b in 0..<16 {
        let db = d * Float(Int8(bitPattern: y[192 + b]))
        if db == 0 { continue }
        for i in 0..<16 { levels[16 * b + i] = Int8(max(-32, min(31, nearestInt(x[16 * b + i] / db))) + 32) }
      }
      let ql = y, qh = y + 128
      for half in 0..<2 {
        let l0 = levels + 128 * half, lo = ql + 64 * half, hi = qh + 32 * half
        for l in 0..<32 {
          let q = (UInt8(l0[l]), UInt8(l0[l + 32]), UInt8(l0[l + 64]), UInt8(l0[l + 96]))
          lo[l] = (q.0 & 0x0F) | ((q.2 & 0x0F) << 4)
          lo[l + 32] = (q.1 & 0x0F) | ((q.3 & 0x0F) << 4)
          hi[l] = (q.0 >> 4) | ((q.1 >> 4) << 2) | ((q.2 >> 4) << 4) | ((q.3 >> 4) << 6)
        }
      }
    }
  }

  /// One super-block's working memory, on the stack: 256 levels, 32 weights (Q6_K: its 16
  /// scales), 32 trial levels, 8 scales and 8 mins, all zeroed.
  struct Scratch {
    let levels: UnsafeMutablePointer<UInt8>
    let aux: UnsafeMutablePointer<UInt8>
    let weights: UnsafeMutablePointer<Float>
    let scales: UnsafeMutablePointer<Float>
    let mins: UnsafeMutablePointer<Float>
  }

  @inline(__always)
  static func withScratch(_ body: (Scratch) -> Void) {
    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 256 + 32) { bytes in
      bytes.initialize(repeating: 0)
      withUnsafeTemporaryAllocation(of: Float.self, capacity: 32 + 8 + 8) { floats in
        floats.initialize(repeating: 0)
        let b = bytes.baseAddress!, f = floats.baseAddress!
        body(Scratch(levels: b, aux: b + 256, weights: f, scales: f + 32, mins: f + 40))
      }
    }
  }
}
