import VKFCore

// Rotary position embedding, forward and backward (rope.comp with sign ±1).

/// Push constants of rope.comp (after the 8 binding offsets).
struct RoPEPush {
  /// tokens·heads·headDim/2 rotated pairs.
  var pairs: UInt32
  var heads: UInt32
  /// headDim / 2.
  var halfDim: UInt32
  /// +1 forward, −1 backward (rotation by −angle).
  var sign: Float
}

extension VulkanBackend {
  /// rope.comp: rotate-half rotary embedding of x (tokens, heads, headDim).
  public func rope(_ x: Tensor, positions: Tensor, invFreq: Tensor, into out: Tensor) throws {
    try checkOwnership(.rope, x, positions, invFreq, out)
    try ShapeCheck.rope(.rope, x, positions, invFreq, out)
    try rotate(.rope, x, positions, invFreq, out, sign: 1)
  }

  /// rope.comp with sign −1: the transpose of the forward rotation.
  public func ropeBackward(_ dOut: Tensor, positions: Tensor, invFreq: Tensor,
                           into dx: Tensor) throws {
    try checkOwnership(.ropeBackward, dOut, positions, invFreq, dx)
    try ShapeCheck.rope(.ropeBackward, dOut, positions, invFreq, dx)
    try rotate(.ropeBackward, dOut, positions, invFreq, dx, sign: -1)
  }

  private func rotate(_ op: Op, _ x: Tensor, _ positions: Tensor, _ invFreq: Tensor,
                      _ out: Tensor, sign: Float) throws {
    // x, out: (T, NH, HS); positions: (T) i32; invFreq: (HS/2)
    let heads = x.shape[1], half = x.shape[2] / 2
    let pairs = x.count / 2
    guard pairs > 0 else { return }
    _ = try shaderUInt(x.count, op)  // the shader's flat element index
    let push = RoPEPush(pairs: try shaderUInt(pairs, op), heads: try shaderUInt(heads, op),
                        halfDim: try shaderUInt(half, op), sign: sign)
    try dispatch("rope", specialization: blockSpecialization,
                 bindings: [x, positions, invFreq, out], push: push,
                 groups: try elementGroups(pairs, op: op))
  }
}
