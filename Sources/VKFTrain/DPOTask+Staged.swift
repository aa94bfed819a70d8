// DPO as a staged task: the host uploads a micro-batch of pairs (padded to its step shape)
// with its answer lengths and, when precomputed, its reference log-probs; the recorded half
// runs the reference forward (adapter off), the policy forward, the loss on the device
// (`Backend.preferenceLoss`), a mixture-of-experts model's load-balancing loss of the policy
// pass, and the weighted backward — no host round trip in a step.
import VKFCore
import VKFData
import VKFModel

extension DPOTask: StagedTrainingTask {
  public func stage(_ batch: Batch, as shape: StepShape, dropoutSeed: UInt64) throws -> Bool {
    let (ids, targets) = try SFTTask.int32(batch)
    try checkPairs(batch, targets)
    if loss.oddsRatio {
      try stageORPO(batch, ids: ids, targets: targets, as: shape)
      stagedRows = batch.batchSize
      try dropoutSeedSetter(dropoutSeed)
      return true
    }
    let rows = batch.batchSize
    // Answer lengths, and reference log-probs unless the recorded pass computes them.
    let t = batch.seqLength
    let counts = (0..<rows).map { r in
      targets[(r * t)..<((r + 1) * t)].reduce(0) { $0 + ($1 == DecoderModel.ignoreIndex ? 0 : 1) }
    }
    var refs = [Float](repeating: 0, count: rows)
    if case .precomputed = reference {
      refs = try referenceLogProbs(batch, ids, targets).map { Float($0) }
    }
    let padded = try SFTTask.padded(ids: ids, targets: targets, batch: batch, to: shape)
    try model.stage(ids: padded.ids, targets: padded.targets, batch: shape.batch,
                    tokenMask: SFTTask.tokenMask(batch, model: model, tokens: shape.tokens),
                    auxLossWeight: Float(rows / 2) / stepPairs)
    let buffers = try sequenceBuffers(rows: rows)
    try backend.upload(refs + counts.map { Float($0) }, to: try buffers.view(offset: rows, shape: [2 * rows]))
    stagedRows = rows
    try dropoutSeedSetter(dropoutSeed)
    return true
  }

  public func willStage(lossNormalizer: Float) { stepPairs = lossNormalizer }

  public func reserve(_ shape: StepShape) throws {
    try model.reserve(batch: shape.batch, tokens: shape.tokens)
    _ = try sequenceBuffers(rows: shape.batch)
    if loss.oddsRatio { _ = try orpoBuffers(shape) }
  }

  public func queueForwardBackward(lossNormalizer: Tensor, lossSum: Tensor) throws {
    if loss.oddsRatio { return try queueORPO(lossNormalizer: lossNormalizer, lossSum: lossSum) }
    let rows = stagedRows
    let buffers = try sequenceBuffers(rows: rows)
    let policy = try buffers.view(offset: 0, shape: [rows])
    let reference = try buffers.view(offset: rows, shape: [rows])
    let answerTokens = try buffers.view(offset: 2 * rows, shape: [rows])
    if case .disabledAdapter(let setEnabled) = self.reference {
      setEnabled(false)
      defer { setEnabled(true) }
      try model.forwardStaged(lossNormalizer: .value(1), computeGradients: false, logProbsOnly: true)
      try rowSums(into: reference, rows: rows)
    }
    try model.forwardStaged(lossNormalizer: .value(1), computeGradients: true, weightedLater: true)
    try rowSums(into: policy, rows: rows)
    guard let weights = model.tokenWeightTensor else {
      throw VKFError.other("DPOTask: the forward pass left no token-weight buffer")
    }
    try backend.preferenceLoss(policy: policy, reference: reference, answerTokens: answerTokens,
                               pairsInStep: lossNormalizer, parameters: loss.parameters,
                               tokenWeights: weights, lossSum: lossSum, metrics: try stepMetricsTensor())
    // TRL's DPO loss + router_aux_loss_coef · the policy pass's load-balancing loss.
    try model.queueAuxLoss(into: lossSum)
    try model.backward(tokenWeights: weights)
  }

  public var stepMetrics: Tensor? { try? stepMetricsTensor() }

  public func absorbStepMetrics(_ values: [Float]) { addTrainingMetrics(sums: values) }

  /// out (rows) = −Σ_t losses[row, t]: the summed answer log-probs of the last pass, as a
  /// (rows, T)·(T, 1) product with the ones vector.
  private func rowSums(into out: Tensor, rows: Int) throws {
    guard let losses = model.tokenLossTensor, let ones = model.onesTensor else {
      throw VKFError.other("DPOTask: the forward pass left no per-token losses")
    }
    let t = losses.count / rows
    try backend.matmul(try losses.reshaped([rows, t]), try ones.view(shape: [t, 1]),
                       into: try out.reshaped([rows, 1]), transposeA: false, transposeB: false, alpha: -1, beta: 0)
  }
}
