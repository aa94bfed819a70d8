import VKFCore

// SwiGLU gate of the MLP (swiglu.comp, swiglu_back.comp).

/// Push constants of swiglu.comp (after the 8 binding offsets).
struct SwiGLUPush {
  var n: UInt32
}

/// Push constants of swiglu_back.comp.
struct SwiGLUBackPush {
  var n: UInt32
}

extension VulkanBackend {
  /// swiglu.comp: out = silu(gate) ⊙ up.
  public func swiglu(gate: Tensor, up: Tensor, into out: Tensor) throws {
    try checkOwnership(.swiglu, gate, up, out)
    try ShapeCheck.swiglu(gate, up, out)
    guard gate.count > 0 else { return }
    try dispatch("swiglu", specialization: blockSpecialization, bindings: [gate, up, out],
                 push: SwiGLUPush(n: try shaderUInt(gate.count, .swiglu)),
                 groups: try elementGroups(gate.count, op: .swiglu))
  }

  /// swiglu_back.comp: dGate, dUp (overwritten) from dOut.
  public func swigluBackward(_ dOut: Tensor, gate: Tensor, up: Tensor, dGate: Tensor,
                             dUp: Tensor) throws {
    let op = Op.swigluBackward
    try checkOwnership(op, dOut, gate, up, dGate, dUp)
    try ShapeCheck.swigluBackward(dOut, gate, up, dGate, dUp)
    guard gate.count > 0 else { return }
    try dispatch("swiglu_back", specialization: blockSpecialization,
                 bindings: [dOut, gate, up, dGate, dUp],
                 push: SwiGLUBackPush(n: try shaderUInt(gate.count, op)),
                 groups: try elementGroups(gate.count, op: op))
  }
}
