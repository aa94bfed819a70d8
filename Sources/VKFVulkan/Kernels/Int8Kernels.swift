import VKFCore

/// Push constants of `Shaders/dequantize_int8.comp`, after the 8 binding offsets.
struct DequantizeInt8Push {
  var count: UInt32
  var blockSize: UInt32
}

/// Push constants of `Shaders/matmul_int8.comp`, after the 8 binding offsets.
struct MatmulInt8Push {
  var m: UInt32, n: UInt32, k: UInt32
  /// Columns of W as stored (k for the forward, n for the input gradient).
  var cols: UInt32
  var blockSize: UInt32
  var alpha: Float, beta: Float
}

extension VulkanBackend {
  /// out (rows, cols) f32 = (q − zp)·scale on `dequantize_int8.comp`.
  public func dequantizeInt8(_ w: Int8Weight, into out: Tensor) throws {
    try checkOwnership(.dequantizeInt8, w.tensors + [out])
    try ShapeCheck.dequantizeInt8(w, out)
    let count = w.rows * w.cols
    guard count > 0 else { return }
    let words = (count + 3) / 4, wg = Self.dequantizeWorkgroup
    let push = DequantizeInt8Push(count: try shaderUInt(count, .dequantizeInt8),
                                  blockSize: try shaderUInt(w.blockSize, .dequantizeInt8))
    try dispatch("dequantize_int8", defines: ["ZP": w.zeroPoints == nil ? "0" : "1"], specialization: [UInt32(wg), 1, 1],
                 bindings: [w.values, w.scales, out] + (w.zeroPoints.map { [$0] } ?? []), push: push,
                 groups: (min((words + wg - 1) / wg, gridLimits.0), 1, 1))
  }

  /// y = α·x·op(W) + β·y with W int8, dequantised tile by tile on `matmul_int8.comp`; x may
  /// be stored f16/bf16 (widened as it is staged).
  public func matmulInt8(_ x: Tensor, _ w: Int8Weight, into y: Tensor, transposeB: Bool,
                         alpha: Float, beta: Float) throws {
    try checkOwnership(.matmulInt8, [x] + w.tensors + [y])
    let (m, n, k) = try ShapeCheck.matmulInt8(x, w, y, transposeB: transposeB)
    guard m > 0, n > 0 else { return }
    let t = MatmulTiling.current
    let push = MatmulInt8Push(
      m: try shaderUInt(m, .matmulInt8), n: try shaderUInt(n, .matmulInt8),
      k: try shaderUInt(k, .matmulInt8), cols: try shaderUInt(w.cols, .matmulInt8),
      blockSize: try shaderUInt(w.blockSize, .matmulInt8), alpha: alpha, beta: beta)
    let defines = ["TRANS_B": transposeB ? "1" : "0", "ZP": w.zeroPoints == nil ? "0" : "1",
                   "X_TYPE": castTypeCodes[x.dtype] ?? "0"]
    try dispatch("matmul_int8", defines: defines, specialization: t.specialization,
                 bindings: [x, w.values, w.scales, y] + (w.zeroPoints.map { [$0] } ?? []),
                 push: push, groups: t.groups(m: m, n: n, limits: gridLimits))
  }
}

/// Push constants of `Shaders/fake_quantize.comp`, after the 8 binding offsets.
struct FakeQuantizePush {
  var blocks: UInt32
  var blockSize: UInt32
}

extension VulkanBackend {
  /// out = `kind`'s quantise-dequantise of w on `fake_quantize.comp`, one invocation per block.
  public func fakeQuantize(_ w: Tensor, kind: FakeQuant, into out: Tensor) throws {
    try checkOwnership(.fakeQuantize, [w, out])
    let (rows, cols) = try ShapeCheck.fakeQuantize(w, kind: kind, out)
    let block = kind.blockSize(cols: cols)
    guard rows * cols > 0, block > 0 else { return }
    let blocks = rows * cols / block, wg = 64
    let push = FakeQuantizePush(blocks: try shaderUInt(blocks, .fakeQuantize), blockSize: try shaderUInt(block, .fakeQuantize))
    try dispatch("fake_quantize", defines: ["KIND": String(kind.rawValue)], specialization: [UInt32(wg), 1, 1],
                 bindings: [w, out], push: push, groups: (min((blocks + wg - 1) / wg, gridLimits.0), 1, 1))
  }
}
