import Foundation
import VKFData
import VKFModel
import VKFTokenizer

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

  /// Loads `trainFile` (and `eval_data`, or holds out `val_set_size`) with the model's chat
  /// template (or `chat_template`), masking prompts unless `train_on_prompt`.
  static func load(settings s: TrainSettings, model: LoadedModel, trainFile: String) throws -> TrainData {
    let tokenizer = try sftTokenizer(settings: s, model: model)
    let train = try SFTDataset.load(URL(fileURLWithPath: trainFile), tokenizer: tokenizer)
    var trainExamples = train.examples, validation: [TokenizedExample] = []
    var source = ""
    if let evalFile = s.evalData {
      validation = try SFTDataset.load(URL(fileURLWithPath: evalFile), tokenizer: tokenizer).examples
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
    return TrainData(train: trainExamples, validation: validation, padID: model.eosTokenIDs.first ?? 0,
                     longestRow: s.packing ? s.maxSeqLength : max(longest, 1), summary: summary)
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
