/// bitsandbytes' double quantisation of NF4 block scales (`quantize_4bit(…,
/// compress_statistics=True)`, QLoRA §3): the per-block f32 absmax values, less their mean
/// (`offset`), are quantised blockwise — `blockSize` absmax values per f32 scale — to the
/// signed 8-bit dynamic map. A block's absmax is then `map[code]·scale + offset`: two f32
/// operations, the multiply rounded before the add (`dequantize_4bit` runs them as two torch
/// ops). Kernels read the codes and scales and decode as they go (`Shaders/common/nf4.glsl`),
/// so an NF4 weight costs ½ byte per value plus ~1 byte per `NF4.defaultBlockSize` values.
public enum NF4DoubleQuant {
  /// Absmax values per nested f32 scale (bitsandbytes' `quantize_blockwise(…, blocksize=256)`).
  public static let blockSize = 256

  /// One weight's double-quantised absmax.
  public struct Encoded: Sendable, Equatable {
    /// One map index per absmax value.
    public var codes: [UInt8]
    /// One f32 scale per `blockSize` codes.
    public var scales: [Float]
    /// The mean absmax, added back after scaling.
    public var offset: Float

    public init(codes: [UInt8], scales: [Float], offset: Float) {
      self.codes = codes; self.scales = scales; self.offset = offset
    }

    /// The absmax values the kernels use.
    public var decoded: [Float] {
      var out = [Float](repeating: 0, count: codes.count)
      codes.withUnsafeBufferPointer { c in
        scales.withUnsafeBufferPointer { s in
          out.withUnsafeMutableBufferPointer { o in
            guard let cp = c.baseAddress, let sp = s.baseAddress, let op = o.baseAddress else { return }
            NF4DoubleQuant.decode(codes: cp, scales: sp, offset: offset, count: codes.count, into: op)
          }
        }
      }
      return out
    }
  }

  /// absmax[i] = dynamicMap[codes[i]]·scales[i / blockSize] + offset for i < count, the
  /// multiply rounded before the add: the CPU twin of `nf4_dq_absmax` in common/nf4.glsl.
  public static func decode(codes: UnsafePointer<UInt8>, scales: UnsafePointer<Float>, offset: Float,
                            count: Int, into out: UnsafeMutablePointer<Float>) {
    dynamicMap.withUnsafeBufferPointer { m in
      guard let map = m.baseAddress else { return }
      for i in 0..<count {
        let scaled = map[Int(codes[i])] * scales[i / blockSize]
        out[i] = scaled + offset
      }
    }
  }

  /// Double-quantises `absmax`. Codes are the nearest map entries (bitsandbytes' default and
  /// CUDA kernels); its CPU kernel's approximate table search picks the second-nearest for
  /// ~0.4 % of values.
  public static func encode(_ absmax: [Float]) -> Encoded {
    guard !absmax.isEmpty else { return Encoded(codes: [], scales: [], offset: 0) }
    // torch's f32 mean: sum (here in Double, then rounded), divided by the count in f32.
    let offset = Float(absmax.reduce(0.0) { $0 + Double($1) }) / Float(absmax.count)
    let centered = absmax.map { $0 - offset }
    let map = dynamicMap
    var codes = [UInt8](repeating: 0, count: centered.count)
    var scales: [Float] = []
    for start in stride(from: 0, to: centered.count, by: blockSize) {
      let block = start..<min(centered.count, start + blockSize)
      let scale = centered[block].reduce(Float(0)) { max($0, abs($1)) }
      scales.append(scale)
      for i in block {
        let normed = scale > 0 ? min(1, max(-1, centered[i] / scale)) : 0
        codes[i] = nearestCode(normed, map)
      }
    }
    return Encoded(codes: codes, scales: scales, offset: offset)
  }

  /// Index of the map entry nearest to `x` (the lower one on a tie, like `torch.argmin`).
  static func nearestCode(_ x: Float, _ map: [Float]) -> UInt8 {
    // First entry ≥ x, then compare with its lower neighbour.
    var lo = 0, hi = map.count - 1
    while lo < hi {
      let mid = (lo + hi) / 2
      if map[mid] < x { lo = mid + 1 } else { hi = mid }
    }
    if lo > 0, abs(x - map[lo - 1]) <= abs(map[lo] - x) { lo -= 1 }
    return UInt8(lo)
  }

  /// bitsandbytes' `create_dynamic_map(signed=True, max_exponent_bits=7, total_bits=8)`, sorted:
  /// for i in 0..<7, the midpoints of `torch.linspace(0.1, 1, 2^i + 1)` (f32) times ±10^(i−6),
  /// plus 0 and 1 — 256 values in [−0.993, 1]. Shaders get it as bit patterns through
  /// `Shaders/common/nf4.glsl`, which a test checks against this table.
  public static let dynamicMap: [Float] = {
    var data: [Float] = []
    let decades: [Double] = [1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1]
    for i in 0..<7 {
      let b = linspaceF32(start: 0.1, end: 1, steps: (1 << i) + 1)
      let means = (0..<(b.count - 1)).map { (b[$0] + b[$0 + 1]) / 2 }
      let scale = Float(decades[i])  // torch multiplies an f32 tensor by the scalar in f32
      data += means.map { scale * $0 }
      data += means.map { -scale * $0 }
    }
    data += [0, 1]
    return data.sorted()
  }()

  /// `torch.linspace(start, end, steps, dtype=float32)` as ATen's CPU kernel computes it: an
  /// f32 step; the first half counts up from start, the second half down from end, each value
  /// one fused multiply-add (checked bit for bit against torch 2.13 in QLoRATests).
  public static func linspaceF32(start: Float, end: Float, steps: Int) -> [Float] {
    guard steps > 1 else { return steps == 1 ? [start] : [] }
    let step = (end - start) / Float(steps - 1)
    let halfway = steps / 2
    return (0..<steps).map { i in
      i < halfway ? start.addingProduct(step, Float(i)) : end.addingProduct(-step, Float(steps - i - 1))
    }
  }
}
