/// NF4 (4-bit NormalFloat) exactly as bitsandbytes stores it (QLoRA, arXiv:2305.14314):
/// blocks of `blockSize` consecutive elements of the row-major weight, one f32 absmax per
/// block, two 4-bit codebook indices per byte with the first element in the high nibble.
public enum NF4 {
  /// The 16 NF4 code values (bitsandbytes `get_4bit_type("nf4")`). The single source of
  /// truth: shaders get it through `Shaders/common/nf4.glsl`, which a test checks against it.
  public static let codebook: [Float] = [
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
    -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
    0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
    0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
  ]

  /// bitsandbytes' default block size.
  public static let defaultBlockSize = 64

  /// Index of the code nearest to `x` (x already divided by absmax, in [-1, 1]).
  /// Decision boundaries are the midpoints between neighbouring codes, as in bitsandbytes'
  /// `dQuantizeNF4` (ties go to the upper code).
  @inline(__always)
  public static func nearestCode(_ x: Float) -> UInt8 {
    // Binary search over the 15 midpoints.
    var lo = 0, hi = 15
    while lo < hi {
      let mid = (lo + hi) / 2
      let boundary = (codebook[mid] + codebook[mid + 1]) * 0.5
      if x > boundary { lo = mid + 1 } else { hi = mid }
    }
    return UInt8(lo)
  }

  /// Quantises `values` (row-major, even count) to packed NF4 bytes and per-block absmax.
  public static func quantize(_ values: [Float], blockSize: Int = defaultBlockSize)
    -> (packed: [UInt8], absmax: [Float])
  {
    precondition(values.count % 2 == 0 && blockSize % 2 == 0)
    let blocks = (values.count + blockSize - 1) / blockSize
    var absmax = [Float](repeating: 0, count: blocks)
    for b in 0..<blocks {
      var m: Float = 0
      for i in (b * blockSize)..<min(values.count, (b + 1) * blockSize) { m = max(m, abs(values[i])) }
      absmax[b] = m
    }
    var packed = [UInt8](repeating: 0, count: values.count / 2)
    for p in 0..<packed.count {
      let e = 2 * p
      let scale = absmax[e / blockSize]
      let inv: Float = scale > 0 ? 1 / scale : 0
      let q0 = nearestCode(min(1, max(-1, values[e] * inv)))
      let q1 = nearestCode(min(1, max(-1, values[e + 1] * inv)))
      packed[p] = (q0 << 4) | q1
    }
    return (packed, absmax)
  }

  /// Dequantises packed NF4 back to f32 (the CPU reference for `dequantizeNF4`).
  public static func dequantize(packed: [UInt8], absmax: [Float], count: Int,
                                blockSize: Int = defaultBlockSize) -> [Float] {
    var out = [Float](repeating: 0, count: count)
    for e in 0..<count {
      let byte = packed[e / 2]
      let q = e % 2 == 0 ? byte >> 4 : byte & 0x0F
      out[e] = codebook[Int(q)] * absmax[e / blockSize]
    }
    return out
  }
}

/// An NF4 weight's per-block scales on a backend.
public enum NF4Scales: Sendable {
  /// One f32 absmax per block (`bnb_4bit_use_double_quant=False`).
  case f32(Tensor)
  /// Double-quantised (`NF4DoubleQuant`): u8 `codes`, one per block; f32 `scales`, one per
  /// `NF4DoubleQuant.blockSize` codes; absmax = dynamicMap[code]·scale + offset, decoded in
  /// the kernels.
  case doubleQuantized(codes: Tensor, scales: Tensor, offset: Float)
}

/// A frozen NF4 weight on a backend: W (rows, cols) = codebook[q] · absmax[block].
public struct NF4Weight: Sendable {
  /// Packed indices: u8, rows·cols/2 bytes, high nibble first.
  public var packed: Tensor
  /// Per-block scales, plain or double-quantised.
  public var scales: NF4Scales
  /// Output features (rows of W).
  public var rows: Int
  /// Input features (columns of W).
  public var cols: Int
  /// Elements per absmax block.
  public var blockSize: Int

  public init(packed: Tensor, scales: NF4Scales, rows: Int, cols: Int,
              blockSize: Int = NF4.defaultBlockSize) {
    self.packed = packed; self.scales = scales
    self.rows = rows; self.cols = cols; self.blockSize = blockSize
  }

  /// Absmax blocks: ceil(rows·cols / blockSize).
  public var blockCount: Int { (rows * cols + blockSize - 1) / blockSize }

  /// Every tensor the weight holds (packed first), for ownership checks and residency.
  public var tensors: [Tensor] {
    switch scales {
    case .f32(let a): return [packed, a]
    case .doubleQuantized(let codes, let s, _): return [packed, codes, s]
    }
  }

  /// Device bytes of the weight (packed codes and scales).
  public var bytes: Int { tensors.reduce(0) { $0 + $1.byteCount } }

  /// The same weight with each tensor replaced by `f(tensor)` (views, copies on another backend).
  public func mapped(_ f: (Tensor) throws -> Tensor) rethrows -> NF4Weight {
    let s: NF4Scales
    switch scales {
    case .f32(let a): s = .f32(try f(a))
    case .doubleQuantized(let codes, let sc, let offset):
      s = .doubleQuantized(codes: try f(codes), scales: try f(sc), offset: offset)
    }
    return NF4Weight(packed: try f(packed), scales: s, rows: rows, cols: cols, blockSize: blockSize)
  }

  /// The per-block absmax values the kernels use, read back from `backend`.
  public func absmax(on backend: Backend) throws -> [Float] {
    switch scales {
    case .f32(let a): return try backend.floats(a)
    case .doubleQuantized(let codes, let s, let offset):
      return NF4DoubleQuant.Encoded(codes: try backend.download(codes, as: UInt8.self),
                                    scales: try backend.floats(s), offset: offset).decoded
    }
  }

  /// Quantises an f32 weight (rows, cols) on the CPU and uploads it to `backend`, with the
  /// block scales double-quantised when `doubleQuant` (as bitsandbytes' QLoRA default).
  public static func quantizing(_ values: [Float], rows: Int, cols: Int, on backend: Backend,
                                blockSize: Int = NF4.defaultBlockSize,
                                doubleQuant: Bool = false) throws -> NF4Weight {
    guard values.count == rows * cols, values.count % 2 == 0, blockSize > 0, blockSize % 2 == 0 else {
      throw VKFError.shapeMismatch(op: "quantizeNF4",
        detail: "\(values.count) values for (\(rows), \(cols)), block \(blockSize)")
    }
    let (packed, absmax) = NF4.quantize(values, blockSize: blockSize)
    let scales: NF4Scales
    if doubleQuant {
      let e = NF4DoubleQuant.encode(absmax)
      scales = .doubleQuantized(codes: try backend.tensor(e.codes, shape: [e.codes.count], .u8),
                                scales: try backend.tensor(e.scales, shape: [e.scales.count]),
                                offset: e.offset)
    } else {
      scales = .f32(try backend.tensor(absmax, shape: [absmax.count]))
    }
    return NF4Weight(packed: try backend.tensor(packed, shape: [packed.count], .u8),
                     scales: scales, rows: rows, cols: cols, blockSize: blockSize)
  }
}

/// The frozen base of a linear layer: dense f32, NF4 or int8, all (out, in).
public enum LinearWeight: Sendable {
  case dense(Tensor)
  case nf4(NF4Weight)
  case int8(Int8Weight)

  /// (out features, in features).
  public var outFeatures: Int {
    switch self { case .dense(let t): return t.shape.first ?? 0; case .nf4(let q): return q.rows; case .int8(let q): return q.rows }
  }
  public var inFeatures: Int {
    switch self { case .dense(let t): return t.lastDim; case .nf4(let q): return q.cols; case .int8(let q): return q.cols }
  }
}
