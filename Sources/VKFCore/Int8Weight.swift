/// A frozen int8 weight on a backend (post-training quantisation, compressed-tensors' layout):
/// W[r, c] = (q[e] − zp[b]) · scale[b] with e = r·cols + c and b = e / blockSize — one block per
/// tensor (blockSize = rows·cols), per output channel (blockSize = cols) or per group of
/// consecutive columns (cols a multiple of blockSize).
public struct Int8Weight: Sendable {
  /// The int8 values' bit patterns, u8, rows·cols of them.
  public var values: Tensor
  /// f32, one per block.
  public var scales: Tensor
  /// f32 integers, one per block (asymmetric quantisation), or nil (symmetric: zero).
  public var zeroPoints: Tensor?
  /// Output features (rows of W).
  public var rows: Int
  /// Input features (columns of W).
  public var cols: Int
  /// Elements per scale.
  public var blockSize: Int

  public init(values: Tensor, scales: Tensor, zeroPoints: Tensor?, rows: Int, cols: Int, blockSize: Int) {
    self.values = values; self.scales = scales; self.zeroPoints = zeroPoints
    self.rows = rows; self.cols = cols; self.blockSize = blockSize
  }

  /// Scale blocks: ceil(rows·cols / blockSize).
  public var blockCount: Int { (rows * cols + blockSize - 1) / max(blockSize, 1) }

  /// Every tensor the weight holds (values first).
  public var tensors: [Tensor] { [values, scales] + (zeroPoints.map { [$0] } ?? []) }

  /// Device bytes of the weight.
  public var bytes: Int { tensors.reduce(0) { $0 + $1.byteCount } }

  /// The same weight with each tensor replaced by `f(tensor)`.
  public func mapped(_ f: (Tensor) throws -> Tensor) rethrows -> Int8Weight {
    Int8Weight(values: try f(values), scales: try f(scales), zeroPoints: try zeroPoints.map(f),
               rows: rows, cols: cols, blockSize: blockSize)
  }

  /// Uploads host int8 values with their block scales (and zero points).
  public static func uploading(_ q: [Int8], scales: [Float], zeroPoints: [Float]?, rows: Int, cols: Int,
                               blockSize: Int, on backend: Backend) throws -> Int8Weight {
    guard q.count == rows * cols, blockSize > 0, scales.count == (q.count + blockSize - 1) / blockSize,
          zeroPoints.map({ $0.count == scales.count }) ?? true else {
      throw VKFError.shapeMismatch(op: Op.matmulInt8.rawValue,
        detail: "\(q.count) int8 values for (\(rows), \(cols)), block \(blockSize), \(scales.count) scales")
    }
    return Int8Weight(values: try backend.tensor(q.map { UInt8(bitPattern: $0) }, shape: [q.count], .u8),
                      scales: try backend.tensor(scales, shape: [scales.count]),
                      zeroPoints: try zeroPoints.map { try backend.tensor($0, shape: [$0.count]) },
                      rows: rows, cols: cols, blockSize: blockSize)
  }

  /// The f32 weight the kernels use: (q − zp)·scale, the subtraction and the product each
  /// rounded in f32 (the CPU reference of `dequantizeInt8`).
  public static func dequantize(_ q: UnsafePointer<UInt8>, scales: UnsafePointer<Float>, zeroPoints: UnsafePointer<Float>?,
                                blockSize: Int, elements: Range<Int>, into out: UnsafeMutablePointer<Float>) {
    for e in elements {
      let b = e / blockSize
      let v = Float(Int8(bitPattern: q[e])) - (zeroPoints?[b] ?? 0)
      out[e - elements.lowerBound] = v * scales[b]
    }
  }
}
