import Foundation
import VKFCore

// Elementwise kernels (add.comp, mul.comp, scale.comp, scale_rows.comp) and the
// dispatch-geometry helpers the transformer-block, loss and optimizer kernels share.

// MARK: - Push constants

/// Push constants of add.comp and mul.comp (after the 8 binding offsets).
struct BinaryPush {
  /// Elements of a and out.
  var n: UInt32
  /// Elements of b; b[i mod nb] pairs with a[i].
  var nb: UInt32
  /// add: out = a + alpha·b; unused by mul.
  var alpha: Float
}

/// Push constants of scale.comp.
struct ScalePush {
  var n: UInt32
  var alpha: Float
  /// softcap·tanh(α·x / softcap) when > 0.
  var softcap: Float
}

/// Push constants of scale_rows.comp.
struct ScaleRowsPush {
  /// Elements of this chunk's x and out (rows · cols).
  var n: UInt32
  /// Row length; element i belongs to row i / cols.
  var cols: UInt32
}

/// Push constants of dropout_mask.comp.
struct DropoutMaskPush {
  /// Elements of this chunk.
  var n: UInt32
  /// Index of the chunk's first element in the whole mask (the hash's counter).
  var first: UInt32
  var stream: UInt32
  /// `DropoutMask.threshold(p)`.
  var threshold: UInt32
  /// `DropoutMask.keepScale(p)`.
  var keep: Float
}

// MARK: - Dispatch geometry

extension VulkanBackend {
  /// Invocations per workgroup of the block kernels (spec constant 0): 256 on GPUs, 64 on
  /// CPU drivers (lavapipe runs a workgroup as a loop over SIMD groups, so wide workgroups
  /// only add barrier switches: rmsNorm 3×, causal softmax 3–6× faster at 64 than at 256,
  /// measured with `bench ops`), halved until the device allows it. Always a power of two,
  /// which the shared-memory trees of common/reduce.glsl require.
  var blockWorkgroupSize: Int {
    var w = capabilities.deviceType == "cpu" ? 64 : 256
    while w > 1 && w > capabilities.maxWorkgroupInvocations { w /= 2 }
    return w
  }

  /// `defines` plus the reduction variant (USE_SUBGROUP) of the kernels using common/reduce.glsl.
  func reductionVariant(_ defines: [String: String] = [:]) -> [String: String] {
    defines.merging(["USE_SUBGROUP": useSubgroupReductions ? "1" : "0"]) { $1 }
  }

  /// Specialization constants 0, 1, 2 (the workgroup size) of the block kernels.
  var blockSpecialization: [UInt32] { [UInt32(blockWorkgroupSize), 1, 1] }

  /// `count` workgroups laid out on x and, past maxComputeWorkGroupCount[0], y; the shaders
  /// recover the flat index with common/grid.glsl and bounds-check it.
  func spreadGroups(_ count: Int, op: Op) throws -> (x: Int, y: Int, z: Int) {
    let maxX = max(1, capabilities.maxWorkgroupCount.0)
    if count <= maxX { return (count, 1, 1) }
    let y = (count + maxX - 1) / maxX
    guard y <= capabilities.maxWorkgroupCount.1 else {
      throw VKFError.outOfRange(op: op.rawValue,
        detail: "\(count) workgroups exceed the device's \(maxX)×\(capabilities.maxWorkgroupCount.1) grid")
    }
    return (maxX, y, 1)
  }

  /// Workgroups covering `n` invocations of a one-invocation-per-element kernel.
  func elementGroups(_ n: Int, op: Op) throws -> (x: Int, y: Int, z: Int) {
    let w = blockWorkgroupSize
    return try spreadGroups((n + w - 1) / w, op: op)
  }
}

// MARK: - Ops

extension VulkanBackend {
  /// add.comp: out = a + α·b, b repeating over a's rows.
  public func add(_ a: Tensor, _ b: Tensor, alpha: Float, into out: Tensor) throws {
    try checkOwnership(.add, a, b, out)
    try ShapeCheck.broadcast(.add, a, b, out)
    try binary("add", .add, a, b, alpha: alpha, out)
  }

  /// mul.comp: out = a ⊙ b, b repeating over a's rows.
  public func mul(_ a: Tensor, _ b: Tensor, into out: Tensor) throws {
    try checkOwnership(.mul, a, b, out)
    try ShapeCheck.broadcast(.mul, a, b, out)
    try binary("mul", .mul, a, b, alpha: 1, out)
  }

  /// scale.comp: out = α·x.
  /// scale.comp: out = α·x (soft-capped when `softcap` > 0), in chunks that fit one binding
  /// (soft-capped logits of a whole batch can pass it).
  public func scale(_ x: Tensor, by alpha: Float, softcap: Float, into out: Tensor) throws {
    try checkOwnership(.scale, x, out)
    try ShapeCheck.scale(x, out)
    try ShapeCheck.softcap(.scale, softcap)
    guard x.count > 0 else { return }
    let flatX = try x.reshaped([x.count]), flatOut = try out.reshaped([out.count])
    let chunk = chunkBytes / 4
    var first = 0
    while first < x.count {
      let n = min(chunk, x.count - first)
      try dispatch("scale", specialization: blockSpecialization,
                   bindings: [try flatX.view(offset: first, shape: [n]), try flatOut.view(offset: first, shape: [n])],
                   push: ScalePush(n: try shaderUInt(n, .scale), alpha: alpha, softcap: softcap),
                   groups: try elementGroups(n, op: .scale))
      first += n
    }
  }

  /// dropout_mask.comp: the mask `DropoutMask` draws, in chunks that fit one binding.
  public func dropoutMask(seed: Tensor, stream: UInt32, p: Float, into mask: Tensor) throws {
    let op = Op.dropoutMask
    try checkOwnership(op, seed, mask)
    try ShapeCheck.dropoutMask(seed: seed, p: p, mask: mask)
    let flat = try mask.reshaped([mask.count])
    let chunk = chunkBytes / 4
    var first = 0
    while first < mask.count {
      let n = min(chunk, mask.count - first)
      let push = DropoutMaskPush(n: try shaderUInt(n, op), first: UInt32(first), stream: stream,
                                 threshold: DropoutMask.threshold(p), keep: DropoutMask.keepScale(p))
      try dispatch("dropout_mask", specialization: blockSpecialization,
                   bindings: [seed, try flat.view(offset: first, shape: [n])], push: push,
                   groups: try elementGroups(n, op: op))
      first += n
    }
  }

  /// scale_rows.comp: out[r, c] = weights[r] · x[r, c]. Tensors past one binding (DPO's
  /// (N, V) logit gradients) go in row chunks, as crossEntropy's do.
  public func scaleRows(_ x: Tensor, weights: Tensor, into out: Tensor) throws {
    let op = Op.scaleRows
    try checkOwnership(op, x, weights, out)
    // x, out: (R, C); weights: (R)
    let (rows, cols) = try ShapeCheck.scaleRows(x, weights, out)
    guard x.count > 0 else { return }
    for r in try rowChunks(rows: rows, rowBytes: cols * 4, op: op) {
      let n = r.count * cols
      let push = ScaleRowsPush(n: try shaderUInt(n, op), cols: try shaderUInt(cols, op))
      try dispatch("scale_rows", specialization: blockSpecialization,
                   bindings: [try x.rowSlice(r, rowLength: cols), try weights.rowSlice(r, rowLength: 1),
                              try out.rowSlice(r, rowLength: cols)],
                   push: push, groups: try elementGroups(n, op: op))
    }
  }

  /// add.comp / mul.comp: out (n) = a (n) ∘ b (nb), b repeating.
  private func binary(_ shader: String, _ op: Op, _ a: Tensor, _ b: Tensor, alpha: Float,
                      _ out: Tensor) throws {
    guard a.count > 0 else { return }
    let push = BinaryPush(n: try shaderUInt(a.count, op), nb: try shaderUInt(b.count, op),
                          alpha: alpha)
    try dispatch(shader, specialization: blockSpecialization, bindings: [a, b, out], push: push,
                 groups: try elementGroups(a.count, op: op))
  }
}
