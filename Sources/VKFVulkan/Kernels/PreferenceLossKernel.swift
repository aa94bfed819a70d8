import VKFCore

// A DPO-family loss on the device (preference_loss.comp): sequence log-probs in, per-token
// logit-gradient weights, the loss and the logged metrics out — no host round trip in a step.

/// Push constants of preference_loss.comp (after the 8 binding offsets).
struct PreferenceLossPush {
  var rows: UInt32
  /// Tokens per row of tokenWeights.
  var tokens: UInt32
  /// `PreferenceLossKind` raw value.
  var kind: UInt32
  var beta: Float
  var eps: Float
  /// RPO's α (0: none).
  var alpha: Float
}

extension VulkanBackend {
  /// preference_loss.comp: one workgroup computes every pair (see `Backend.preferenceLoss`).
  public func preferenceLoss(policy: Tensor, reference: Tensor, answerTokens: Tensor, pairsInStep: Tensor,
                             parameters p: PreferenceLossParameters, tokenWeights: Tensor, lossSum: Tensor,
                             metrics: Tensor) throws {
    let op = Op.preferenceLoss
    try checkOwnership(op, policy, reference, answerTokens, pairsInStep, tokenWeights, lossSum, metrics)
    let (rows, tokens) = try ShapeCheck.preferenceLoss(
      policy: policy, reference: reference, answerTokens: answerTokens, pairsInStep: pairsInStep,
      parameters: p, tokenWeights: tokenWeights, lossSum: lossSum, metrics: metrics)
    _ = try shaderUInt(tokenWeights.count, op)
    let push = PreferenceLossPush(rows: UInt32(rows), tokens: try shaderUInt(tokens, op), kind: p.kind.rawValue,
                                  beta: Float(p.beta), eps: Float(p.labelSmoothing), alpha: Float(p.rpoAlpha))
    try dispatch("preference_loss", specialization: blockSpecialization,
                 bindings: [policy, reference, answerTokens, pairsInStep, tokenWeights, lossSum, metrics],
                 push: push, groups: (1, 1, 1))
  }
}
