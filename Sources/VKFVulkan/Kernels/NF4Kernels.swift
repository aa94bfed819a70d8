import VKFCore

// MARK: - dequantizeNF4

/// Push constants of `Shaders/dequantize_nf4.comp`, after the 8 binding offsets.
struct DequantizeNF4Push {
  var count: UInt32
  var blockSize: UInt32
}

/// Push constants of `Shaders/matmul_nf4.comp`, after the 8 binding offsets.
struct MatmulNF4Push {
  var m: UInt32, n: UInt32, k: UInt32
  /// Columns of W as stored (k for the forward, n for the input gradient).
  var cols: UInt32
  var blockSize: UInt32
  var alpha: Float, beta: Float
}

extension VulkanBackend {
  /// Invocations per workgroup of dequantize_nf4.comp (each handles one packed word).
  static let dequantizeWorkgroup = 256

  /// out (rows, cols) f32 = codebook[q] · absmax[block] on `dequantize_nf4.comp`.
  public func dequantizeNF4(_ w: NF4Weight, into out: Tensor) throws {
    try checkOwnership(.dequantizeNF4, w.packed, w.absmax, out)
    try ShapeCheck.dequantizeNF4(w, out)
    let count = w.rows * w.cols
    guard count > 0 else { return }
    let words = (count + 7) / 8, wg = Self.dequantizeWorkgroup
    let push = DequantizeNF4Push(count: try shaderUInt(count, .dequantizeNF4),
                                 blockSize: try shaderUInt(w.blockSize, .dequantizeNF4))
    try dispatch("dequantize_nf4", specialization: [UInt32(wg), 1, 1],
                 bindings: [w.packed, w.absmax, out], push: push,
                 groups: (min((words + wg - 1) / wg, gridLimits.0), 1, 1))
  }

  // MARK: - matmulNF4

  /// y = α·x·op(W) + β·y with W NF4, dequantised tile by tile on `matmul_nf4.comp`.
  public func matmulNF4(_ x: Tensor, _ w: NF4Weight, into y: Tensor, transposeB: Bool,
                        alpha: Float, beta: Float) throws {
    try checkOwnership(.matmulNF4, x, w.packed, w.absmax, y)
    let (m, n, k) = try ShapeCheck.matmulNF4(x, w, y, transposeB: transposeB)
    guard m > 0, n > 0 else { return }
    let t = MatmulTiling.current
    let push = MatmulNF4Push(
      m: try shaderUInt(m, .matmulNF4), n: try shaderUInt(n, .matmulNF4),
      k: try shaderUInt(k, .matmulNF4), cols: try shaderUInt(w.cols, .matmulNF4),
      blockSize: try shaderUInt(w.blockSize, .matmulNF4), alpha: alpha, beta: beta)
    try dispatch("matmul_nf4", defines: ["TRANS_B": transposeB ? "1" : "0"],
                 specialization: t.specialization, bindings: [x, w.packed, w.absmax, y],
                 push: push, groups: t.groups(m: m, n: n, limits: gridLimits))
  }
}
