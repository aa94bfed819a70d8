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

/// Push constants of activation.comp.
struct ActivationPush {
  var n: UInt32
}

extension VulkanBackend {
  /// activation.comp's defines for `kind` and direction.
  private func activationShaderDefines(_ kind: Activation, backward: Bool) -> [String: String] {
    var d: [String: String] = [:]
    switch kind {
    case .gelu: break
    case .geluTanh: d["ACT"] = "1"
    case .sigmoid: d["ACT"] = "2"
    }
    if backward { d["BACKWARD"] = "1" }
    return d
  }

  /// activation.comp: out = act(x).
  public func activation(_ kind: Activation, _ x: Tensor, into out: Tensor) throws {
    try checkOwnership(.activation, x, out)
    try ShapeCheck.activation(.activation, x, out)
    guard x.count > 0 else { return }
    // Binding 1 (dy) is unused forward: x fills it.
    try dispatch("activation", defines: activationShaderDefines(kind, backward: false), specialization: blockSpecialization,
                 bindings: [x, x, out], push: ActivationPush(n: try shaderUInt(x.count, .activation)),
                 groups: try elementGroups(x.count, op: .activation))
  }

  /// activation.comp (BACKWARD): dx = dOut ⊙ act'(x).
  public func activationBackward(_ kind: Activation, _ dOut: Tensor, x: Tensor, into dx: Tensor) throws {
    let op = Op.activationBackward
    try checkOwnership(op, dOut, x, dx)
    try ShapeCheck.activation(op, dOut, x, dx)
    guard x.count > 0 else { return }
    try dispatch("activation", defines: activationShaderDefines(kind, backward: true), specialization: blockSpecialization,
                 bindings: [x, dOut, dx], push: ActivationPush(n: try shaderUInt(x.count, op)),
                 groups: try elementGroups(x.count, op: op))
  }
}
