import VKFCore

// LayerNorm forward (layer_norm.comp) and backward (layer_norm_back.comp, three passes).

/// Push constants of layer_norm.comp (after the 8 binding offsets).
struct LayerNormPush {
  var rows: UInt32
  var cols: UInt32
  var eps: Float
}

/// Push constants of layer_norm_back.comp, shared by its three passes.
struct LayerNormBackPush {
  var rows: UInt32
  var cols: UInt32
  /// Rows summed per partial (pass 1).
  var rowsPerBlock: UInt32
  /// Number of partial blocks in scratch (pass 2).
  var blocks: UInt32
  /// Pass 2 adds into dWeight / dBias (0: that gradient is not wanted).
  var hasWeight: UInt32
  var hasBias: UInt32
}

/// The `PASS` define of layer_norm_back.comp.
enum LayerNormBackPass: Int {
  /// dx, one workgroup per row.
  case dx = 0
  /// dWeight and dBias partial sums per block of rows.
  case partials = 1
  /// dWeight, dBias += Σ partials.
  case reduce = 2

  var defines: [String: String] { ["PASS": String(rawValue)] }
}

extension VulkanBackend {
  /// layer_norm.comp: out = (x − mean)·rstd·weight + bias row-wise, keeping mean and rstd.
  public func layerNorm(_ x: Tensor, weight: Tensor, bias: Tensor, eps: Float, into out: Tensor, mean: Tensor,
                        rstd: Tensor) throws {
    let op = Op.layerNorm
    try checkOwnership(op, x, weight, bias, out, mean, rstd)
    try ShapeCheck.layerNorm(x, weight, bias, out, mean, rstd)
    // x: (R, C) → out: (R, C), mean, rstd: (R)
    let rows = x.rowCount, cols = x.lastDim
    guard rows > 0, cols > 0 else { return }
    _ = try shaderUInt(x.count, op)  // the shader's flat element index
    let push = LayerNormPush(rows: try shaderUInt(rows, op), cols: try shaderUInt(cols, op), eps: eps)
    try dispatch("layer_norm", defines: reductionVariant(), specialization: blockSpecialization,
                 bindings: [x, weight, bias, out, mean, rstd], push: push, groups: try spreadGroups(rows, op: op))
  }

  /// layer_norm_back.comp: dx overwritten; dWeight and dBias (optional) accumulated,
  /// deterministically (per-block partials, then one chain per column).
  public func layerNormBackward(_ dOut: Tensor, x: Tensor, weight: Tensor, mean: Tensor, rstd: Tensor, dx: Tensor,
                                dWeight: Tensor?, dBias: Tensor?) throws {
    let op = Op.layerNormBackward
    try checkOwnership(op, dOut, x, weight, mean, rstd, dx, dWeight, dBias)
    try ShapeCheck.layerNormBackward(dOut, x, weight, mean, rstd, dx, dWeight, dBias)
    // dOut, x, dx: (R, C); weight, dWeight, dBias: (C); mean, rstd: (R)
    let rows = x.rowCount, cols = x.lastDim
    guard rows > 0, cols > 0 else { return }
    _ = try shaderUInt(x.count, op)
    let wg = blockWorkgroupSize
    var push = LayerNormBackPush(rows: try shaderUInt(rows, op), cols: try shaderUInt(cols, op), rowsPerBlock: 0,
                                 blocks: 0, hasWeight: dWeight == nil ? 0 : 1, hasBias: dBias == nil ? 0 : 1)
    // The parameter gradients first: dx may alias dOut, which they read.
    if dWeight != nil || dBias != nil {
      let perBlock = max(Self.rmsNormRowsPerBlock, (rows + Self.rmsNormMaxBlocks - 1) / Self.rmsNormMaxBlocks)
      let blocks = (rows + perBlock - 1) / perBlock
      push.rowsPerBlock = try shaderUInt(perBlock, op)
      push.blocks = try shaderUInt(blocks, op)
      let colGroups = (cols + wg - 1) / wg
      let partial = try scratch(count: 2 * blocks * cols)
      try dispatch("layer_norm_back", defines: reductionVariant(LayerNormBackPass.partials.defines),
                   specialization: blockSpecialization, bindings: [dOut, x, mean, rstd, partial],
                   push: push, groups: (colGroups, blocks, 1))
      // An unwanted gradient's binding is any f32 buffer the pass does not write.
      try dispatch("layer_norm_back", defines: reductionVariant(LayerNormBackPass.reduce.defines),
                   specialization: blockSpecialization,
                   bindings: [partial, dWeight ?? dBias ?? partial, dBias ?? dWeight ?? partial],
                   push: push, groups: (colGroups, 1, 1))
    }
    try dispatch("layer_norm_back", defines: reductionVariant(LayerNormBackPass.dx.defines),
                 specialization: blockSpecialization, bindings: [dOut, x, weight, mean, rstd, dx],
                 push: push, groups: try spreadGroups(rows, op: op))
  }
}
