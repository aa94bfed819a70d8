// Reward-model training: a scalar head on the last non-pad token (transformers'
// LlamaForSequenceClassification with num_labels = 1) and the pairwise loss
// −log σ(r_chosen − r_rejected − margin).
import Foundation
import VKFCore
import VKFData
import VKFModel
import VKFPEFT

/// Scores sequences and trains on preference pairs ([chosen, rejected, …] examples grouped in
/// twos, as for DPO). A row's score is the head applied to the final normed hidden state of
/// its last token whose id is not `padID` — transformers' rule for sequence classification
/// with `pad_token_id`, so a saved model scores the same there.
public final class RewardTask: TrainingTask {
  public let model: DecoderModel
  public let head: ScoreHead
  public let trainableTensors: [TrainableTensor]
  /// Subtracted from r_c − r_r inside the loss (TRL's `margin`; 0 by default).
  public let margin: Double
  /// The id that pads rows (and is never scored).
  public let padID: Int
  private let zero: () throws -> Void
  let dropoutSeedSetter: (UInt64) throws -> Void
  private let trainingModeSetter: (Bool) -> Void
  var trainMetrics = RewardMetrics()
  private var evalMetrics = RewardMetrics()
  private var scratch: (n: Int, scores: Tensor, coefficients: Tensor)?
  /// Staged steps (`RewardTask+Staged`): device buffers per step shape (recordings keep
  /// views of them), the shape of the last staged batch and the step's metric sums.
  var stepBuffersByShape: [StepShape: RewardStepBuffers] = [:]
  var stagedShape: StepShape?
  var deviceMetrics: Tensor?

  /// `headName` names the head among the trainables: `ScoreHead.peftKey` for adapters,
  /// `ScoreHead.parameterName` for full fine-tuning.
  public init(model: DecoderModel, head: ScoreHead, baseTrainables: [TrainableTensor], headName: String,
              zero: @escaping () throws -> Void, padID: Int, margin: Double = 0,
              setDropoutSeed: @escaping (UInt64) throws -> Void = { _ in },
              setTraining: @escaping (Bool) -> Void = { _ in }) {
    self.model = model; self.head = head; self.padID = padID; self.margin = margin
    trainableTensors = baseTrainables + [TrainableTensor(name: headName, value: head.weight, gradient: head.gradient)]
    let be = model.backend, g = head.gradient
    self.zero = { try zero(); try be.fill(g, value: 0) }
    dropoutSeedSetter = setDropoutSeed; trainingModeSetter = setTraining
  }

  /// LoRA / QLoRA body plus the head (saved as PEFT's `modules_to_save`).
  public convenience init(model: DecoderModel, lora: LoRAModel, head: ScoreHead, padID: Int, margin: Double = 0) {
    self.init(model: model, head: head, baseTrainables: lora.trainableTensors, headName: ScoreHead.peftKey,
              zero: { try lora.zeroGradients() }, padID: padID, margin: margin,
              setDropoutSeed: { try lora.setDropoutSeed($0) }, setTraining: { lora.training = $0 })
  }

  /// Full fine-tuning of every parameter loaded as trainable, plus the head. The LM head takes
  /// no part (its gradient stays zero and it is not saved) unless tied to the embedding.
  public convenience init(fullFineTuning model: DecoderModel, head: ScoreHead, padID: Int, margin: Double = 0) {
    let w = model.weights
    let base = w.trainableTensors.filter { $0.name != ParameterNames.lmHead }
    self.init(model: model, head: head, baseTrainables: base, headName: ScoreHead.parameterName,
              zero: { try w.zeroGradients() }, padID: padID, margin: margin)
  }

  public var backend: Backend { model.backend }
  public var exampleGroupSize: Int { 2 }
  public func zeroGradients() throws { try zero() }

  public func lossNormalizer(for batches: [Batch]) -> Float {
    Float(max(batches.reduce(0) { $0 + $1.batchSize / 2 }, 1))
  }

  public func takeMetrics(training: Bool) -> [String: Double] {
    defer { if training { trainMetrics = RewardMetrics() } else { evalMetrics = RewardMetrics() } }
    return (training ? trainMetrics : evalMetrics).metrics
  }

  /// The score of every row of `batch` (no gradients).
  public func scores(_ batch: Batch) throws -> [Double] {
    let (ids, _) = try SFTTask.int32(batch)
    trainingModeSetter(false)
    defer { trainingModeSetter(true) }
    let h = try model.forwardHidden(ids: ids, batch: batch.batchSize)
    let positions = try scoredPositions(ids, rows: batch.batchSize)
    return try rowScores(h, positions)
  }

  public func forwardBackward(_ batch: Batch, lossNormalizer: Float, dropoutSeed: UInt64) throws -> Float {
    let (ids, _) = try SFTTask.int32(batch)
    let rows = batch.batchSize
    guard rows % 2 == 0 else { throw TrainingError.invalidBatch("a preference batch has \(rows) rows") }
    try dropoutSeedSetter(dropoutSeed)
    let h = try model.forwardHidden(ids: ids, batch: rows, computeGradients: true)
    let positions = try scoredPositions(ids, rows: rows)
    let r = try rowScores(h, positions)
    let p = Double(lossNormalizer)
    var coefficients = [Float](repeating: 0, count: ids.count)
    var loss = 0.0
    for i in 0..<(rows / 2) {
      let out = PreferenceLoss.reward(chosen: r[2 * i], rejected: r[2 * i + 1], margin: margin)
      trainMetrics.add(chosen: r[2 * i], rejected: r[2 * i + 1], loss: out.loss)
      loss += out.loss / p
      coefficients[positions[2 * i]] = Float(out.dChosen / p)
      coefficients[positions[2 * i + 1]] = Float(out.dRejected / p)
    }
    // dL/dhead += coefᵀ·h (1, C); dL/dh = coef·head (N, C), zero except at scored tokens.
    let s = try scratchTensors(ids.count)
    try backend.upload(coefficients, to: s.coefficients)
    guard let dh = model.hiddenGradient else { throw TrainingError.invalidBatch("no hidden gradient buffer") }
    try head.backward(backend, coefficients: s.coefficients, hidden: h, alpha: 1, dHidden: dh)
    try model.backwardFromHidden()
    return Float(loss)
  }

  public func evaluate(_ batch: Batch) throws -> (lossSum: Double, tokens: Int) {
    let r = try scores(batch)
    var sum = 0.0
    for i in 0..<(batch.batchSize / 2) {
      let out = PreferenceLoss.reward(chosen: r[2 * i], rejected: r[2 * i + 1], margin: margin)
      evalMetrics.add(chosen: r[2 * i], rejected: r[2 * i + 1], loss: out.loss)
      sum += out.loss
    }
    return (sum, batch.batchSize / 2)
  }

  /// Flat index of each row's scored token (`ScoreHead.scoredPositions`).
  func scoredPositions(_ ids: [Int32], rows: Int) throws -> [Int] {
    try ScoreHead.scoredPositions(ids, rows: rows, padID: padID).enumerated().map { r, p in
      guard let p else { throw TrainingError.invalidBatch("row \(r) has only padding (id \(padID)); nothing to score") }
      return p
    }
  }

  /// scores (N, 1) = h · headᵀ, read at `positions`.
  private func rowScores(_ h: Tensor, _ positions: [Int]) throws -> [Double] {
    let s = try scratchTensors(h.rowCount)
    try head.tokenScores(backend, hidden: h, into: s.scores)
    let all = try backend.floats(s.scores)
    return positions.map { Double(all[$0]) }
  }

  private func scratchTensors(_ n: Int) throws -> (scores: Tensor, coefficients: Tensor) {
    if let s = scratch, s.n == n { return (s.scores, s.coefficients) }
    let scores = try backend.allocate([n, 1]), coefficients = try backend.allocate([n, 1])
    scratch = (n, scores, coefficients)
    return (scores, coefficients)
  }
}

/// Means of what reward training logs.
struct RewardMetrics {
  var loss = 0.0, chosen = 0.0, rejected = 0.0, correct = 0.0, pairs = 0

  mutating func add(chosen c: Double, rejected r: Double, loss l: Double) {
    loss += l; chosen += c; rejected += r; correct += c > r ? 1 : 0; pairs += 1
  }

  /// Adds the sums of a staged step (`PreferenceLossParameters.Metric` slots).
  mutating func add(sums: [Float]) {
    typealias M = PreferenceLossParameters.Metric
    func v(_ m: M) -> Double { m.rawValue < sums.count ? Double(sums[m.rawValue]) : 0 }
    loss += v(.loss); chosen += v(.rewardsChosen); rejected += v(.rewardsRejected)
    correct += v(.accuracy); pairs += Int(v(.pairs).rounded())
  }

  var metrics: [String: Double] {
    guard pairs > 0 else { return [:] }
    let n = Double(pairs)
    return ["rewards/chosen": chosen / n, "rewards/rejected": rejected / n,
            "rewards/margins": (chosen - rejected) / n, "rewards/accuracies": correct / n]
  }
}
