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

/// A frozen NF4 weight on a backend: W (rows, cols) = codebook[q] · absmax[block].
public struct NF4Weight: Sendable {
  /// Packed indices: u8, rows·cols/2 bytes, high nibble first.
  public var packed: Tensor
  /// Per-block scale: f32, ceil(rows·cols / blockSize) values (double quantisation is
  /// undone at load, so kernels read f32).
  public var absmax: Tensor
  /// Output features (rows of W).
  public var rows: Int
  /// Input features (columns of W).
  public var cols: Int
  /// Elements per absmax block.
  public var blockSize: Int

  public init(packed: Tensor, absmax: Tensor, rows: Int, cols: Int,
              blockSize: Int = NF4.defaultBlockSize) {
    self.packed = packed; self.absmax = absmax
    self.rows = rows; self.cols = cols; self.blockSize = blockSize
  }

  /// Quantises an f32 weight (rows, cols) on the CPU and uploads it to `backend`.
  public static func quantizing(_ values: [Float], rows: Int, cols: Int, on backend: Backend,
                                blockSize: Int = NF4.defaultBlockSize) throws -> NF4Weight {
    guard values.count == rows * cols, values.count % 2 == 0, blockSize % 2 == 0 else {
      throw VKFError.shapeMismatch(op: "quantizeNF4",
        detail: "\(values.count) values for (\(rows), \(cols)), block \(blockSize)")
    }
    let (packed, absmax) = NF4.quantize(values, blockSize: blockSize)
    return NF4Weight(
      packed: try backend.tensor(packed, shape: [packed.count], .u8),
      absmax: try backend.tensor(absmax, shape: [absmax.count]),
      rows: rows, cols: cols, blockSize: blockSize)
  }
}

/// The frozen base of a linear layer: dense f32 or NF4, both (out, in).
public enum LinearWeight: Sendable {
  case dense(Tensor)
  case nf4(NF4Weight)

  /// (out features, in features).
  public var outFeatures: Int {
    switch self { case .dense(let t): return t.shape.first ?? 0; case .nf4(let q): return q.rows }
  }
  public var inFeatures: Int {
    switch self { case .dense(let t): return t.lastDim; case .nf4(let q): return q.cols }
  }
}
