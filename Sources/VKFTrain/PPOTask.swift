// PPO over a LoRA policy with a value head on the same backbone: each step samples one
// completion per prompt, scores it with a reward model, takes the rollout's log-probs and
// values (adapter on) and the reference's (adapter off), turns them into advantages and
// returns (`PPOMath`), then makes num_ppo_epochs × num_mini_batches optimizer updates on it.
import Foundation
import VKFCore
import VKFData
import VKFModel
import VKFPEFT

/// A completion the policy sampled: its kept ids (the EOS last when it ended on one) and the
/// sampling distribution's entropy summed over its tokens.
public struct PPOCompletion: Sendable, Equatable {
  public var ids: [Int]
  public var endsWithEOS: Bool
  public var entropySum: Double
  public init(ids: [Int], endsWithEOS: Bool, entropySum: Double = 0) {
    self.ids = ids; self.endsWithEOS = endsWithEOS; self.entropySum = entropySum
  }
}

/// Where PPO's rollouts come from.
public struct PPORolloutSource {
  /// One completion of each prompt: sampled from `seed`, or greedy (the policy's argmax; the
  /// task itself always samples).
  public var complete: (_ prompts: [[Int]], _ seed: UInt64, _ greedy: Bool) throws -> [PPOCompletion]
  /// The reward model's score of each prompt + completion row.
  public var score: (_ rows: [[Int]]) throws -> [Double]
  /// Seed of the draws; each step derives its own.
  public var seed: UInt64

  public init(seed: UInt64, complete: @escaping ([[Int]], UInt64, Bool) throws -> [PPOCompletion],
              score: @escaping ([[Int]]) throws -> [Double]) {
    self.seed = seed; self.complete = complete; self.score = score
  }

  /// Sampling with the batched engine (the policy as it is, its cache in the training arena).
  public static func sampling(_ generator: BatchGenerator, temperature: Float, maxNewTokens: Int, seed: UInt64,
                              score: @escaping ([[Int]]) throws -> [Double]) -> PPORolloutSource {
    PPORolloutSource(seed: seed, complete: { prompts, seed, greedy in
      generator.recordsEntropy = !greedy
      let config = GenerationConfig(maxNewTokens: maxNewTokens, temperature: greedy ? 0 : temperature, seed: seed)
      return try generator.generate(prompts: prompts, config: config).map { out in
        var ids = out.tokenIDs, eos = false
        if case .eos(let id) = out.stopReason { ids.append(id); eos = true }
        return PPOCompletion(ids: ids, endsWithEOS: eos, entropySum: out.entropySum)
      }
    }, score: score)
  }
}

/// A step's rollout batch with everything its updates read.
struct PPOBatch {
  var prompts: [[Int]], completions: [PPOCompletion]
  var shape: PPORolloutShape
  /// The rollout's log-probs (kept tokens) and values (value lengths), both rows × W.
  var logProbs: [[Double]], values: [[Double]]
  var advantages: PPOAdvantages
}

/// PPO with LoRA (or QLoRA): the reference is the adapter switched off, the value head a
/// trained (1, C) projection of the final hidden states the LM head reads, so the value loss
/// trains the shared adapter too (vf_coef weighs it). Dropout stays off, as TRL's PPO
/// disables it in every model.
public final class PPOTask {
  public let model: DecoderModel
  public let valueHead: ScoreHead
  public let trainableTensors: [TrainableTensor]
  public let config: PPOConfig
  /// Rows per micro-batch of the updates and rollout passes (per_device_train_batch_size).
  public let microBatchRows: Int
  public let padID: Int
  /// Where rollouts come from (nil: nothing to train on).
  public var source: PPORolloutSource?
  /// Test seam: the order of the rollout rows in PPO epoch `e` of a step (default: a
  /// shuffle seeded by the source's seed, the step and the epoch).
  public var permutation: ((_ step: Int, _ epoch: Int, _ rows: Int) -> [Int])?
  /// The trainable name of the value head.
  public static let valueHeadName = "value_head.weight"
  let setAdapterEnabled: (Bool) -> Void
  private let zero: () throws -> Void
  var batch: PPOBatch?
  /// Each update's micro-batches (row indices into `batch`).
  var plan: [[[Int]]] = []
  var trainSums = GRPOMetricSums(), evalSums = GRPOMetricSums()
  /// The update statistics of the current step (TRL's *_stats arrays, one entry per micro-batch).
  var updateStats: [PPOMath.MicroBatch] = []
  private var scratch: (n: Int, values: Tensor, coefficients: Tensor)?

  public init(model: DecoderModel, lora: LoRAModel, valueHead: ScoreHead, config: PPOConfig, microBatchRows: Int,
              padID: Int) throws {
    try config.validate()
    guard microBatchRows >= 1 else {
      throw TrainingError.invalidConfig(field: "per_device_train_batch_size", value: "\(microBatchRows)", requirement: "≥ 1")
    }
    self.model = model; self.valueHead = valueHead; self.config = config
    self.microBatchRows = microBatchRows; self.padID = padID
    trainableTensors = lora.trainableTensors
      + [TrainableTensor(name: Self.valueHeadName, value: valueHead.weight, gradient: valueHead.gradient)]
    let be = model.backend, g = valueHead.gradient
    zero = { try lora.zeroGradients(); try be.fill(g, value: 0) }
    setAdapterEnabled = { lora.enabled = $0 }
    lora.training = false
    try model.setLossTemperature(config.logitTemperature)
    try model.setLossTemperature(1)
  }

  public var backend: Backend { model.backend }
  public func zeroGradients() throws { try zero() }

  /// ids (B, T) right-padded, targets at the completion tokens, and for each row the flat
  /// position predicting completion token t (t ≤ its length: position `length` is the last
  /// kept token's, whose state the value after the EOS reads).
  func sequences(_ prompts: [[Int]], _ completions: [[Int]]) -> (ids: [Int32], targets: [Int32], positions: [[Int]]) {
    let t = zip(prompts, completions).map { $0.count + $1.count }.max() ?? 1
    var ids = [Int32](repeating: Int32(padID), count: prompts.count * t)
    var targets = [Int32](repeating: Int32(DecoderModel.ignoreIndex), count: prompts.count * t)
    var positions: [[Int]] = []
    for (r, (p, c)) in zip(prompts, completions).enumerated() {
      for (i, id) in (p + c).enumerated() { ids[r * t + i] = Int32(id) }
      for (j, id) in c.enumerated() { targets[r * t + p.count + j - 1] = Int32(id) }
      positions.append((0...c.count).map { r * t + p.count + $0 - 1 })
    }
    return (ids, targets, positions)
  }

  /// Every token's value (N) of the last pass: the value head on its final hidden states.
  func tokenValues() throws -> [Float] {
    guard let h = model.finalHidden else { throw TrainingError.invalidBatch("PPO: no hidden states to value") }
    let s = try scratchTensors(h.rowCount)
    try valueHead.tokenScores(backend, hidden: h, into: s.values)
    return try backend.floats(s.values)
  }

  /// Log-probs (kept tokens, at the temperature) of rows, and their values (value lengths)
  /// unless `values` is false; no gradients.
  func passes(_ prompts: [[Int]], _ completions: [[Int]], lengths: [Int], valueLengths: [Int],
              values: Bool) throws -> (logProbs: [[Double]], values: [[Double]]) {
    let (ids, targets, positions) = sequences(prompts, completions)
    try model.setLossTemperature(config.logitTemperature)
    defer { try? model.setLossTemperature(1) }
    try model.forward(ids: ids, targets: targets, batch: prompts.count, lossNormalizer: 1, logProbsOnly: true)
    let losses = try model.tokenLosses()
    let logp = zip(positions, lengths).map { p, k in p.prefix(k).map { -Double(losses[$0]) } }
    guard values else { return (logp, []) }
    let v = try tokenValues()
    return (logp, zip(positions, valueLengths).map { p, k in p.prefix(k).map { Double(v[$0]) } })
  }

  /// Samples a completion of each prompt, scores it, and takes the rollout's log-probs,
  /// values and reference log-probs in micro-batches; then the advantages over the batch.
  func makeBatch(_ prompts: [[Int]], seed: UInt64) throws -> PPOBatch {
    guard let src = source else { throw VKFError.other("PPOTask: no rollout source (set `source` to train)") }
    let completions = try src.complete(prompts, seed, false)
    guard completions.count == prompts.count else {
      throw TrainingError.invalidBatch("PPO: \(completions.count) completions for \(prompts.count) prompts")
    }
    let shape = PPORolloutShape(lengths: completions.map(\.ids.count))
    guard shape.width > 0 else { throw TrainingError.invalidBatch("PPO: every completion of the batch is empty") }
    var scores = try src.score(zip(prompts, completions).map { $0 + $1.ids })
    if let penalty = config.missingEOSPenalty {
      for (r, c) in completions.enumerated() where !c.endsWithEOS { scores[r] -= penalty }
    }
    var logp: [[Double]] = [], values: [[Double]] = [], ref: [[Double]] = []
    let valueLengths = shape.valueLengths
    for start in stride(from: 0, to: prompts.count, by: microBatchRows) {
      let rows = start..<min(start + microBatchRows, prompts.count)
      let p = Array(prompts[rows]), c = rows.map { completions[$0].ids }
      let lengths = Array(shape.lengths[rows]), vl = Array(valueLengths[rows])
      let policy = try passes(p, c, lengths: lengths, valueLengths: vl, values: true)
      setAdapterEnabled(false)
      defer { setAdapterEnabled(true) }
      let reference = try passes(p, c, lengths: lengths, valueLengths: vl, values: false)
      logp += policy.logProbs; values += policy.values; ref += reference.logProbs
    }
    func padded(_ x: [[Double]]) -> [[Double]] { x.map { $0 + [Double](repeating: 0, count: shape.width - $0.count) } }
    let (paddedLogp, paddedValues) = (padded(logp), padded(values))
    let a = PPOMath.advantages(config, shape: shape, logProbs: paddedLogp, referenceLogProbs: padded(ref),
                               values: paddedValues, scores: scores)
    trainSums.add(Self.rolloutMetrics(a, shape: shape, logProbs: logp, scores: scores, completions: completions))
    return PPOBatch(prompts: prompts, completions: completions, shape: shape, logProbs: paddedLogp,
                    values: paddedValues, advantages: a)
  }

  /// TRL's rollout metrics: objective/kl, non_score_reward, rlhf_reward and entropy (per-row
  /// sums, averaged), objective/scores, val/num_eos_tokens; plus completion lengths and the
  /// sampling entropy per token.
  static func rolloutMetrics(_ a: PPOAdvantages, shape: PPORolloutShape, logProbs: [[Double]], scores: [Double],
                             completions: [PPOCompletion]) -> [String: Double] {
    let n = Double(max(shape.rows, 1))
    let kl = a.kl.reduce(0) { $0 + $1.reduce(0, +) } / n
    let nonScore = a.nonScoreReward.reduce(0) { $0 + $1.reduce(0, +) } / n
    let meanScore = scores.reduce(0, +) / n
    let tokens = shape.lengths.reduce(0, +)
    return ["objective/kl": kl, "objective/non_score_reward": nonScore, "objective/scores": meanScore,
            "objective/rlhf_reward": nonScore + meanScore,
            "objective/entropy": logProbs.reduce(0) { $0 - $1.reduce(0, +) } / n,
            "val/num_eos_tokens": Double(completions.filter(\.endsWithEOS).count),
            "completions/mean_length": Double(tokens) / n,
            "entropy": tokens > 0 ? completions.reduce(0) { $0 + $1.entropySum } / Double(tokens) : .nan]
  }

  private func scratchTensors(_ n: Int) throws -> (values: Tensor, coefficients: Tensor) {
    if let s = scratch, s.n == n { return (s.values, s.coefficients) }
    let values = try backend.allocate([n, 1]), coefficients = try backend.allocate([n, 1])
    scratch = (n, values, coefficients)
    return (values, coefficients)
  }

  /// Forward and backward of micro-batch `rows` of the step's batch; its share of the update
  /// is 1/`share` (TRL's accumulation averages the micro-batches). Returns its statistics.
  func trainMicroBatch(_ rows: [Int], share: Int, lossScale: Float) throws -> PPOMath.MicroBatch {
    guard let b = batch else { throw TrainingError.invalidBatch("PPO: no rollout batch (prepareStep was not called)") }
    let (ids, targets, positions) = sequences(rows.map { b.prompts[$0] }, rows.map { b.completions[$0].ids })
    try model.setLossTemperature(config.logitTemperature)
    defer { try? model.setLossTemperature(1) }
    try model.stage(ids: ids, targets: targets, batch: rows.count, auxLossWeight: 0)
    try model.forwardStaged(lossNormalizer: .value(1), computeGradients: true, weightedLater: true)
    let losses = try model.tokenLosses()
    let v = try tokenValues()
    let valueLengths = b.shape.valueLengths
    let logp = rows.enumerated().map { i, r in positions[i].prefix(b.shape.lengths[r]).map { -Double(losses[$0]) } }
    let values = rows.enumerated().map { i, r in positions[i].prefix(valueLengths[r]).map { Double(v[$0]) } }
    let mb = PPOMath.microBatch(config, shape: b.shape, rows: rows, logProbs: logp, values: values, old: b.logProbs,
                                oldValues: b.values, advantages: b.advantages)
    let scale = Double(lossScale) / Double(share)
    var weights = [Float](repeating: 0, count: ids.count), coefficients = [Float](repeating: 0, count: ids.count)
    for i in rows.indices {
      for (t, g) in mb.logProbGradients[i].enumerated() { weights[positions[i][t]] = Float(-g * scale) }
      for (t, g) in mb.valueGradients[i].enumerated() { coefficients[positions[i][t]] = Float(g * scale) }
    }
    guard let h = model.finalHidden else { throw TrainingError.invalidBatch("PPO: no hidden states") }
    let s = try scratchTensors(h.rowCount)
    try backend.upload(coefficients, to: s.coefficients)
    try model.backward(tokenWeights: weights) { dHidden in
      try self.valueHead.backward(self.backend, coefficients: s.coefficients, hidden: h, alpha: 1, dHidden: dHidden,
                                  accumulating: true)
    }
    return mb
  }
}
