// Reward-model training as a staged task: the host uploads a micro-batch of pairs (padded to
// its step shape) and a one-hot selector of each row's scored token; the recorded half runs
// the trunk, the scalar head, the Bradley–Terry loss on the device (`preferenceLoss` with
// kind .reward) and the backward through the head — no host round trip in a step.
import VKFCore
import VKFData
import VKFModel

/// A reward step's device buffers for one step shape (rows, T); N = rows·T.
struct RewardStepBuffers {
  /// 1 at each row's scored token, else 0 (N): uploaded per micro-batch.
  var selector: Tensor
  /// h·headᵀ of every token (N, 1).
  var tokenScores: Tensor
  /// tokenScores ⊙ selector, then the coefficients −dL/dscore ⊙ selector (N).
  var masked: Tensor
  /// Each row's score (rows).
  var scores: Tensor
  /// The preference op's per-row margins (m on chosen rows, 0 on rejected) and the ones it
  /// reads as answer lengths (2·rows): constant, uploaded once.
  var rowInputs: Tensor
  /// −dL/dscore per row (rows), written by the preference op.
  var rowWeights: Tensor
}

extension RewardTask: StagedTrainingTask {
  /// The device loss: −log σ(r_c − r_r − margin), rewards logged as the scores.
  static let lossParameters = PreferenceLossParameters(kind: .reward, beta: 1)

  public func stage(_ batch: Batch, as shape: StepShape, dropoutSeed: UInt64) throws -> Bool {
    let (ids, _) = try SFTTask.int32(batch)
    let rows = batch.batchSize, t = batch.seqLength
    guard rows % 2 == 0 else { throw TrainingError.invalidBatch("a preference batch has \(rows) rows") }
    guard rows / 2 <= PreferenceLossParameters.maxPairs else {
      throw TrainingError.invalidBatch("\(rows / 2) pairs in one micro-batch; at most "
        + "\(PreferenceLossParameters.maxPairs)")
    }
    let positions = try scoredPositions(ids, rows: rows)
    let ignored = [Int32](repeating: DecoderModel.ignoreIndex, count: ids.count)
    let padded = try SFTTask.padded(ids: ids, targets: ignored, batch: batch, to: shape)
    try model.stage(ids: padded.ids, targets: padded.targets, batch: shape.batch)
    let b = try stepBuffers(shape)
    var selector = [Float](repeating: 0, count: shape.batch * shape.tokens)
    for (r, p) in positions.enumerated() { selector[r * shape.tokens + (p - r * t)] = 1 }
    try backend.upload(selector, to: b.selector)
    stagedShape = shape
    try dropoutSeedSetter(dropoutSeed)
    return true
  }

  public func reserve(_ shape: StepShape) throws {
    try model.reserve(batch: shape.batch, tokens: shape.tokens)
    _ = try stepBuffers(shape)
  }

  public func queueForwardBackward(lossNormalizer: Tensor, lossSum: Tensor) throws {
    guard let shape = stagedShape else { throw VKFError.other("RewardTask: stage a batch first") }
    let b = try stepBuffers(shape)
    let rows = shape.batch, t = shape.tokens, n = rows * t
    let h = try model.forwardHiddenStaged(computeGradients: true)
    guard let ones = model.onesTensor, let dh = model.hiddenGradient else {
      throw VKFError.other("RewardTask: the forward pass left no ones or hidden-gradient buffer")
    }
    // Row scores: every token's h·headᵀ, masked to the scored token, summed per row.
    try head.rowScores(backend, hidden: h, selector: b.selector, tokenScores: b.tokenScores, masked: b.masked,
                       ones: ones, rows: rows, into: b.scores)
    try backend.preferenceLoss(policy: b.scores, reference: try b.rowInputs.view(offset: 0, shape: [rows]),
                               answerTokens: try b.rowInputs.view(offset: rows, shape: [rows]),
                               pairsInStep: lossNormalizer, parameters: Self.lossParameters,
                               tokenWeights: b.rowWeights, lossSum: lossSum, metrics: try stepMetricsTensor())
    // Coefficients c = −dL/dscore at each scored token: dL/dhead += −cᵀ·h, dL/dh = −c·head.
    try backend.scaleRows(try b.selector.reshaped([rows, t]), weights: b.rowWeights,
                          into: try b.masked.reshaped([rows, t]))
    try head.backward(backend, coefficients: try b.masked.reshaped([n, 1]), hidden: h, alpha: -1, dHidden: dh)
    try model.backwardFromHidden()
  }

  public var stepMetrics: Tensor? { try? stepMetricsTensor() }

  public func absorbStepMetrics(_ values: [Float]) { trainMetrics.add(sums: values) }

  /// The buffers of `shape` (made once per shape, so recordings keep valid views).
  func stepBuffers(_ shape: StepShape) throws -> RewardStepBuffers {
    if let b = stepBuffersByShape[shape] { return b }
    let rows = shape.batch, n = rows * shape.tokens
    let margins = (0..<rows).map { $0 % 2 == 0 ? Float(margin) : 0 }
    let b = RewardStepBuffers(
      selector: try backend.allocate([n]), tokenScores: try backend.allocate([n, 1]),
      masked: try backend.allocate([n]), scores: try backend.allocate([rows]),
      rowInputs: try backend.tensor(margins + [Float](repeating: 1, count: rows), shape: [2 * rows]),
      rowWeights: try backend.allocate([rows]))
    stepBuffersByShape[shape] = b
    return b
  }

  /// The step's metric sums on the device (made once).
  func stepMetricsTensor() throws -> Tensor {
    let m = try deviceMetrics ?? backend.preferenceMetricSums()
    deviceMetrics = m
    return m
  }
}

extension Backend {
  /// Zeroed f32 sums of a staged preference step's metrics (`PreferenceLossParameters.Metric`).
  func preferenceMetricSums() throws -> Tensor {
    let m = try allocate([PreferenceLossParameters.metricCount])
    try fill(m, value: 0)
    return m
  }
}
