import VKFCore

// Causal softmax for attention scores (causal_softmax.comp, causal_softmax_back.comp).

/// Push constants of causal_softmax.comp and causal_softmax_back.comp (after the 8
/// binding offsets).
struct CausalSoftmaxPush {
  var rows: UInt32
  var tq: UInt32
  var tk: UInt32
  var scale: Float
  /// Sliding window (0 = none); the backward ignores it.
  var window: UInt32 = 0
  /// Key starts bound: rows per sequence (0 = none); the backward ignores it.
  var rowsPerGroup: UInt32 = 0
  /// The chunk's first row in the whole x (for its sequence index).
  var firstRow: UInt32 = 0
}

extension VulkanBackend {
  /// causal_softmax.comp: out = softmax(scale·x) with row i seeing keys j ≤ p = i + (tk − tq)
  /// (and j > p − window with a window).
  public func causalSoftmax(_ x: Tensor, scale: Float, window: Int, keyStarts: Tensor?, into out: Tensor) throws {
    try checkOwnership(.causalSoftmax, x, out)
    if let keyStarts { try checkOwnership(.causalSoftmax, keyStarts) }
    try ShapeCheck.window(.causalSoftmax, window)
    // x, out: (…, TQ, TK)
    let (rows, tq, tk) = try ShapeCheck.causalSoftmax(.causalSoftmax, x, out)
    let groups = try ShapeCheck.keyStarts(.causalSoftmax, keyStarts, rows: rows, tq: tq)
    guard rows > 0, tq > 0 else { return }
    let op = Op.causalSoftmax
    _ = try shaderUInt(x.count, op)  // the shader's flat element index
    // Whole (tq, tk) matrices per chunk keep each row's query index (row % tq).
    for r in try rowChunks(rows: rows, rowBytes: tk * 4, multiple: tq, op: op) {
      let push = CausalSoftmaxPush(rows: try shaderUInt(r.count, op), tq: try shaderUInt(tq, op),
                                   tk: try shaderUInt(tk, op), scale: scale, window: try shaderUInt(window, op),
                                   rowsPerGroup: groups > 0 ? try shaderUInt(rows / groups, op) : 0,
                                   firstRow: try shaderUInt(r.lowerBound, op))
      try dispatch("causal_softmax", defines: reductionVariant(), specialization: blockSpecialization,
                   bindings: [try x.rowSlice(r), try out.rowSlice(r), try keyStarts ?? x.rowSlice(r)],
                   push: push, groups: try spreadGroups(r.count, op: op))
    }
  }

  /// causal_softmax_back.comp: dx = scale·y ⊙ (dy − Σ dy⊙y).
  public func causalSoftmaxBackward(_ dOut: Tensor, out y: Tensor, scale: Float,
                                    into dx: Tensor) throws {
    try checkOwnership(.causalSoftmaxBackward, dOut, y, dx)
    // dOut, y, dx: (…, TQ, TK)
    let (rows, tq, tk) = try ShapeCheck.causalSoftmaxBackward(dOut, y, dx)
    guard rows > 0, tq > 0 else { return }
    let op = Op.causalSoftmaxBackward
    _ = try shaderUInt(y.count, op)  // the shader's flat element index
    for r in try rowChunks(rows: rows, rowBytes: tk * 4, multiple: tq, op: op) {
      let push = CausalSoftmaxPush(rows: try shaderUInt(r.count, op), tq: try shaderUInt(tq, op),
                                   tk: try shaderUInt(tk, op), scale: scale)
      try dispatch("causal_softmax_back", defines: reductionVariant(), specialization: blockSpecialization,
                   bindings: [try dOut.rowSlice(r), try y.rowSlice(r), try dx.rowSlice(r)],
                   push: push, groups: try spreadGroups(r.count, op: op))
    }
  }
}
