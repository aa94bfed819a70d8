import Foundation
import VKFCore
import VKFData
import VKFModel
import VKFPEFT
import VKFTokenizer
import VKFTrain

extension TrainData {
  /// GRPO's prompts (`PromptFile`): conversational prompts through the chat template with the
  /// assistant prompt appended, text prompts as they are (TRL's reading); prompts longer than
  /// max_prompt_length keep their last tokens. Each example holds the prompt's ids (the GRPO
  /// task reads nothing else); the longest row is a prompt plus max_completion_length.
  static func loadPrompts(settings s: TrainSettings, model: LoadedModel, trainFile: String) throws -> TrainData {
    let tok = model.tokenizer
    let bos = model.bosTokenID.flatMap { tok.token(for: $0) } ?? ""
    let eos = model.eosTokenIDs.first.flatMap { tok.token(for: $0) } ?? ""
    let template = try s.chatTemplate.map { try ChatTemplate.builtin($0) } ?? model.chatTemplate
    var cut = 0
    func load(_ path: String, _ flag: String) throws -> [(ids: [Int], prompt: GRPOPrompt, fields: [String: String])] {
      try PromptFile.read(path, flag: flag).map { r in
        let text: String, special: Bool
        switch r.prompt {
        case .text(let t): (text, special) = (t, true)
        case .messages(let m):
          guard let template else {
            throw RecipeError("\(path) line \(r.line): a conversational prompt needs a chat template; "
              + "the model has none (set chat_template)")
          }
          (text, special) = (try template.render(messages: m, addGenerationPrompt: true, bosToken: bos, eosToken: eos), false)
        }
        var ids = tok.encode(text, addSpecialTokens: special)
        guard !ids.isEmpty else { throw RecipeError("\(path) line \(r.line): the prompt is empty (no tokens)") }
        if ids.count > s.promptLimit { ids = Array(ids.suffix(s.promptLimit)); cut += 1 }
        return (ids, GRPOPrompt(text: tok.decode(ids, skipSpecialTokens: true), fields: r.textFields), r.textFields)
      }
    }
    var train = try load(trainFile, "data")
    var validation: [(ids: [Int], prompt: GRPOPrompt, fields: [String: String])] = []
    if let evalFile = s.evalData {
      validation = try load(evalFile, "eval_data")
    } else if s.valSetSize > 0 {
      let held = max(1, Int((Double(train.count) * s.valSetSize).rounded()))
      guard held < train.count else { throw RecipeError("val_set_size \(s.valSetSize) leaves no training prompt") }
      var rng = SplitMix64(seed: UInt64(bitPattern: Int64(s.seed)))
      let order = (0..<train.count).map { ($0, rng.next()) }.sorted { $0.1 < $1.1 }.map(\.0)
      validation = order.prefix(held).sorted().map { train[$0] }
      train = order.dropFirst(held).sorted().map { train[$0] }
    }
    if s.maxEvalSamples > 0, validation.count > s.maxEvalSamples { validation = Array(validation.prefix(s.maxEvalSamples)) }
    func example(_ ids: [Int]) -> TokenizedExample {
      TokenizedExample(inputIds: ids, targets: Array(ids.dropFirst()) + [TokenizedExample.ignoreIndex])
    }
    let longest = (train + validation).map(\.ids.count).max() ?? 1
    var data = TrainData(train: train.map { example($0.ids) }, validation: validation.map { example($0.ids) },
                         padID: model.eosTokenIDs.first ?? 0, longestRow: longest + s.maxCompletionLength,
                         summary: "data: \(train.count) training prompts, \(validation.count) validation")
    data.prompts = (train + validation).map { ($0.ids, $0.prompt) }
    if cut > 0 {
      data.warnings.append("\(cut) prompts are longer than max_prompt_length \(s.promptLimit) and kept their last "
        + "\(s.promptLimit) tokens; raise max_prompt_length to keep them whole")
    }
    return data
  }
}

extension TrainRun {
  /// GRPO's task: LoRA (the KL reference is the adapter switched off) or full fine-tuning
  /// with beta 0; the batched engine sampling in the loop, the cache in the training arena;
  /// the reward functions of the recipe and/or a reward model.
  func makeGRPOTask(model: DecoderModel, lora: LoRAModel?, data: TrainData, loaded: LoadedModel,
                    progress: ProgressLine) throws -> GRPOTask {
    let s = settings
    let loss = s.grpoLoss, sampling = s.grpoSampling
    let task: GRPOTask
    do {
      if let lora {
        task = try GRPOTask(model: model, lora: lora, loss: loss, padID: data.padID)
      } else {
        let w = model.weights
        task = try GRPOTask(model: model, trainables: w.trainableTensors, zero: { try w.zeroGradients() },
                            setAdapterEnabled: nil, loss: loss, padID: data.padID)
      }
      task.numIterations = s.numIterations
      try model.setLossTemperature(loss.temperature)
      try model.setLossTemperature(1)
    } catch let e as TrainingError {
      throw RecipeError(e.description)
    } catch {
      throw RecipeError("temperature \(s.temperature): \(error)")
    }
    var functions: [RewardFunction] = []
    do {
      for (i, options) in s.rewardFunctions.enumerated() {
        functions.append(try BuiltinRewards.make("reward_functions[\(i)]", options,
                                                 maxCompletionLength: s.maxCompletionLength))
      }
      if let path = s.rewardModel { functions.append(try rewardModel(path, base: loaded, backend: model.backend)) }
      let rewards = try GRPORewardSet(functions: functions, weights: s.rewardWeights)
      try rewards.check(records: data.prompts.map(\.prompt.fields), source: s.data ?? "data")
      let generator = BatchGenerator(model: model, decoder: loaded.tokenizer, eosTokenIDs: loaded.eosTokenIDs,
                                     contextLimit: loaded.config?.maxPositionEmbeddings ?? .max,
                                     sharesActivationMemory: true)
      task.source = try GRPORolloutSource(generator: generator, rewards: rewards, sampling: sampling, prompts: data.prompts)
      progress.message("GRPO: \(sampling.numGenerations) completions per prompt of ≤ \(sampling.maxCompletionLength) "
        + "tokens (temperature \(s.temperature)), "
        + (s.numIterations > 1 ? "\(s.numIterations) updates per generation batch, " : "")
        + "\(loss.lossType.rawValue) loss, beta \(loss.beta), epsilon "
        + "\(loss.epsilon)/\(loss.epsilonHigh), scale_rewards \(loss.scaleRewards.rawValue); rewards: "
        + zip(rewards.names, rewards.weights).map { "\($0) × \($1)" }.joined(separator: ", "))
    } catch let e as RewardConfigError {
      throw RecipeError(e.description)
    }
    return task
  }

  /// `reward_model`: an adapter over this run's base (task_type SEQ_CLS) or a merged reward
  /// model directory, scoring prompt + completion rows.
  func rewardModel(_ path: String, base: LoadedModel, backend: Backend) throws -> ModelReward {
    let isAdapter = FileManager.default.fileExists(atPath: URL(fileURLWithPath: path).appendingPathComponent("adapter_config.json").path)
    let loaded = isAdapter ? base : try ModelLoader.load(path)
    let reward = try RewardModel.load(loaded, adapter: isAdapter ? path : nil, backend: backend)
    let scorer = RewardTask(model: try DecoderModel(weights: reward.weights), head: reward.head, baseTrainables: [],
                            headName: ScoreHead.parameterName, zero: {}, padID: reward.padID)
    let batchSize = max(1, settings.perDeviceTrainBatchSize)
    let box = UncheckedScorer(scorer: scorer, padID: reward.padID, batchSize: batchSize)
    return ModelReward { rows in try box.score(rows) }
  }
}

/// The reward model's scorer behind a Sendable closure (used on the training thread only).
final class UncheckedScorer: @unchecked Sendable {
  let scorer: RewardTask, padID: Int, batchSize: Int
  init(scorer: RewardTask, padID: Int, batchSize: Int) { self.scorer = scorer; self.padID = padID; self.batchSize = batchSize }

  func score(_ rows: [[Int]]) throws -> [Double] {
    let examples = rows.map { TokenizedExample(inputIds: $0, targets: [Int](repeating: TokenizedExample.ignoreIndex, count: $0.count)) }
    var out: [Double] = []
    for batch in Batching.batches(examples, batchSize: batchSize, padID: padID) { out += try scorer.scores(batch) }
    return out
  }
}
