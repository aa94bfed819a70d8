import Foundation
import VKFData
import VKFModel
import VKFTokenizer
import VKFTrain

/// The tokenized training and validation examples of a run, with what the log should say.
struct TrainData {
  var train: [TokenizedExample]
  var validation: [TokenizedExample]
  /// Padding id (its targets are ignored, so any valid id works: the EOS).
  var padID: Int
  /// The longest row a micro-batch can have, for the memory estimate.
  var longestRow: Int
  /// "data: 120 examples (…)" for the log.
  var summary: String
  /// What the user should know about the data (cut records), one line each.
  var warnings: [String] = []
  /// KTO: every example with its label (training and validation).
  var unpaired: [UnpairedExample] = []
  /// GRPO: every prompt's ids with its text and fields (training and validation).
  var prompts: [(ids: [Int], prompt: GRPOPrompt)] = []

  /// The warning for `count` of `total` records cut to `limit` tokens (nil when none was):
  /// how many, how many tokens went, the longest record's length.
  static func truncationWarning(_ what: String, count: Int, of total: Int, limit: String, dropped: Int,
                                longest: Int, advice: String) -> String? {
    guard count > 0 else { return nil }
    let share = String(format: "%.1f%%", 100 * Double(count) / Double(max(total, 1)))
    return "\(count) of \(total) \(what) (\(share)) are longer than \(limit) and were cut: \(dropped) tokens dropped, "
      + "the longest had \(longest); \(advice)"
  }

  /// Loads `trainFile` (and `eval_data`, or holds out `val_set_size`) with the model's chat
  /// template (or `chat_template`), masking prompts unless `train_on_prompt`.
  static func load(settings s: TrainSettings, model: LoadedModel, trainFile: String) throws -> TrainData {
    let tokenizer = try sftTokenizer(settings: s, model: model)
    let train = try SFTDataset.load(URL(fileURLWithPath: trainFile), tokenizer: tokenizer)
    var trainExamples = train.examples, validation: [TokenizedExample] = []
    var source = ""
    var evaluation: SFTDataset?
    if let evalFile = s.evalData {
      let loaded = try SFTDataset.load(URL(fileURLWithPath: evalFile), tokenizer: tokenizer)
      evaluation = loaded
      validation = loaded.examples
      source = " from \(URL(fileURLWithPath: evalFile).lastPathComponent)"
    } else if s.valSetSize > 0 {
      (trainExamples, validation) = try Batching.split(trainExamples, validationFraction: s.valSetSize,
                                                       seed: UInt64(s.seed))
      source = String(format: " (%.0f%% held out)", s.valSetSize * 100)
    }
    if s.maxEvalSamples > 0, validation.count > s.maxEvalSamples {
      validation = Array(validation.prefix(s.maxEvalSamples))
      source += ", first \(s.maxEvalSamples) used"
    }
    let longest = min(s.maxSeqLength, trainExamples.map(\.inputIds.count).max() ?? 0)
    var summary = "data: \(trainExamples.count) training examples, \(validation.count) validation\(source)"
    if train.stats.truncated > 0 { summary += ", \(train.stats.truncated) cut to \(s.maxSeqLength) tokens" }
    if train.skippedRecords > 0 { summary += ", \(train.skippedRecords) bad records skipped" }
    let advice = "raise --max-seq-length (now \(s.maxSeqLength)) or split those records"
    let warnings = [truncationWarning("training records", count: train.stats.truncated, of: train.examples.count,
                                      limit: "max_seq_length \(s.maxSeqLength)", dropped: train.stats.droppedTokens,
                                      longest: train.stats.longestCut, advice: advice),
                    evaluation.flatMap { e in
                      truncationWarning("validation records", count: e.stats.truncated, of: e.examples.count,
                                        limit: "max_seq_length \(s.maxSeqLength)", dropped: e.stats.droppedTokens,
                                        longest: e.stats.longestCut, advice: advice) }].compactMap { $0 }
    return TrainData(train: trainExamples, validation: validation, padID: model.eosTokenIDs.first ?? 0,
                     longestRow: s.packing ? s.maxSeqLength : max(longest, 1), summary: summary, warnings: warnings)
  }

  /// The tokenizer of the SFT pipeline: the model's tokenizer and chat template (or the one
  /// named), the plain alpaca prompt when the model has none.
  static func sftTokenizer(settings s: TrainSettings, model: LoadedModel) throws -> SFTTokenizer {
    try SFTTokenizer(tokenizer: model.tokenizer, template: conversationTemplate(settings: s, model: model),
                     config: s.dataConfig)
  }

  /// The model's chat template (or the one named in `chat_template`), the plain alpaca
  /// prompt when the model has none.
  static func conversationTemplate(settings s: TrainSettings, model: LoadedModel) throws -> any ConversationTemplate {
    let tok = model.tokenizer
    let bos = model.bosTokenID.flatMap { tok.token(for: $0) } ?? ""
    let eos = model.eosTokenIDs.first.flatMap { tok.token(for: $0) } ?? ""
    let template: any ConversationTemplate
    if let name = s.chatTemplate {
      template = HFChatTemplate(template: try ChatTemplate.builtin(name), bosToken: bos, eosToken: eos)
    } else if let own = model.chatTemplate {
      template = HFChatTemplate(template: own, bosToken: bos, eosToken: eos)
    } else {
      print("note: the model has no chat template; using the alpaca prompt (set chat_template to choose one)")
      template = AlpacaPromptTemplate()
    }
    return template
  }
}
