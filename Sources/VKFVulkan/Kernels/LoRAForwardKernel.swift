import VKFCore

/// Push constants of `Shaders/lora_forward.comp`, after the 8 binding offsets.
struct LoRAForwardPush {
  /// Rows of x, out features, in features, LoRA rank.
  var m: UInt32, n: UInt32, k: UInt32, r: UInt32
  /// NF4 block size (unused by the dense variant).
  var blockSize: UInt32
  var scale: Float
  /// Double-quantised absmax fields (NF4 base only).
  var absmax = NF4AbsmaxPush()
}

extension VulkanBackend {
  /// Fused LoRA forward: xa = loraX·Aᵀ on matmul.comp, then y = base(x) + scale·xa·Bᵀ in one
  /// pass of `lora_forward.comp` (dense or NF4 base), so y is written once and never read.
  public func loraForward(_ x: Tensor, loraX: Tensor?, base: LinearWeight, a: Tensor, b: Tensor,
                          scale: Float, into y: Tensor, xa: Tensor) throws {
    try ShapeCheck.loraForward(x, loraX: loraX, base: base, a: a, b: b, y: y, xa: xa)
    switch base {
    case .dense(let w): try checkOwnership(.loraForward, x, loraX, w, a, b, y, xa)
    case .nf4(let q): try checkOwnership(.loraForward, [x, loraX, a, b, y, xa] + q.tensors)
    case .int8(let q):
      // No fused variant: the base on matmul_int8, then the LoRA path on matmul.comp.
      try checkOwnership(.loraForward, [x, loraX, a, b, y, xa] + q.tensors)
      try matmulInt8(x, q, into: y, transposeB: true, alpha: 1, beta: 0)
      try matmul(loraX ?? x, a, into: xa, transposeA: false, transposeB: true, alpha: 1, beta: 0)
      try matmul(xa, b, into: y, transposeA: false, transposeB: true, alpha: scale, beta: 1)
      return
    }
    // x, loraX (m, in); A (r, in); B (out, r); y (m, out); xa (m, r).
    let m = x.rowCount, inF = base.inFeatures, outF = base.outFeatures, r = a.shape[0]
    guard m > 0, outF > 0 else { return }
    if r > 0 {
      // Flattened to rank 2 so matmul runs one (m, r) product instead of a batch.
      try matmul(try (loraX ?? x).reshaped([m, inF]), a, into: try xa.reshaped([m, r]),
                 transposeA: false, transposeB: true, alpha: 1, beta: 0)
    }
    let t = MatmulTiling.current
    var push = LoRAForwardPush(
      m: try shaderUInt(m, .loraForward), n: try shaderUInt(outF, .loraForward),
      k: try shaderUInt(inF, .loraForward), r: try shaderUInt(r, .loraForward),
      blockSize: 0, scale: scale)
    let bindings: [Tensor]
    var defines = ["NF4_BASE": "0"]
    switch base {
    case .dense(let w):
      bindings = [x, xa, w, b, y]
      defines["W_TYPE"] = castTypeCodes[w.dtype] ?? "0"
    case .nf4(let q):
      let abs = nf4Absmax(q)
      push.blockSize = try shaderUInt(q.blockSize, .loraForward)
      push.absmax = abs.push
      bindings = [x, xa, q.packed, abs.absmax, b, y] + abs.nested
      defines = ["NF4_BASE": "1", "NF4_DQ": abs.define]
    case .int8:
      return  // handled above
    }
    try dispatch("lora_forward", defines: defines,
                 specialization: t.specialization, bindings: bindings, push: push,
                 groups: t.groups(m: m, n: outF, limits: gridLimits))
  }
}
