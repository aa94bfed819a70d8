import Foundation
import VKFCore
import VKFModel
import VKFPEFT
import VKFTrain

extension TrainRun {
  /// PPO's task: LoRA/QLoRA (the reference is the adapter switched off), a value head on the
  /// policy's final hidden states, the batched engine sampling one completion per prompt each
  /// step (its cache in the training arena) and the recipe's reward model scoring them.
  func makePPOTask(model: DecoderModel, lora: LoRAModel?, data: TrainData, loaded: LoadedModel,
                   progress: ProgressLine) throws -> PPOTask {
    let s = settings
    guard let lora else { throw RecipeError("PPO trains an adapter here (its reference is the base): use method lora or qlora") }
    guard let path = s.rewardModel else { throw RecipeError("PPO needs reward_model: a `train --objective reward` output") }
    let config = s.ppoConfig
    let task: PPOTask
    do {
      // The value head starts at zero: values begin at 0 and its gradient trains it from the first update.
      let head = try ScoreHead(values: [Float](repeating: 0, count: model.weights.shape.hidden), backend: model.backend)
      task = try PPOTask(model: model, lora: lora, valueHead: head, config: config,
                         microBatchRows: s.perDeviceTrainBatchSize, padID: data.padID)
    } catch let e as TrainingError {
      throw RecipeError(e.description)
    } catch {
      throw RecipeError("temperature \(s.temperature): \(error)")
    }
    let reward = try rewardModel(path, base: loaded, backend: model.backend)
    let generator = BatchGenerator(model: model, decoder: loaded.tokenizer, eosTokenIDs: loaded.eosTokenIDs,
                                   contextLimit: loaded.config?.maxPositionEmbeddings ?? .max, sharesActivationMemory: true)
    task.source = PPORolloutSource.sampling(generator, temperature: config.temperature, maxNewTokens: s.maxCompletionLength,
                                            seed: UInt64(bitPattern: Int64(s.seed)), score: reward.score)
    progress.message("PPO: one completion per prompt of ≤ \(s.maxCompletionLength) tokens (temperature \(s.temperature)), "
      + "\(config.numPPOEpochs) epochs × \(config.numMiniBatches) mini-batches per rollout batch of "
      + "\(s.perDeviceTrainBatchSize * s.gradientAccumulationSteps) prompts; kl_coef \(config.klCoef) "
      + "(\(config.klEstimator.rawValue)), cliprange \(config.cliprange), cliprange_value \(config.cliprangeValue), "
      + "vf_coef \(config.vfCoef), gamma \(config.gamma), lam \(config.lam)"
      + (config.whitenRewards ? ", whitened rewards" : "")
      + (config.missingEOSPenalty.map { ", missing_eos_penalty \($0)" } ?? "")
      + "; reward model \(path); reference: the model with its adapter disabled")
    return task
  }

  /// The value head beside the adapter: `value_head.safetensors` holding `score.weight`
  /// (1, hidden), as TRL's value model names its head.
  static func writeValueHead(_ task: PPOTask, into output: URL) throws {
    let values = try task.backend.floats(task.valueHead.weight)
    let url = output.appendingPathComponent("value_head.safetensors")
    try SafetensorsWriter.write(floats: [ScoreHead.parameterName: ([1, values.count], values)],
                                metadata: ["format": "pt"], to: url)
  }
}

extension TrainSettings {
  /// PPO's settings, each failure naming its key (TRL PPOConfig's ranges).
  func validatePPO() throws {
    guard objective == .ppo else { return }
    func fail(_ key: String, _ value: Any, _ requirement: String) -> RecipeError {
      RecipeError("\(key) = \(value) is invalid: \(requirement)")
    }
    if method == .full { throw fail("method", "full", "PPO trains an adapter here (its reference is the base): use lora or qlora") }
    guard rewardModel != nil else {
      throw RecipeError("PPO needs reward_model: the output directory of `train --objective reward` (adapter or merged model)")
    }
    if packing { throw RecipeError("packing applies to SFT only; PPO samples a completion of each prompt (drop packing)") }
    guard maxCompletionLength >= 1 else { throw fail("response_length", maxCompletionLength, "use at least 1 token") }
    if !rewardFunctions.isEmpty { throw RecipeError("reward_functions apply to GRPO; PPO's reward is reward_model (drop the key)") }
    let rollout = perDeviceTrainBatchSize * gradientAccumulationSteps
    guard numMiniBatches >= 1, rollout % numMiniBatches == 0 else {
      throw fail("num_mini_batches", numMiniBatches, "use a divisor of the rollout batch per_device_train_batch_size × "
        + "gradient_accumulation_steps = \(rollout)")
    }
    if whitenRewards, rollout / numMiniBatches < 8 {
      throw fail("whiten_rewards", true, "TRL whitens over mini-batches of at least 8 rows; this run's are "
        + "\(rollout / numMiniBatches) (raise the batch or lower num_mini_batches)")
    }
    do { try ppoConfig.validate() } catch let e as TrainingError {
      throw RecipeError(e.description)
    }
  }
}
