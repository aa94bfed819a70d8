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
  /// `ACT` of swiglu.comp / swiglu_back.comp: 0 silu, 1 tanh-approximated GELU.
  private func activationDefines(_ kind: GatedActivation) -> [String: String] {
    ["ACT": kind == .silu ? "0" : "1"]
  }

  /// swiglu.comp: out = act(gate) ⊙ up.
  public func gatedActivation(_ kind: GatedActivation, gate: Tensor, up: Tensor, into out: Tensor) throws {
    try checkOwnership(.swiglu, gate, up, out)
    try ShapeCheck.swiglu(gate, up, out)
    guard gate.count > 0 else { return }
    try dispatch("swiglu", defines: activationDefines(kind), specialization: blockSpecialization,
                 bindings: [gate, up, out],
                 push: SwiGLUPush(n: try shaderUInt(gate.count, .swiglu)),
                 groups: try elementGroups(gate.count, op: .swiglu))
  }

  /// swiglu_back.comp: dGate, dUp (overwritten) from dOut.
  public func gatedActivationBackward(_ kind: GatedActivation, _ dOut: Tensor, gate: Tensor, up: Tensor,
                                      dGate: Tensor, dUp: Tensor) throws {
    let op = Op.swigluBackward
    try checkOwnership(op, dOut, gate, up, dGate, dUp)
    try ShapeCheck.swigluBackward(dOut, gate, up, dGate, dUp)
    guard gate.count > 0 else { return }
    try dispatch("swiglu_back", defines: activationDefines(kind), specialization: blockSpecialization,
                 bindings: [dOut, gate, up, dGate, dUp],
                 push: SwiGLUBackPush(n: try shaderUInt(gate.count, op)),
                 groups: try elementGroups(gate.count, op: op))
  }
}
