import VKFCore

// RMSNorm forward (rms_norm.comp) and backward (rms_norm_back.comp, three passes).

/// Push constants of rms_norm.comp (after the 8 binding offsets).
struct RMSNormPush {
  var rows: UInt32
  var cols: UInt32
  var eps: Float
  /// Added to every weight (Gemma's 1 + w), 0 otherwise.
  var weightOffset: Float
}

/// Push constants of rms_norm_back.comp, shared by its three passes.
struct RMSNormBackPush {
  var rows: UInt32
  var cols: UInt32
  /// Rows summed per dWeight partial (pass 1).
  var rowsPerBlock: UInt32
  /// Number of partial rows in scratch (pass 2).
  var blocks: UInt32
  /// Pass 1 adds straight into dWeight (only one block).
  var direct: UInt32
  /// Added to every weight in pass 0 (Gemma's 1 + w).
  var weightOffset: Float
}

/// The `PASS` define of rms_norm_back.comp.
enum RMSNormBackPass: Int {
  /// dx, one workgroup per row.
  case dx = 0
  /// dWeight partial sums per block of rows.
  case weightPartial = 1
  /// dWeight += Σ partials.
  case weightReduce = 2

  var defines: [String: String] { ["PASS": String(rawValue)] }
}

extension VulkanBackend {
  /// Rows summed per dWeight partial: short enough chains for f32 and enough blocks to fill
  /// a GPU; past `maxBlocks` blocks the blocks grow instead.
  static let rmsNormRowsPerBlock = 64
  static let rmsNormMaxBlocks = 256

  /// rms_norm.comp: out = x·rstd·weight row-wise, rstd = 1/sqrt(mean(x²) + eps).
  public func rmsNorm(_ x: Tensor, weight: Tensor, weightOffset: Float, eps: Float, into out: Tensor,
                      rstd: Tensor) throws {
    try checkOwnership(.rmsNorm, x, weight, out, rstd)
    try ShapeCheck.rmsNorm(x, weight, out, rstd)
    // x: (R, C) → out: (R, C), rstd: (R)
    let rows = x.rowCount, cols = x.lastDim
    guard rows > 0, cols > 0 else { return }
    _ = try shaderUInt(x.count, .rmsNorm)  // the shader's flat element index
    let push = RMSNormPush(rows: try shaderUInt(rows, .rmsNorm),
                           cols: try shaderUInt(cols, .rmsNorm), eps: eps, weightOffset: weightOffset)
    try dispatch("rms_norm", defines: reductionVariant(), specialization: blockSpecialization,
                 bindings: [x, weight, out, rstd], push: push,
                 groups: try spreadGroups(rows, op: .rmsNorm))
  }

  /// rms_norm_back.comp: dx overwritten; dWeight (optional) accumulated, deterministically.
  public func rmsNormBackward(_ dOut: Tensor, x: Tensor, weight: Tensor, weightOffset: Float, rstd: Tensor,
                              dx: Tensor, dWeight: Tensor?) throws {
    try checkOwnership(.rmsNormBackward, dOut, x, weight, rstd, dx, dWeight)
    try ShapeCheck.rmsNormBackward(dOut, x, weight, rstd, dx, dWeight)
    // dOut, x, dx: (R, C); weight, dWeight: (C); rstd: (R)
    let rows = x.rowCount, cols = x.lastDim
    guard rows > 0, cols > 0 else { return }
    let op = Op.rmsNormBackward
    _ = try shaderUInt(x.count, op)  // the shader's flat element index
    let wg = blockWorkgroupSize
    var push = RMSNormBackPush(rows: try shaderUInt(rows, op), cols: try shaderUInt(cols, op),
                               rowsPerBlock: 0, blocks: 0, direct: 0, weightOffset: weightOffset)

    // dWeight first: dx may alias dOut, which the dWeight passes read.
    if let dWeight {
      let perBlock = max(Self.rmsNormRowsPerBlock,
                         (rows + Self.rmsNormMaxBlocks - 1) / Self.rmsNormMaxBlocks)
      let blocks = (rows + perBlock - 1) / perBlock
      push.rowsPerBlock = try shaderUInt(perBlock, op)
      push.blocks = try shaderUInt(blocks, op)
      let colGroups = (cols + wg - 1) / wg
      if blocks == 1 {
        push.direct = 1
        try dispatch("rms_norm_back", defines: reductionVariant(RMSNormBackPass.weightPartial.defines),
                     specialization: blockSpecialization, bindings: [dOut, x, rstd, dWeight],
                     push: push, groups: (colGroups, 1, 1))
      } else {
        let partial = try scratch(count: blocks * cols)
        try dispatch("rms_norm_back", defines: reductionVariant(RMSNormBackPass.weightPartial.defines),
                     specialization: blockSpecialization, bindings: [dOut, x, rstd, partial],
                     push: push, groups: (colGroups, blocks, 1))
        try dispatch("rms_norm_back", defines: reductionVariant(RMSNormBackPass.weightReduce.defines),
                     specialization: blockSpecialization, bindings: [partial, dWeight],
                     push: push, groups: (colGroups, 1, 1))
      }
    }
    try dispatch("rms_norm_back", defines: reductionVariant(RMSNormBackPass.dx.defines),
                 specialization: blockSpecialization, bindings: [dOut, x, weight, rstd, dx],
                 push: push, groups: try spreadGroups(rows, op: op))
  }
}
