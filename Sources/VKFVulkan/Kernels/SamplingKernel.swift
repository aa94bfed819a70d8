import VKFCore

// Token sampling on the device (sample_tokens.comp): logits in, token ids out — the only
// bytes a generation step reads back.

/// Push constants of sample_tokens.comp (after the 8 binding offsets).
struct SampleTokensPush {
  var rows: UInt32
  var vocab: UInt32
  var temperature: Float
  var topK: UInt32
  var topP: Float
  var penalty: Float
  var seedLo: UInt32
  var seedHi: UInt32
  var step: UInt32
  /// 1 when presence is bound (read for the penalty, the drawn token marked).
  var hasPresence: UInt32
  /// 1 when entropy is bound.
  var hasEntropy: UInt32
}

extension VulkanBackend {
  /// sample_tokens.comp: one workgroup per row (see `Backend.sampleTokens`).
  public func sampleTokens(logits: Tensor, presence: Tensor?, parameters p: SamplingParameters, into ids: Tensor,
                           entropy: Tensor?) throws {
    let op = Op.sampleTokens
    try checkOwnership(op, logits, ids)
    if let presence { try checkOwnership(op, presence) }
    if let entropy { try checkOwnership(op, entropy) }
    let (rows, vocab) = try ShapeCheck.sampleTokens(logits: logits, presence: presence, parameters: p, ids: ids,
                                                    entropy: entropy)
    guard rows > 0 else { return }
    _ = try shaderUInt(logits.count, op)
    let push = SampleTokensPush(rows: try shaderUInt(rows, op), vocab: try shaderUInt(vocab, op),
                                temperature: p.temperature, topK: UInt32(min(p.topK, vocab)), topP: p.topP,
                                penalty: p.repetitionPenalty, seedLo: UInt32(truncatingIfNeeded: p.seed),
                                seedHi: UInt32(truncatingIfNeeded: p.seed >> 32), step: p.step,
                                hasPresence: presence == nil ? 0 : 1, hasEntropy: entropy == nil ? 0 : 1)
    try dispatch("sample_tokens", defines: reductionVariant(), specialization: blockSpecialization,
                 bindings: [logits, presence ?? logits, ids, entropy ?? ids], push: push,
                 groups: try spreadGroups(rows, op: op))
  }
}
