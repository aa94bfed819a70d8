import VKFCore

// MARK: - dequantizeNF4

/// Push constants of `Shaders/dequantize_nf4.comp`, after the 8 binding offsets.
struct DequantizeNF4Push {
  var count: UInt32
  var blockSize: UInt32
  var absmax: NF4AbsmaxPush
}

/// The double-quantised absmax fields every NF4 shader ends its push block with (unused by
/// the f32-absmax variants).
struct NF4AbsmaxPush {
  /// Codes per nested scale (`NF4DoubleQuant.blockSize`).
  var nestedBlock: UInt32 = 0
  var offset: Float = 0
}

/// Push constants of `Shaders/matmul_nf4.comp`, after the 8 binding offsets.
struct MatmulNF4Push {
  var m: UInt32, n: UInt32, k: UInt32
  /// Columns of W as stored (k for the forward, n for the input gradient).
  var cols: UInt32
  var blockSize: UInt32
  var alpha: Float, beta: Float
  var absmax: NF4AbsmaxPush
}

extension VulkanBackend {
  /// How `w`'s kernels read its absmax: the `NF4_DQ` define, the push fields and the tensors
  /// bound where the shader expects them (the absmax or codes slot, and nested scales last).
  func nf4Absmax(_ w: NF4Weight) -> (define: String, push: NF4AbsmaxPush, absmax: Tensor, nested: [Tensor]) {
    switch w.scales {
    case .f32(let a):
      return ("0", NF4AbsmaxPush(), a, [])
    case .doubleQuantized(let codes, let scales, let offset):
      return ("1", NF4AbsmaxPush(nestedBlock: UInt32(NF4DoubleQuant.blockSize), offset: offset), codes, [scales])
    }
  }

  /// Invocations per workgroup of dequantize_nf4.comp (each handles one packed word).
  static let dequantizeWorkgroup = 256

  /// out (rows, cols) f32 = codebook[q] · absmax[block] on `dequantize_nf4.comp`.
  public func dequantizeNF4(_ w: NF4Weight, into out: Tensor) throws {
    try checkOwnership(.dequantizeNF4, w.tensors + [out])
    try ShapeCheck.dequantizeNF4(w, out)
    let count = w.rows * w.cols
    guard count > 0 else { return }
    let words = (count + 7) / 8, wg = Self.dequantizeWorkgroup
    let a = nf4Absmax(w)
    let push = DequantizeNF4Push(count: try shaderUInt(count, .dequantizeNF4),
                                 blockSize: try shaderUInt(w.blockSize, .dequantizeNF4), absmax: a.push)
    try dispatch("dequantize_nf4", defines: ["NF4_DQ": a.define], specialization: [UInt32(wg), 1, 1],
                 bindings: [w.packed, a.absmax, out] + a.nested, push: push,
                 groups: (min((words + wg - 1) / wg, gridLimits.0), 1, 1))
  }

  // MARK: - matmulNF4

  /// y = α·x·op(W) + β·y with W NF4, dequantised tile by tile on `matmul_nf4.comp`; x may
  /// be stored f16/bf16 (widened as it is staged).
  public func matmulNF4(_ x: Tensor, _ w: NF4Weight, into y: Tensor, transposeB: Bool,
                        alpha: Float, beta: Float) throws {
    try checkOwnership(.matmulNF4, [x] + w.tensors + [y])
    let (m, n, k) = try ShapeCheck.matmulNF4(x, w, y, transposeB: transposeB)
    guard m > 0, n > 0 else { return }
    let t = MatmulTiling.current
    let a = nf4Absmax(w)
    let push = MatmulNF4Push(
      m: try shaderUInt(m, .matmulNF4), n: try shaderUInt(n, .matmulNF4),
      k: try shaderUInt(k, .matmulNF4), cols: try shaderUInt(w.cols, .matmulNF4),
      blockSize: try shaderUInt(w.blockSize, .matmulNF4), alpha: alpha, beta: beta, absmax: a.push)
    let defines = ["TRANS_B": transposeB ? "1" : "0", "NF4_DQ": a.define, "X_TYPE": castTypeCodes[x.dtype] ?? "0"]
    try dispatch("matmul_nf4", defines: defines,
                 specialization: t.specialization, bindings: [x, w.packed, a.absmax, y] + a.nested,
                 push: push, groups: t.groups(m: m, n: n, limits: gridLimits))
  }
}
