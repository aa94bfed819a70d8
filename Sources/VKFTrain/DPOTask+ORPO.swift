// ORPO (TRL's ORPOTrainer) on the DPO task's pair pipeline: one policy pass over chosen and
// rejected rows, no reference. Loss = the chosen rows' mean NLL over prompt and answer (TRL
// computes it on the whole chosen sequence) − β·mean log σ(log odds ratio) of the
// length-averaged answer log-probs. Its gradient is the cross-entropy's reweighted per token:
// w = (the pair term's row weight)·[answer token] + (the NLL's weight on chosen rows).
import VKFCore
import VKFData
import VKFModel

/// ORPO's per-token inputs of one step shape (rows × T), uploaded per micro-batch: the answer
/// mask, the NLL's token weights (loss scale) and its metric weights, and a scratch row.
struct ORPOBuffers {
  var answerMask, nllWeights, nllMetricWeights, scratch: Tensor
}

/// ORPO's host-side inputs of a batch padded to `tokens` per row.
struct ORPOInputs {
  /// Next-token targets at every real position of every row (prompt and answer), −100 elsewhere.
  var targets: [Int32]
  /// 1 at answer targets (the pair term's log-probs), else 0.
  var answerMask: [Float]
  /// Share / (chosen rows' targets) at each chosen-row target: the NLL's loss weights.
  var nllWeights: [Float]
  /// Pairs / (chosen rows' targets) at each chosen-row target: Σ w·loss = pairs · mean NLL.
  var nllMetricWeights: [Float]
  /// Answer tokens per row.
  var answerTokens: [Int]
}

extension DPOTask {
  /// The inputs for `batch` (rows padded to `tokens`), its pairs' share of the step being
  /// `pairs / stepPairs`.
  func orpoInputs(_ batch: Batch, answerTargets: [Int32], tokens: Int, stepPairs: Float) -> ORPOInputs {
    let rows = batch.batchSize, t = batch.seqLength, pairs = Float(rows / 2)
    var targets = [Int32](repeating: DecoderModel.ignoreIndex, count: rows * tokens)
    var mask = [Float](repeating: 0, count: rows * tokens), counts = [Int](repeating: 0, count: rows)
    var chosenTargets = 0
    for r in 0..<rows {
      // Real tokens of the row: its example ranges (the batch's padding is outside them).
      let real = batch.boundaries[r].map(\.upperBound).max() ?? t
      for i in 0..<max(real - 1, 0) {
        targets[r * tokens + i] = Int32(batch.inputIds[r * t + i + 1])
        if r % 2 == 0 { chosenTargets += 1 }
        if answerTargets[r * t + i] != DecoderModel.ignoreIndex { mask[r * tokens + i] = 1; counts[r] += 1 }
      }
    }
    var nll = [Float](repeating: 0, count: rows * tokens), metric = nll
    let share = pairs / stepPairs, per = 1 / Float(max(chosenTargets, 1))
    for r in stride(from: 0, to: rows, by: 2) {
      for i in 0..<tokens where targets[r * tokens + i] != DecoderModel.ignoreIndex {
        nll[r * tokens + i] = share * per; metric[r * tokens + i] = pairs * per
      }
    }
    return ORPOInputs(targets: targets, answerMask: mask, nllWeights: nll, nllMetricWeights: metric, answerTokens: counts)
  }

  /// The buffers of `shape` (made once per shape, so recordings keep valid views).
  func orpoBuffers(_ shape: StepShape) throws -> ORPOBuffers {
    if let b = orpoBuffersByShape[shape] { return b }
    let n = shape.batch * shape.tokens
    let b = ORPOBuffers(answerMask: try backend.allocate([n]), nllWeights: try backend.allocate([n]),
                        nllMetricWeights: try backend.allocate([n]), scratch: try backend.allocate([n]))
    orpoBuffersByShape[shape] = b
    return b
  }

  /// Staged: stage ids, full targets and the token inputs of `batch` at `shape`.
  func stageORPO(_ batch: Batch, ids: [Int32], targets: [Int32], as shape: StepShape) throws {
    let rows = batch.batchSize
    let o = orpoInputs(batch, answerTargets: targets, tokens: shape.tokens, stepPairs: stepPairs)
    let padded = try SFTTask.padded(ids: ids, targets: targets, batch: batch, to: shape)
    try model.stage(ids: padded.ids, targets: o.targets, batch: shape.batch,
                    tokenMask: SFTTask.tokenMask(batch, model: model, tokens: shape.tokens),
                    auxLossWeight: Float(rows / 2) / stepPairs)
    let b = try orpoBuffers(shape)
    try backend.upload(o.answerMask, to: b.answerMask)
    try backend.upload(o.nllWeights, to: b.nllWeights)
    try backend.upload(o.nllMetricWeights, to: b.nllMetricWeights)
    let buffers = try sequenceBuffers(rows: rows)
    try backend.upload([Float](repeating: 0, count: rows) + o.answerTokens.map(Float.init),
                       to: try buffers.view(offset: rows, shape: [2 * rows]))
    stagedShape = shape
  }

  /// Staged: the policy pass, the odds-ratio op, the NLL term and the weighted backward.
  func queueORPO(lossNormalizer: Tensor, lossSum: Tensor) throws {
    guard let shape = stagedShape else { throw VKFError.other("DPOTask: stage an ORPO batch first") }
    let rows = shape.batch, n = rows * shape.tokens
    let b = try orpoBuffers(shape), buffers = try sequenceBuffers(rows: rows)
    let policy = try buffers.view(offset: 0, shape: [rows])
    try model.forwardStaged(lossNormalizer: .value(1), computeGradients: true, weightedLater: true)
    guard let losses = model.tokenLossTensor, let ones = model.onesTensor, let weights = model.tokenWeightTensor else {
      throw VKFError.other("DPOTask: the forward pass left no per-token buffers")
    }
    // The answers' summed log-probs: −Σ_t mask·loss per row.
    try backend.mul(losses, b.answerMask, into: b.scratch)
    try backend.matmul(try b.scratch.reshaped([rows, shape.tokens]), try ones.view(shape: [shape.tokens, 1]),
                       into: try policy.reshaped([rows, 1]), transposeA: false, transposeB: false, alpha: -1, beta: 0)
    let metrics = try stepMetricsTensor()
    try backend.preferenceLoss(policy: policy, reference: try buffers.view(offset: rows, shape: [rows]),
                               answerTokens: try buffers.view(offset: 2 * rows, shape: [rows]),
                               pairsInStep: lossNormalizer, parameters: loss.parameters, tokenWeights: weights,
                               lossSum: lossSum, metrics: metrics)
    // Token weights: the pair term's on answer tokens, plus the NLL's on chosen rows.
    try backend.mul(weights, b.answerMask, into: weights)
    try backend.add(weights, b.nllWeights, alpha: 1, into: weights)
    let row = try losses.reshaped([1, n])
    try backend.matmul(row, try b.nllWeights.reshaped([n, 1]), into: try lossSum.view(offset: 0, shape: [1, 1]),
                       transposeA: false, transposeB: false, alpha: 1, beta: 1)
    let nllSlot = PreferenceLossParameters.Metric.nll.rawValue
    try backend.matmul(row, try b.nllMetricWeights.reshaped([n, 1]),
                       into: try metrics.view(offset: nllSlot, shape: [1, 1]), transposeA: false, transposeB: false,
                       alpha: 1, beta: 1)
    try model.queueAuxLoss(into: lossSum)
    try model.backward(tokenWeights: weights)
  }

  /// The unstaged step: the same loss with the pair math on the host.
  func orpoForwardBackward(_ batch: Batch, lossNormalizer: Float, dropoutSeed: UInt64) throws -> Float {
    let (ids, answerTargets) = try SFTTask.int32(batch)
    let rows = batch.batchSize
    try checkPairs(batch, answerTargets)
    try dropoutSeedSetter(dropoutSeed)
    let o = orpoInputs(batch, answerTargets: answerTargets, tokens: batch.seqLength, stepPairs: lossNormalizer)
    try model.stage(ids: ids, targets: o.targets, batch: rows, tokenMask: SFTTask.tokenMask(batch, model: model),
                    auxLossWeight: Float(rows / 2) / lossNormalizer)
    try model.forwardStaged(lossNormalizer: .value(1), computeGradients: true, weightedLater: true)
    let aux = try auxLoss()
    let (out, nll, nllMetric) = try orpoHostLoss(rows: rows, o, pairsInStep: Double(lossNormalizer))
    var sums = out.metrics
    sums[PreferenceLossParameters.Metric.nll.rawValue] += nllMetric
    trainMetrics.add(sums: sums)
    let t = batch.seqLength
    let weights = (0..<(rows * t)).map { i in Float(out.rowWeights[i / t]) * o.answerMask[i] + o.nllWeights[i] }
    try model.backward(tokenWeights: weights)
    return Float(out.loss + nll) + aux
  }

  /// The pair term (`PreferenceLossMath.batch`), the NLL's share of the loss and its metric
  /// sum, from the last pass's per-token losses.
  private func orpoHostLoss(rows: Int, _ o: ORPOInputs, pairsInStep: Double) throws
    -> (out: (rowWeights: [Double], loss: Double, metrics: [Double]), nll: Double, nllMetric: Double) {
    let losses = try model.tokenLosses(), t = losses.count / rows
    let policy = (0..<rows).map { r in (0..<t).reduce(0.0) { $0 - Double(losses[r * t + $1] * o.answerMask[r * t + $1]) } }
    let out = PreferenceLossMath.batch(policy: policy, reference: [Double](repeating: 0, count: rows),
                                       answerTokens: o.answerTokens, pairsInStep: pairsInStep, loss.parameters)
    let nll = zip(losses, o.nllWeights).reduce(0.0) { $0 + Double($1.0 * $1.1) }
    let nllMetric = zip(losses, o.nllMetricWeights).reduce(0.0) { $0 + Double($1.0 * $1.1) }
    return (out, nll, nllMetric)
  }

  /// Evaluation: Σ over pairs of the pair term plus pairs·(mean chosen NLL), so the trainer's
  /// mean per pair is TRL's ORPO loss.
  func orpoEvaluate(_ batch: Batch) throws -> (lossSum: Double, tokens: Int) {
    let (ids, answerTargets) = try SFTTask.int32(batch)
    let rows = batch.batchSize
    try checkPairs(batch, answerTargets)
    trainingModeSetter(false)
    defer { trainingModeSetter(true) }
    let o = orpoInputs(batch, answerTargets: answerTargets, tokens: batch.seqLength, stepPairs: 1)
    try model.forward(ids: ids, targets: o.targets, batch: rows, lossNormalizer: 1, logProbsOnly: true)
    let (out, _, nllMetric) = try orpoHostLoss(rows: rows, o, pairsInStep: 1)
    var sums = out.metrics
    sums[PreferenceLossParameters.Metric.nll.rawValue] += nllMetric
    evalMetrics.add(sums: sums)
    return (sums[PreferenceLossParameters.Metric.loss.rawValue] + nllMetric, rows / 2)
  }
}
