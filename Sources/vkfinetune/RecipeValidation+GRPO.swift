import Foundation
import VKFTrain

extension TrainSettings {
  /// KTO's settings (TRL KTOConfig's ranges).
  func validateKTO() throws {
    guard objective == .kto else { return }
    func fail(_ key: String, _ value: Any, _ requirement: String) -> RecipeError {
      RecipeError("\(key) = \(value) is invalid: \(requirement)")
    }
    guard effectiveBeta > 0, effectiveBeta.isFinite else { throw fail("beta", effectiveBeta, "use a number > 0") }
    guard desirableWeight > 0 else { throw fail("desirable_weight", desirableWeight, "use a number > 0") }
    guard undesirableWeight > 0 else { throw fail("undesirable_weight", undesirableWeight, "use a number > 0") }
    if method == .full { throw fail("method", "full", "KTO trains an adapter here (its reference is the base): use lora or qlora") }
    if packing { throw RecipeError("packing applies to SFT only; KTO trains one answer per row (drop packing)") }
    if ktoLoss.lossType == .kto, perDeviceTrainBatchSize < 2 {
      throw fail("per_device_train_batch_size", perDeviceTrainBatchSize,
                 "KTO's KL estimate pairs each prompt with another row's answer: use at least 2")
    }
  }

  /// GRPO's settings, each failure naming its key (TRL GRPOConfig's ranges).
  func validateGRPO() throws {
    guard objective == .grpo else { return }
    func fail(_ key: String, _ value: Any, _ requirement: String) -> RecipeError {
      RecipeError("\(key) = \(value) is invalid: \(requirement)")
    }
    guard numGenerations >= 2 else {
      throw fail("num_generations", numGenerations, "use at least 2 (advantages compare a prompt's completions)")
    }
    guard perDeviceTrainBatchSize % numGenerations == 0 else {
      throw fail("per_device_train_batch_size", perDeviceTrainBatchSize,
                 "GRPO's batch counts completions; use a multiple of num_generations \(numGenerations) "
                 + "(\(numGenerations) completions of each prompt run in one micro-batch)")
    }
    guard maxCompletionLength >= 1 else { throw fail("max_completion_length", maxCompletionLength, "use at least 1 token") }
    guard temperature > 0, temperature.isFinite else {
      throw fail("temperature", temperature, "use a number > 0 (GRPO samples, and its log-probs are at this temperature)")
    }
    guard topK >= 0 else { throw fail("top_k", topK, "use a count ≥ 0 (0 = off)") }
    guard topP > 0, topP <= 1 else { throw fail("top_p", topP, "use a number in (0, 1] (1 = off)") }
    guard repetitionPenalty > 0, repetitionPenalty.isFinite else {
      throw fail("repetition_penalty", repetitionPenalty, "use a number > 0 (1 = off)")
    }
    guard (0..<1).contains(epsilon) else { throw fail("epsilon", epsilon, "use a number in [0, 1)") }
    if let h = epsilonHigh, !(h >= 0 && h.isFinite) { throw fail("epsilon_high", h, "use a number ≥ 0") }
    guard effectiveBeta >= 0, effectiveBeta.isFinite else { throw fail("beta", effectiveBeta, "use a number ≥ 0") }
    guard numIterations >= 1 else {
      throw fail("num_iterations", numIterations, "use at least 1 (optimizer updates per generation batch)")
    }
    if lossType != nil, GRPOLossType(rawValue: lossType ?? "") == nil {
      throw fail("loss_type", lossType ?? "", "GRPO's loss_type is one of \(GRPOLossType.allCases.map(\.rawValue).joined(separator: ", "))")
    }
    if packing { throw RecipeError("packing applies to SFT only; GRPO samples completions of each prompt (drop packing)") }
    guard !rewardFunctions.isEmpty || rewardModel != nil else {
      throw RecipeError("GRPO needs rewards: set reward_functions (e.g. [{type: numeric_match, column: answer}]) "
        + "and/or reward_model")
    }
    if let w = rewardWeights, w.count != rewardFunctions.count + (rewardModel == nil ? 0 : 1) {
      throw RecipeError("reward_weights has \(w.count) weights for \(rewardFunctions.count + (rewardModel == nil ? 0 : 1)) "
        + "reward functions (the reward model counts last)")
    }
    if method == .full, effectiveBeta != 0 {
      throw fail("beta", effectiveBeta, "full fine-tuning has no reference model here (the KL reference is the base "
        + "with the adapter switched off): use method lora, or beta 0")
    }
    for (i, options) in rewardFunctions.enumerated() {
      do { _ = try BuiltinRewards.make("reward_functions[\(i)]", options, maxCompletionLength: maxCompletionLength) } catch {
        throw RecipeError("\(error)")
      }
    }
  }
}
