import Foundation
import VKFData
import VKFModel

/// Preference data for `--objective dpo|reward`: pairs tokenized with TRL's truncation rule,
/// laid out as the trainer's examples [chosen₀, rejected₀, chosen₁, …].
extension TrainData {
  /// Loads `trainFile` (and `eval_data`, or holds out `val_set_size` of the pairs with `seed`)
  /// as preference pairs; the summary reports truncated and skipped pairs.
  static func loadPairs(settings s: TrainSettings, model: LoadedModel, trainFile: String) throws -> TrainData {
    let tokenizer = try preferenceTokenizer(settings: s, model: model)
    let train = try loadPairFile(trainFile, tokenizer: tokenizer)
    var trainPairs = train.pairs, validation: [PreferencePair] = []
    var source = "", validationNote = ""
    var evaluation: PreferenceDataset?
    if let evalFile = s.evalData {
      let v = try loadPairFile(evalFile, tokenizer: tokenizer)
      evaluation = v
      validation = v.pairs
      source = " from \(URL(fileURLWithPath: evalFile).lastPathComponent)"
      validationNote = skippedNote(v.stats)
    } else if s.valSetSize > 0 {
      (trainPairs, validation) = try Batching.split(trainPairs, validationFraction: s.valSetSize,
                                                    seed: UInt64(s.seed))
      source = String(format: " (%.0f%% held out)", s.valSetSize * 100)
    }
    if s.maxEvalSamples > 0, validation.count > s.maxEvalSamples {
      validation = Array(validation.prefix(s.maxEvalSamples))
      source += ", first \(s.maxEvalSamples) used"
    }
    var summary = "data: \(trainPairs.count) training pairs, \(validation.count) validation\(source)"
    summary += "; max_length \(s.maxSeqLength), max_prompt_length \(s.promptLimit): "
      + "\(train.stats.truncated) truncated" + skippedNote(train.stats)
    if !validationNote.isEmpty { summary += "; validation:" + validationNote.dropFirst() }
    if train.skippedRecords > 0 { summary += ", \(train.skippedRecords) bad records skipped" }
    let longest = trainPairs.map { $0.prompt.count + max($0.chosen.count, $0.rejected.count) }.max() ?? 1
    let limit = "max_length \(s.maxSeqLength)"
    let advice = "raise --max-seq-length (now \(s.maxSeqLength)) or --max-prompt-length (now \(s.promptLimit))"
    let recordCount = { (d: PreferenceDataset) in d.pairs.count + d.stats.identical + d.stats.empty }
    let warnings = [truncationWarning("training pairs", count: train.stats.truncated, of: recordCount(train), limit: limit,
                                      dropped: train.stats.droppedTokens, longest: train.stats.longestCut, advice: advice),
                    evaluation.flatMap { e in
                      truncationWarning("validation pairs", count: e.stats.truncated, of: recordCount(e), limit: limit,
                                        dropped: e.stats.droppedTokens, longest: e.stats.longestCut, advice: advice) }]
    return TrainData(train: examples(trainPairs), validation: examples(validation),
                     padID: padID(objective: s.objective, model: model), longestRow: max(longest, 1),
                     summary: summary, warnings: warnings.compactMap { $0 })
  }

  /// ", 2 skipped (1 identical, 1 empty after truncation)" or "".
  static func skippedNote(_ stats: PreferenceStats) -> String {
    let skipped = stats.identical + stats.empty
    guard skipped > 0 else { return ", none skipped" }
    return ", \(skipped) skipped (\(stats.identical) identical, \(stats.empty) empty after truncation)"
  }

  /// The pairs as [chosen, rejected, …] causal-LM examples (targets on the answers only).
  static func examples(_ pairs: [PreferencePair]) -> [TokenizedExample] {
    pairs.flatMap { [$0.example(chosen: true), $0.example(chosen: false)] }
  }

  /// The tokenizer of preference data: the model's chat template (or `chat_template`) with
  /// `max_length` / `max_prompt_length`.
  static func preferenceTokenizer(settings s: TrainSettings, model: LoadedModel) throws -> PreferenceTokenizer {
    do {
      return try PreferenceTokenizer(tokenizer: model.tokenizer, template: conversationTemplate(settings: s, model: model),
                                     limits: s.preferenceLimits)
    } catch let e as DatasetError {
      throw RecipeError("\(e)")
    }
  }

  /// One preference file, its errors as one line.
  static func loadPairFile(_ path: String, tokenizer: PreferenceTokenizer) throws -> PreferenceDataset {
    try PreferenceDataset.load(URL(fileURLWithPath: path), tokenizer: tokenizer)
  }

  /// The id that pads rows. Reward models score the last token that is not this id, as
  /// transformers' `LlamaForSequenceClassification` does with `pad_token_id`, so it is the
  /// model's `pad_token_id` when it has one (saved with the model), else the EOS; DPO ignores
  /// padded targets, so any id works there (the EOS, as SFT).
  static func padID(objective: TrainObjective, model: LoadedModel) -> Int {
    let eos = model.eosTokenIDs.first ?? 0
    guard objective == .reward else { return eos }
    return model.config?.padTokenId ?? eos
  }
}

extension TrainData {
  /// KTO's examples: unpaired `{prompt, completion, label}` records or preference pairs split
  /// into a desirable and an undesirable answer, truncated as pairs are.
  static func loadUnpaired(settings s: TrainSettings, model: LoadedModel, trainFile: String) throws -> TrainData {
    let tokenizer = try preferenceTokenizer(settings: s, model: model)
    let train = try UnpairedDataset.load(URL(fileURLWithPath: trainFile), tokenizer: tokenizer)
    var examples = train.examples, validation: [UnpairedExample] = []
    if let evalFile = s.evalData {
      validation = try UnpairedDataset.load(URL(fileURLWithPath: evalFile), tokenizer: tokenizer).examples
    } else if s.valSetSize > 0 {
      (examples, validation) = try Batching.split(examples, validationFraction: s.valSetSize, seed: UInt64(s.seed))
    }
    if s.maxEvalSamples > 0, validation.count > s.maxEvalSamples { validation = Array(validation.prefix(s.maxEvalSamples)) }
    let desirable = examples.filter(\.desirable).count
    let summary = "data: \(examples.count) training examples (\(desirable) desirable, \(examples.count - desirable) "
      + "undesirable), \(validation.count) validation; max_length \(s.maxSeqLength), max_prompt_length "
      + "\(s.promptLimit): \(train.stats.truncated) truncated, \(train.stats.empty) empty skipped"
    var data = TrainData(train: examples.map(\.example), validation: validation.map(\.example),
                         padID: padID(objective: s.objective, model: model),
                         longestRow: max(1, examples.map { $0.prompt.count + $0.answer.count }.max() ?? 1),
                         summary: summary)
    data.unpaired = examples + validation
    return data
  }
}
