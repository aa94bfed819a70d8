// GRPO inside the training loop: each optimizer step first samples num_generations
// completions of every prompt of the step with the policy (the batched engine), scores them,
// turns the rewards into advantages over the whole step (TRL's generation batch), then runs
// the surrogate's forward and backward micro-batch by micro-batch.
import Foundation
import VKFCore
import VKFData
import VKFModel

/// How GRPO samples its completions (TRL GRPOConfig names in the comments).
public struct GRPOSampling: Equatable, Sendable {
  /// `num_generations`: completions per prompt (≥ 2).
  public var numGenerations = 8
  /// `max_completion_length`.
  public var maxCompletionLength = 512
  /// `temperature`, `top_k` (0 off), `top_p` (1 off), `repetition_penalty` (1 off).
  public var temperature: Float = 1, topK = 0, topP: Float = 1, repetitionPenalty: Float = 1
  /// Seed of the draws; each step and micro-batch derives its own from it.
  public var seed: UInt64 = 0

  public init(numGenerations: Int = 8, maxCompletionLength: Int = 512, temperature: Float = 1, topK: Int = 0,
              topP: Float = 1, repetitionPenalty: Float = 1, seed: UInt64 = 0) {
    self.numGenerations = numGenerations; self.maxCompletionLength = maxCompletionLength
    self.temperature = temperature; self.topK = topK; self.topP = topP; self.repetitionPenalty = repetitionPenalty
    self.seed = seed
  }

  /// The engine's settings for one batch of draws.
  func generation(seed: UInt64) -> GenerationConfig {
    GenerationConfig(maxNewTokens: maxCompletionLength, temperature: temperature, topK: topK, topP: topP,
                     repetitionPenalty: repetitionPenalty, seed: seed)
  }

  public func validate() throws {
    guard numGenerations >= 2 else {
      throw TrainingError.invalidConfig(field: "num_generations", value: "\(numGenerations)",
                                        requirement: "at least 2 (advantages compare a prompt's completions)")
    }
    guard maxCompletionLength >= 1 else {
      throw TrainingError.invalidConfig(field: "max_completion_length", value: "\(maxCompletionLength)", requirement: "≥ 1")
    }
    guard temperature > 0, temperature.isFinite else {
      throw TrainingError.invalidConfig(field: "temperature", value: "\(temperature)",
                                        requirement: "> 0 (GRPO samples; its log-probs are at this temperature)")
    }
    do { try generation(seed: 0).validate() } catch {
      throw TrainingError.invalidConfig(field: "sampling", value: "", requirement: "\(error)")
    }
  }
}

/// A prompt's text and record fields, for the reward functions.
public struct GRPOPrompt: Sendable {
  public var text: String
  public var fields: [String: String]
  public init(text: String, fields: [String: String]) { self.text = text; self.fields = fields }

  /// The registry key of a prompt's ids (FNV-1a 64).
  public static func key(_ ids: some Collection<Int>) -> UInt64 {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for id in ids {
      var x = UInt64(bitPattern: Int64(id))
      for _ in 0..<8 { h = (h ^ (x & 0xff)) &* 0x100_0000_01b3; x >>= 8 }
    }
    return h
  }
}

/// What GRPO's rollouts need beyond the model: the engine, the rewards and the prompts.
public final class GRPORolloutSource {
  public let generator: BatchGenerator
  public let rewards: GRPORewardSet
  public let sampling: GRPOSampling
  /// Prompt ids' key → its text and fields.
  let prompts: [UInt64: GRPOPrompt]

  /// `prompts`: every training and evaluation prompt's ids with its text and fields.
  public init(generator: BatchGenerator, rewards: GRPORewardSet, sampling: GRPOSampling,
              prompts: [(ids: [Int], prompt: GRPOPrompt)]) throws {
    try sampling.validate()
    self.generator = generator; self.rewards = rewards; self.sampling = sampling
    var table: [UInt64: GRPOPrompt] = [:]
    for (ids, p) in prompts { table[GRPOPrompt.key(ids)] = p }
    self.prompts = table
  }
}

extension GRPOTask: TrainingTask {
  /// GRPO normalises inside the step (`GRPOMath.rowScales`); the trainer's normalizer only
  /// carries a gradient scaler's factor.
  public func lossNormalizer(for batches: [Batch]) -> Float { 1 }

  public func takeMetrics(training: Bool) -> [String: Double] {
    defer { if training { trainSums = GRPOMetricSums() } else { evalSums = GRPOMetricSums() } }
    return (training ? trainSums : evalSums).means
  }

  /// TRL's `entropy`: the mean over the completion tokens with a loss (the mask) of the
  /// sampling distribution's entropy (at the temperature; the generation's own passes).
  static func meanEntropy(_ sums: [Double], _ masks: [CompletionMask], _ c: GRPOLossConfig) -> Double {
    var total = 0.0, tokens = 0
    for (s, m) in zip(sums, masks) where !(c.maskTruncatedCompletions && m.truncated) { total += s; tokens += m.length }
    return tokens > 0 ? total / Double(tokens) : .nan
  }

  /// The prompts of a batch's rows (padding stripped by the rows' boundaries).
  static func prompts(of b: Batch) -> [[Int]] {
    (0..<b.batchSize).map { r in
      let length = b.boundaries[r].map(\.upperBound).max() ?? b.seqLength
      return Array(b.inputIds[(r * b.seqLength)..<(r * b.seqLength + length)])
    }
  }

  /// Samples G completions of every prompt (adapter on, dropout off), scores them.
  func rollouts(_ prompts: [[Int]], seed: UInt64) throws
    -> (rows: [[Int]], completions: [[Int]], masks: [CompletionMask], rewards: [[Double]], entropy: [Double]) {
    guard let src = source else { throw VKFError.other("GRPOTask: no rollout source (set `source` to train)") }
    let g = src.sampling.numGenerations
    let rows = prompts.flatMap { p in [[Int]](repeating: p, count: g) }
    src.generator.recordsEntropy = true
    trainingModeSetter(false)
    defer { trainingModeSetter(true) }
    let done = try src.generator.generate(prompts: rows, config: src.sampling.generation(seed: seed))
    var completions: [[Int]] = [], masks: [CompletionMask] = [], inputs: [RewardInput] = [], sequences: [[Int]] = []
    for (row, out) in zip(rows, done) {
      var kept = out.tokenIDs
      if case .eos(let id) = out.stopReason { kept.append(id) }
      let mask = CompletionMask(length: kept.count, truncated: { if case .eos = out.stopReason { false } else { true } }())
      guard let p = src.prompts[GRPOPrompt.key(row)] else {
        throw TrainingError.invalidBatch("a GRPO prompt of the batch is not in the prompt table")
      }
      completions.append(kept); masks.append(mask); sequences.append(row + kept)
      inputs.append(RewardInput(prompt: p.text, completion: out.text, completionTokens: kept.count, fields: p.fields))
    }
    return (rows, completions, masks, try src.rewards.score(inputs, sequences: sequences), done.map(\.entropySum))
  }

  public func prepareStep(_ batches: [Batch], completedSteps: Int) throws {
    guard let src = source else { return }
    let g = src.sampling.numGenerations
    let prompts = batches.map(Self.prompts)
    // Room for the training pass (and the cache, which borrows it between steps).
    let longest = prompts.joined().map(\.count).max() ?? 1
    try model.reserve(batch: (prompts.map(\.count).max() ?? 1) * g, tokens: longest + src.sampling.maxCompletionLength)
    var made: [(rows: [[Int]], completions: [[Int]], masks: [CompletionMask], rewards: [[Double]], entropy: [Double])] = []
    for (i, p) in prompts.enumerated() {
      var mix = SplitMix64(seed: src.sampling.seed ^ (UInt64(completedSteps) &* 0x9E37_79B9_7F4A_7C15) ^ UInt64(i))
      made.append(try rollouts(p, seed: mix.next()))
    }
    // Advantages over the whole step (TRL's generation batch; groups never span micro-batches).
    let perFunction = made.flatMap(\.rewards)
    let combined = GRPOMath.combinedRewards(perFunction, weights: src.rewards.weights)
    let (advantages, zeroStd) = GRPOMath.advantages(rewards: combined, groupSize: g, scaling: loss.scaleRewards)
    var metrics = GRPOMetrics.rollout(rewardsPerFunction: perFunction, names: src.rewards.names, rewards: combined,
                                      masks: made.flatMap(\.masks))
    metrics["frac_reward_zero_std"] = Double(zeroStd.filter { $0 }.count) / Double(max(zeroStd.count, 1))
    metrics["entropy"] = Self.meanEntropy(made.flatMap(\.entropy), made.flatMap(\.masks), loss)
    trainSums.add(metrics)
    pending = []
    cursor = 0
    var start = 0
    for m in made {
      pending.append(GRPORollouts(prompts: m.rows, completions: m.completions, masks: m.masks,
                                  advantages: Array(advantages[start..<(start + m.rows.count)])))
      start += m.rows.count
    }
    stepTokens = pending.reduce(0) { $0 + $1.lossTokens(loss).reduce(0, +) }
    if numIterations > 1 {
      // The policy's log-probs before this step's updates (dropout off): TRL's old_per_token_logps.
      trainingModeSetter(false)
      defer { trainingModeSetter(true) }
      for i in pending.indices {
        let (ids, targets, _, positions) = pending[i].sequences(padID: padID)
        pending[i].oldLogProbs = try logProbs(ids: ids, targets: targets, rows: pending[i].rows, positions: positions)
      }
    }
  }

  public func forwardBackward(_ batch: Batch, lossNormalizer: Float, dropoutSeed: UInt64) throws -> Float {
    guard cursor < pending.count else {
      throw TrainingError.invalidBatch("GRPO: a micro-batch without rollouts (prepareStep was not called for this step)")
    }
    cursor += 1
    return try trainPending(cursor - 1, dropoutSeed: dropoutSeed, lossScale: 1 / lossNormalizer)
  }

  /// The surrogate's forward and backward over the step's micro-batch `i`; logs its clip
  /// ratios (and KL). Returns its share of the step loss.
  func trainPending(_ i: Int, dropoutSeed: UInt64, lossScale: Float) throws -> Float {
    let out = try train(on: pending[i], stepTokens: stepTokens, microBatches: pending.count, dropoutSeed: dropoutSeed,
                        lossScale: lossScale)
    let tokens = Double(max(out.step.tokens, 1))
    var m = ["clip_ratio/low_mean": Double(out.step.lowClipped) / tokens,
             "clip_ratio/high_mean": Double(out.step.highClipped) / tokens,
             "clip_ratio/region_mean": Double(out.step.lowClipped + out.step.highClipped) / tokens]
    if loss.beta != 0 { m["kl"] = out.step.klSum / tokens }
    trainSums.add(m)
    return out.loss
  }

  /// Samples completions of the batch's prompts with a fixed seed and scores them: the
  /// "loss" is −(sum of rewards) over completions, so a lower evaluation loss is a higher mean
  /// reward; the reward metrics are logged as TRL names them.
  public func evaluate(_ batch: Batch) throws -> (lossSum: Double, tokens: Int) {
    guard let src = source else { return (0, 0) }
    let m = try rollouts(Self.prompts(of: batch), seed: src.sampling.seed ^ 0xE7A1_5EED)
    let combined = GRPOMath.combinedRewards(m.rewards, weights: src.rewards.weights)
    var metrics = GRPOMetrics.rollout(rewardsPerFunction: m.rewards, names: src.rewards.names, rewards: combined,
                                      masks: m.masks)
    metrics["entropy"] = Self.meanEntropy(m.entropy, m.masks, loss)
    evalSums.add(metrics)
    let scored = combined.filter { !$0.isNaN }
    return (-scored.reduce(0, +), scored.count)
  }
}

/// num_iterations > 1: each step is μ updates over the same generation batch, all at the
/// step's learning rate (TRL counts each as an optimizer step; here `max_steps` counts the
/// generation batches).
extension GRPOTask: MultiUpdateTrainingTask {
  public var updatesPerStep: Int? { numIterations > 1 ? numIterations : nil }

  public func forwardBackward(update u: Int, lossScale: Float, dropoutSeed: () -> UInt64) throws -> Float {
    var loss: Float = 0
    for i in pending.indices { loss += try trainPending(i, dropoutSeed: dropoutSeed(), lossScale: lossScale) }
    return loss
  }
}
