import VKFCore

// MARK: - DPO-family loss (CPU twin of preference_loss.comp)

extension CPUBackend {
  /// `PreferenceLossMath.batch` in Double on the tensors' f32 values.
  public func preferenceLoss(policy: Tensor, reference: Tensor, answerTokens: Tensor, pairsInStep: Tensor,
                             parameters: PreferenceLossParameters, tokenWeights: Tensor, lossSum: Tensor,
                             metrics: Tensor) throws {
    try validate(.preferenceLoss, policy, reference, answerTokens, pairsInStep, tokenWeights, lossSum, metrics)
    let (rows, tokens) = try ShapeCheck.preferenceLoss(
      policy: policy, reference: reference, answerTokens: answerTokens, pairsInStep: pairsInStep,
      parameters: parameters, tokenWeights: tokenWeights, lossSum: lossSum, metrics: metrics)
    func doubles(_ t: Tensor) -> [Double] { (0..<rows).map { Double(f32(t)[$0]) } }
    let out = PreferenceLossMath.batch(
      policy: doubles(policy), reference: doubles(reference),
      answerTokens: (0..<rows).map { Int(f32(answerTokens)[$0]) },
      pairsInStep: Double(f32(pairsInStep)[0]), parameters)
    let w = f32(tokenWeights)
    for r in 0..<rows {
      let v = Float(out.rowWeights[r])
      for i in (r * tokens)..<((r + 1) * tokens) { w[i] = v }
    }
    f32(lossSum)[0] += Float(out.loss)
    let m = f32(metrics)
    for (i, v) in out.metrics.enumerated() { m[i] += Float(v) }
  }
}
