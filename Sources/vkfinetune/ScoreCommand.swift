import ArgumentParser
import Foundation
import VKFCore
import VKFData
import VKFModel
import VKFPEFT
import VKFTrain

/// `vkfinetune score`: a reward model's score of each answer of preference pairs, and how often
/// it prefers the chosen one.
struct ScoreCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "score",
    abstract: "Rewards of preference pairs under a reward model (adapter or merged), and the pair accuracy.",
    discussion: """
      The reward model is --model with a reward adapter (train --objective reward with LoRA or \
      QLoRA: task_type SEQ_CLS, the head in modules_to_save), or a reward model directory \
      (train --objective reward --method full, or merge of a reward adapter: \
      LlamaForSequenceClassification with score.weight). A sequence's score is the head applied \
      to its last token that is not the pad id, as in training and in transformers. Pairs are \
      tokenized as in training (chat template, max_length / max_prompt_length truncation); the \
      accuracy is the share of pairs whose chosen answer scores strictly higher.
      """)

  @OptionGroup var backendOptions: BackendOptions

  @Option(help: "Model: a reward model directory, or the base model of --adapter (HF directory, .gguf or org/name).")
  var model: String

  @Option(help: "Reward adapter directory (task_type SEQ_CLS) to apply to --model.")
  var adapter: String?

  @Option(help: "Preference pairs (.json / .jsonl): {prompt, chosen, rejected} or hh-rlhf transcripts.")
  var data: String

  @Option(help: "Prompt + longer answer in tokens (TRL max_length).")
  var maxLength = TrainSettings().maxSeqLength

  @Option(help: "Prompt tokens kept when a pair is too long (default min(512, max-length / 2), as train).")
  var maxPromptLength: Int?

  @Option(help: "Pairs per forward pass.")
  var batchSize = TrainSettings().perDeviceTrainBatchSize

  @Option(help: "Chat template: a built-in name (default: the model's own).")
  var chatTemplate: String?

  @Option(help: "Also write the rewards as JSON to this file.")
  var json: String?

  @Flag(name: .customLong("include-ids"), help: .hidden)
  var includeIDs = false

  func run() throws {
    guard batchSize > 0 else { throw RecipeError("--batch-size must be a positive integer, got \(batchSize)") }
    guard maxLength > 1 else { throw RecipeError("--max-length must be at least 2, got \(maxLength)") }
    var s = TrainSettings()
    s.objective = .reward
    s.maxSeqLength = maxLength; s.maxPromptLength = maxPromptLength; s.chatTemplate = chatTemplate
    guard s.promptLimit >= 1, s.promptLimit < maxLength else {
      throw RecipeError("--max-prompt-length \(s.promptLimit) must be at least 1 and below --max-length \(maxLength)")
    }
    try TrainSettings.checkDataFile(data, key: "--data")
    if let json { try OutputChecks.writableParent(of: json, flag: "--json") }

    let loaded = try ModelLoader.load(model)
    let dataset = try PreferenceDataset.load(URL(fileURLWithPath: data),
                                             tokenizer: TrainData.preferenceTokenizer(settings: s, model: loaded))
    let backend = try backendOptions.makeBackend()
    let reward = try RewardModel.load(loaded, adapter: adapter, backend: backend)
    let task = RewardTask(model: try DecoderModel(weights: reward.weights), head: reward.head, baseTrainables: [],
                          headName: ScoreHead.parameterName, zero: {}, padID: reward.padID)

    var rewards: [(chosen: Double, rejected: Double)] = []
    let examples = TrainData.examples(dataset.pairs)
    for batch in Batching.batches(examples, batchSize: 2 * batchSize, padID: reward.padID) {
      let r = try task.scores(batch)
      for i in stride(from: 0, to: r.count, by: 2) { rewards.append((r[i], r[i + 1])) }
    }
    for (i, r) in rewards.enumerated() {
      print(String(format: "pair %d | chosen %+.4f | rejected %+.4f | margin %+.4f", i + 1, r.chosen, r.rejected,
                   r.chosen - r.rejected))
    }
    let n = Double(rewards.count)
    let correct = rewards.filter { $0.chosen > $0.rejected }.count
    let meanChosen = rewards.reduce(0) { $0 + $1.chosen } / n, meanRejected = rewards.reduce(0) { $0 + $1.rejected } / n
    var skipped = ""
    if dataset.stats.identical + dataset.stats.empty > 0 {
      skipped = ", \(dataset.stats.identical + dataset.stats.empty) skipped"
    }
    print(String(format: "accuracy %.4f (%d/%d pairs%@, %d truncated) | mean chosen %+.4f | mean rejected %+.4f | "
                 + "mean margin %+.4f", Double(correct) / n, correct, rewards.count, skipped, dataset.stats.truncated,
                 meanChosen, meanRejected, meanChosen - meanRejected))
    if let json {
      let report = ScoreReport(
        model: model, adapter: adapter, data: data, padTokenId: reward.padID, accuracy: Double(correct) / n,
        pairs: rewards.count, meanChosen: meanChosen, meanRejected: meanRejected,
        truncated: dataset.stats.truncated, skipped: dataset.stats.identical + dataset.stats.empty,
        rewards: zip(rewards, dataset.pairs).map { r, p in
          ScoreReport.Pair(chosen: r.chosen, rejected: r.rejected,
                           chosenIds: includeIDs ? p.prompt + p.chosen : nil,
                           rejectedIds: includeIDs ? p.prompt + p.rejected : nil)
        })
      try AtomicFile.write(try JSONEncoder.pretty.encode(report), to: json)
    }
  }
}

/// `score --json`.
struct ScoreReport: Codable {
  struct Pair: Codable {
    var chosen: Double
    var rejected: Double
    /// The scored sequences' token ids (hidden flag `--include-ids`, for tools/check_reward_model.py).
    var chosenIds: [Int]?
    var rejectedIds: [Int]?
    enum CodingKeys: String, CodingKey {
      case chosen, rejected, chosenIds = "chosen_ids", rejectedIds = "rejected_ids"
    }
  }
  var model: String
  var adapter: String?
  var data: String
  var padTokenId: Int
  var accuracy: Double
  var pairs: Int
  var meanChosen: Double
  var meanRejected: Double
  var truncated: Int
  var skipped: Int
  var rewards: [Pair]

  enum CodingKeys: String, CodingKey {
    case model, adapter, data, padTokenId = "pad_token_id", accuracy, pairs, meanChosen = "mean_chosen"
    case meanRejected = "mean_rejected", truncated, skipped, rewards
  }
}

/// A reward model ready to score: weights (with a reward adapter attached, or merged), head, pad id.
struct RewardModel {
  var weights: DecoderWeights
  var head: ScoreHead
  var padID: Int

  /// `loaded` with the SEQ_CLS adapter at `adapter`, or `loaded` itself when it is a reward
  /// model directory (it holds `score.weight`).
  static func load(_ loaded: LoadedModel, adapter: String?, backend: Backend) throws -> RewardModel {
    let padID = TrainData.padID(objective: .reward, model: loaded)
    if let adapter {
      var isDir: ObjCBool = false
      guard FileManager.default.fileExists(atPath: adapter, isDirectory: &isDir), isDir.boolValue else {
        throw RecipeError("--adapter: no such directory \(adapter)")
      }
      let weights = try DecoderWeights(from: loaded.weights, shape: loaded.shape, backend: backend, trainable: .none)
      let a = try PEFTAdapterFiles.loadAdapter(URL(fileURLWithPath: adapter), into: weights)
      guard let values = a.scoreHead else {
        a.lora.detach()
        throw RecipeError("--adapter \(adapter) is a language-model adapter (task_type CAUSAL_LM) with no score head; "
          + "pass a reward adapter (train --objective reward)")
      }
      a.lora.training = false
      return RewardModel(weights: weights, head: try ScoreHead(values: values, backend: backend), padID: padID)
    }
    let source = loaded.weights
    guard source.tensorNames.contains(RewardModelKeys.scoreWeight) else {
      throw RecipeError("\(loaded.location.url.path) has no \(RewardModelKeys.scoreWeight): not a reward model; "
        + "pass its base with --adapter <reward adapter>, or a directory written by train --objective reward")
    }
    let shape = try source.shape(of: RewardModelKeys.scoreWeight)
    guard shape == [1, loaded.shape.hidden] else {
      throw RecipeError("\(RewardModelKeys.scoreWeight) has shape \(shape); a reward model has [1, \(loaded.shape.hidden)] "
        + "(one label)")
    }
    let weights = try DecoderWeights(from: WithoutLMHead(source, shape: loaded.shape), shape: loaded.shape,
                                   backend: backend, trainable: .none)
    return RewardModel(weights: weights, head: try ScoreHead(values: try source.floats(RewardModelKeys.scoreWeight),
                                                             backend: backend), padID: padID)
  }
}

/// A reward model directory has no LM head; an untied model's weights still need one to be
/// built, so it reads as zeros (scoring never uses it).
final class WithoutLMHead: WeightSource {
  let source: WeightSource
  let lmHeadShape: [Int]?

  init(_ source: WeightSource, shape: TransformerShape) {
    self.source = source
    let missing = !shape.tiedEmbeddings && !source.tensorNames.contains(ParameterNames.lmHead)
    lmHeadShape = missing ? [shape.vocab, shape.hidden] : nil
  }

  var tensorNames: [String] { (source.tensorNames + (lmHeadShape == nil ? [] : [ParameterNames.lmHead])).sorted() }
  var weightsPath: String { source.weightsPath }

  func shape(of name: String) throws -> [Int] {
    if name == ParameterNames.lmHead, let lmHeadShape { return lmHeadShape }
    return try source.shape(of: name)
  }

  func storedType(of name: String) throws -> String {
    if name == ParameterNames.lmHead, lmHeadShape != nil { return "F32" }
    return try source.storedType(of: name)
  }

  func floats(_ name: String) throws -> [Float] {
    if name == ParameterNames.lmHead, let lmHeadShape {
      return [Float](repeating: 0, count: lmHeadShape.reduce(1, *))
    }
    return try source.floats(name)
  }
}
