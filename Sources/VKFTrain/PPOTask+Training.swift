// PPO inside the training loop: a step's prompts (per_device_train_batch_size ×
// gradient_accumulation_steps of them, TRL's local batch) become one rollout batch; the
// trainer then makes the task's num_ppo_epochs × num_mini_batches updates on it.
import Foundation
import VKFCore
import VKFData
import VKFModel

extension PPOTask: MultiUpdateTrainingTask {
  /// The step's updates normalise themselves (TRL's masked means per micro-batch).
  public func lossNormalizer(for batches: [Batch]) -> Float { 1 }

  public var updatesPerStep: Int? { plan.count }

  public func takeMetrics(training: Bool) -> [String: Double] {
    defer { if training { trainSums = GRPOMetricSums() } else { evalSums = GRPOMetricSums() } }
    return (training ? trainSums : evalSums).means
  }

  /// The seeded order of the rows in epoch `epoch` of step `step`.
  func shuffled(step: Int, epoch: Int, rows: Int) -> [Int] {
    Batching.shuffled(Array(0..<rows), seed: (source?.seed ?? 0) ^ (UInt64(step) &* 0x9E37_79B9_7F4A_7C15)
      ^ (UInt64(epoch) &* 0xBF58_476D_1CE4_E5B9))
  }

  public func prepareStep(_ batches: [Batch], completedSteps: Int) throws {
    guard let src = source else { return }
    let prompts = batches.flatMap(GRPOTask.prompts)
    guard prompts.count % config.numMiniBatches == 0 else {
      throw TrainingError.invalidConfig(field: "num_mini_batches", value: "\(config.numMiniBatches)",
        requirement: "a divisor of the step's \(prompts.count) prompts (per_device_train_batch_size × gradient_accumulation_steps)")
    }
    var mix = SplitMix64(seed: src.seed ^ (UInt64(completedSteps) &* 0x9E37_79B9_7F4A_7C15))
    batch = try makeBatch(prompts, seed: mix.next())
    plan = []
    for epoch in 0..<config.numPPOEpochs {
      let order = permutation?(completedSteps, epoch, prompts.count) ?? shuffled(step: completedSteps, epoch: epoch, rows: prompts.count)
      guard order.sorted() == Array(0..<prompts.count) else {
        throw TrainingError.invalidBatch("PPO: epoch \(epoch)'s order is not a permutation of \(prompts.count) rows")
      }
      plan += PPOMath.updates(permutation: order, numMiniBatches: config.numMiniBatches, microBatchRows: microBatchRows)
    }
    updateStats = []
  }

  /// (Dropout stays off in PPO: the seeds are not drawn.)
  public func forwardBackward(update u: Int, lossScale: Float, dropoutSeed: () -> UInt64) throws -> Float {
    guard plan.indices.contains(u) else { throw TrainingError.invalidBatch("PPO: no update \(u) in this step") }
    var loss = 0.0
    for rows in plan[u] {
      let mb = try trainMicroBatch(rows, share: plan[u].count, lossScale: lossScale)
      loss += (mb.policyLoss + config.vfCoef * mb.valueLoss) * Double(lossScale) / Double(plan[u].count)
      updateStats.append(mb)
    }
    if u == plan.count - 1 { trainSums.add(Self.updateMetrics(updateStats)) }
    return Float(loss)
  }

  /// TRL's update metrics: the means over every micro-batch of the step, and the (unbiased)
  /// variance of their mean ratios.
  static func updateMetrics(_ s: [PPOMath.MicroBatch]) -> [String: Double] {
    guard !s.isEmpty else { return [:] }
    let n = Double(s.count)
    func mean(_ f: (PPOMath.MicroBatch) -> Double) -> Double { s.reduce(0) { $0 + f($1) } / n }
    let ratio = mean(\.meanRatio)
    let variance = s.count > 1 ? s.reduce(0) { $0 + ($1.meanRatio - ratio) * ($1.meanRatio - ratio) } / (n - 1) : 0
    return ["policy/approxkl_avg": mean(\.approxKL), "policy/clipfrac_avg": mean(\.policyClipFraction),
            "loss/policy_avg": mean(\.policyLoss), "loss/value_avg": mean(\.valueLoss),
            "val/clipfrac_avg": mean(\.valueClipFraction), "val/ratio": ratio, "val/ratio_var": variance]
  }

  /// PPO runs through `forwardBackward(update:lossScale:)`; a plain micro-batch is refused.
  public func forwardBackward(_ batch: Batch, lossNormalizer: Float, dropoutSeed: UInt64) throws -> Float {
    throw TrainingError.invalidBatch("PPO trains by updates on a rollout batch (the trainer's multi-update step)")
  }

  /// Completions of the batch's prompts sampled as in training (the policy's temperature, a
  /// fixed seed, so evaluations differ only by the policy; TRL samples its evaluation
  /// completions too) scored by the reward model: the "loss" is −(sum of scores), so a lower
  /// evaluation loss is a higher mean score (logged as objective/scores, with the completions'
  /// mean length and the share that ended with an EOS).
  public func evaluate(_ batch: Batch) throws -> (lossSum: Double, tokens: Int) {
    guard let src = source else { return (0, 0) }
    let prompts = GRPOTask.prompts(of: batch)
    let completions = try src.complete(prompts, src.seed ^ 0xE7A1_5EED, false)
    let scores = try src.score(zip(prompts, completions).map { $0 + $1.ids })
    let n = Double(max(prompts.count, 1))
    evalSums.add(["objective/scores": scores.reduce(0, +) / n,
                  "completions/mean_length": Double(completions.reduce(0) { $0 + $1.ids.count }) / n,
                  "completions/ended_ratio": Double(completions.filter(\.endsWithEOS).count) / n])
    return (-scores.reduce(0, +), prompts.count)
  }
}
