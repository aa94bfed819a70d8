import Foundation
import VKFCore
import VKFData
import VKFModel
import VKFPEFT
import VKFTokenizer
import VKFTrain

/// `train --objective classification | mlm`: fine-tune a BERT encoder with a classifier on
/// labelled sentences ({"text" | "sentence", "label"}), as transformers' run_glue does, and
/// write a `BertForSequenceClassification` directory (evaluations log accuracy and F1); or
/// with its masked-LM head on text ({"text"}), as run_mlm does, and write `BertForMaskedLM`.
struct ClassificationRun {
  var settings: TrainSettings
  var backendOptions: BackendOptions
  var resume: Bool
  var overwrite: Bool

  func run() throws {
    let s = settings
    guard let modelArg = s.model, let dataPath = s.data, let outputPath = s.outputDir else {
      throw RecipeError("model, data and output_dir are required")
    }
    let output = URL(fileURLWithPath: outputPath).standardizedFileURL
    let progress = ProgressLine()
    if resume { try ObjectiveRecord.check(s, against: output) }

    // Model files and data first: the cheap failures come before any compute.
    guard case .huggingFaceDirectory(let dir) = try ModelLocator.resolve(modelArg) else {
      throw RecipeError("--objective classification trains a BERT encoder from a Hugging Face directory "
        + "(config.json with model_type \"bert\", safetensors, tokenizer.json); \(modelArg) is not one")
    }
    let config = try BertConfig.load(from: dir)
    let tokenizerURL = dir.appendingPathComponent("tokenizer.json")
    guard FileManager.default.fileExists(atPath: tokenizerURL.path) else {
      throw RecipeError("\(dir.path) has no tokenizer.json; save the model's fast tokenizer beside it")
    }
    let tokenizer = try Tokenizer(contentsOf: tokenizerURL)
    let source = try SafetensorsCheckpoint.open(directory: dir)
    let maskedLM = s.objective == .mlm
    let data = maskedLM ? try Self.loadText(settings: s, config: config, tokenizer: tokenizer, trainFile: dataPath)
      : try Self.loadData(settings: s, config: config, tokenizer: tokenizer, trainFile: dataPath)
    let head: BertHead = maskedLM ? .maskedLM : .classifier(labels: data.labels.count)
    let backend = try backendOptions.makeBackend()
    progress.message("backend: \(backend.name)")
    progress.message("model: \(dir.path) (bert, \(config.layers) layers, hidden \(config.hiddenSize), "
      + "\(config.heads) heads, vocabulary \(config.vocabSize))")
    progress.message(data.summary)
    for w in data.warnings { progress.warning(w) }
    if config.hiddenDropout > 0 || config.attentionDropout > 0 {
      progress.message(String(format: "dropout: off (config.json asks %g hidden, %g attention); the encoder trains "
        + "deterministically, as in eval()", config.hiddenDropout, config.attentionDropout))
    }

    // Memory: weights, gradients and AdamW's two moments per parameter, plus the activations
    // of the longest micro-batch (the arena of that shape), checked against the budget.
    let parameters = try source.tensorNames.filter { !$0.hasSuffix("position_ids") }
      .reduce(0) { $0 + (try source.shape(of: $1)).reduce(1, *) }
    let activations = BertModel.activationBytes(config: config, head: head,
                                                batch: s.perDeviceTrainBatchSize, tokens: data.longestRow)
    let total = parameters * 4 * 4 + activations
    progress.message("estimated memory: \(MemoryEstimate.format(total)) (weights, gradients and AdamW state "
      + "\(MemoryEstimate.format(parameters * 16)), activations \(MemoryEstimate.format(activations)))")
    if let budget = s.memoryBudget ?? backend.memoryCapacity, total > budget {
      throw RecipeError("the run needs about \(MemoryEstimate.format(total)) but "
        + "\(s.memoryBudget == nil ? "the device has" : "--memory-budget is") \(MemoryEstimate.format(budget)); "
        + "lower --batch-size or --max-seq-length")
    }

    let full = s.method == .full
    let weights = try BertWeights(source: source, config: config, head: head, backend: backend, trainable: full,
                                  seed: UInt64(s.seed))
    if !weights.initialised.isEmpty {
      progress.message("initialised (not in the checkpoint): \(weights.initialised.joined(separator: ", "))")
    }
    if !full, weights.initialised.contains(where: { $0.contains("pooler") }) {
      throw RecipeError("\(dir.path) has no pooler (bert.pooler.dense): a PEFT adapter leaves the base model's "
        + "pooler as loaded, which would be random; train it with --method full")
    }
    let lora = full ? nil : try LoRAModel(weights: weights, config: Self.loraConfig(s), seed: UInt64(s.seed))
    let model = BertModel(weights: weights)
    let task: TrainingTask = maskedLM ? MaskedLMTask(fullFineTuning: model)
      : lora.map { ClassificationTask(model: model, lora: $0) } ?? ClassificationTask(fullFineTuning: model)
    let trainable = task.trainableTensors.reduce(0) { $0 + $1.count }
    let what = lora.map { l in "LoRA: r \(s.loraR), alpha \(s.loraAlpha), \(l.adapters.count) adapters on "
      + "\(l.config.resolvedTargetModules(among: weights.loraModules).joined(separator: ",")) and the classifier, "
      + "\(trainable) trainable parameters" } ?? "full fine-tuning: \(trainable) trainable parameters"
    progress.message(what + (maskedLM ? ", masked-LM head (decoder tied to the word embeddings)"
      : "; labels: \(data.labels.enumerated().map { "\($0.offset) \($0.element)" }.joined(separator: ", "))"))

    try TrainRun.transacted(output, overwrite: overwrite, progress: progress) {
      try train(task: task, weights: weights, lora: lora, data: data, tokenizerSource: dir, output: output,
                progress: progress)
    }
  }

  private func train(task: TrainingTask, weights: BertWeights, lora: LoRAModel?, data: EncoderTrainData, tokenizerSource: URL,
                     output: URL, progress: ProgressLine) throws {
    let s = settings
    if !resume { try ObjectiveRecord.write(s, into: output) }
    let labels = data.labels
    let trainer = try Trainer(task: task, config: s.trainingConfig, train: data.train, validation: data.validation,
                              outputDirectory: output, padID: weights.config.padTokenId)
    let objective = s.objective
    trainer.onEvent = { event in TrainRun.report(event, progress, objective: objective) }
    trainer.shouldStop = { Interrupts.requested }
    if !data.validation.isEmpty {
      trainer.saveBest = { _, _ in
        try self.write(weights: weights, lora: lora, labels: labels, tokenizerSource: tokenizerSource,
                       into: output.appendingPathComponent(OutputTransaction.bestName))
      }
    }
    if resume {
      let from = try trainer.resume(from: output)
      progress.message("resumed from \(from.lastPathComponent) at step \(trainer.step)/\(trainer.totalSteps)")
    }
    let origin = s.maxSteps > 0 ? "max_steps \(s.maxSteps)"
      : "\(StepInterval.formatted(s.numTrainEpochs)) epoch\(s.numTrainEpochs == 1 ? "" : "s"), max_steps unset"
    progress.message("training (\(s.objective.rawValue)): \(trainer.totalSteps) optimizer step\(trainer.totalSteps == 1 ? "" : "s") "
      + "(\(origin)), \(s.perDeviceTrainBatchSize) × \(s.gradientAccumulationSteps) rows per step, lr \(s.lrSchedulerType) "
      + ProgressLine.scientific(s.learningRate))
    progress.message(TrainRun.scheduleLine(s, totalSteps: trainer.totalSteps, validation: data.validation.count))
    let summary = try trainer.train()
    progress.finishLine()
    if CheckpointLayout.checkpoints(in: output).first?.step != trainer.step { try trainer.saveCheckpoint() }
    try write(weights: weights, lora: lora, labels: labels, tokenizerSource: tokenizerSource, into: output)
    var line = String(format: "done: %d steps, final loss %.4f", summary.steps, summary.finalLoss)
    if let best = summary.bestEvaluation { line += String(format: ", best eval loss %.4f at step %d", best.loss, best.step) }
    if summary.stoppedEarly { line += " (stopped early; the best weights were written)" }
    progress.message(line)
    progress.message("wrote \(lora != nil ? "a PEFT SEQ_CLS adapter" : weights.head == .maskedLM ? "BertForMaskedLM" : "BertForSequenceClassification") to \(output.path)")
  }

  /// The model directory (full fine-tuning) or the PEFT adapter with the classifier in
  /// modules_to_save (LoRA), into `dir` beside what is there.
  private func write(weights: BertWeights, lora: LoRAModel?, labels: [String], tokenizerSource: URL, into dir: URL) throws {
    try OutputWriter.staged(into: dir) { staging in
      if let lora, let classifier = weights.classifier, let bias = classifier.bias, let w = classifier.denseWeight {
        let recipe = (try? settings.rendered(as: "yaml")).map { "```yaml\n\($0)\n```" }
        try PEFTAdapterFiles.save(lora, baseModel: settings.model ?? "", to: staging, readme: recipe,
                                  headTensors: [("base_model.model.classifier.weight", w), ("base_model.model.classifier.bias", bias)])
      } else {
        try BertModelWriter.write(weights: weights, labels: labels, tokenizerSource: tokenizerSource, to: staging)
      }
    }
  }

  /// The LoRA settings on BERT: the recipe's targets, or PEFT's default for bert (query,
  /// value) when the recipe kept the decoders' default.
  static func loraConfig(_ s: TrainSettings) -> LoRAConfig {
    var c = s.loraConfig
    if s.loraTargetModules == RecipeKeys.allLinear { c.targetModules = ["query", "value"] }
    return c
  }

  /// Labelled sentences of the training file and the validation set (eval file or held out).
  static func loadData(settings s: TrainSettings, config: BertConfig, tokenizer: Tokenizer,
                       trainFile: String) throws -> EncoderTrainData {
    let maxLength = min(s.maxSeqLength, config.maxPositions)
    let encode = { (text: String) in tokenizer.encode(text, addSpecialTokens: true) }
    let trainURL = URL(fileURLWithPath: trainFile)
    let records = try DatasetLoader.load(trainURL)
    let labels = try ClassificationLabels.infer(records.records, file: records.file, modelNames: config.labels)
    let train = try ClassificationDataset.make(records.records, file: records.file, labels: labels,
                                               maxLength: maxLength, encode: encode)
    var truncated = train.truncated
    let (trainExamples, validation, origin) = try Self.validationSplit(s, train.examples) { url in
      let e = try ClassificationDataset.load(url, labels: labels, maxLength: maxLength, encode: encode)
      truncated += e.truncated
      return e.examples
    }
    var counts = [Int](repeating: 0, count: labels.names.count)
    for e in trainExamples { counts[e.targets[0]] += 1 }
    let summary = "data: \(trainExamples.count) training sentences ("
      + zip(labels.names, counts).map { "\($1) \($0)" }.joined(separator: ", ")
      + "), \(validation.count) validation\(origin)"
    let warnings = truncated > 0
      ? ["\(truncated) sentences were cut to \(maxLength) tokens (max_seq_length / max_position_embeddings)"] : []
    let longest = (trainExamples + validation).map(\.inputIds.count).max() ?? 2
    return EncoderTrainData(train: trainExamples, validation: validation, labels: labels.names,
                            longestRow: longest, summary: summary, warnings: warnings)
  }

  /// Masked text of the training file and the validation set (eval file, masked with the
  /// next seed, or held out).
  static func loadText(settings s: TrainSettings, config: BertConfig, tokenizer: Tokenizer,
                       trainFile: String) throws -> EncoderTrainData {
    let maxLength = min(s.maxSeqLength, config.maxPositions)
    func id(_ token: String) throws -> Int {
      guard let i = tokenizer.tokenID(for: token) else {
        throw RecipeError("the tokenizer has no \(token) token; --objective mlm needs BERT's [CLS], [SEP] and [MASK]")
      }
      return i
    }
    let special = MaskedLMDataset.SpecialTokens(cls: try id("[CLS]"), sep: try id("[SEP]"), mask: try id("[MASK]"),
                                                all: Set(tokenizer.addedTokens.filter(\.special).map(\.id)))
    func masked(_ url: URL, seed: UInt64) throws -> MaskedLMDataset {
      let records = try DatasetLoader.load(url)
      return try MaskedLMDataset.make(records.records, file: records.file, maxLength: maxLength, special: special,
                                      vocabulary: config.vocabSize, probability: s.mlmProbability, seed: seed,
                                      encode: { tokenizer.encode($0, addSpecialTokens: false) })
    }
    let train = try masked(URL(fileURLWithPath: trainFile), seed: UInt64(s.seed))
    let (trainExamples, validation, origin) = try Self.validationSplit(s, train.examples) {
      try masked($0, seed: UInt64(s.seed) &+ 1).examples
    }
    guard !trainExamples.isEmpty else { throw RecipeError("\(trainFile): no text to train on") }
    let summary = "data: \(trainExamples.count) training pieces of at most \(maxLength) tokens, "
      + "\(train.maskedTokens) masked tokens (mlm_probability \(s.mlmProbability), drawn once from the seed), "
      + "\(validation.count) validation\(origin)"
    let warnings = train.split > 0 ? ["\(train.split) records were longer than \(maxLength) tokens and were split into pieces"] : []
    let longest = (trainExamples + validation).map(\.inputIds.count).max() ?? 3
    return EncoderTrainData(train: trainExamples, validation: validation, labels: [], longestRow: longest,
                            summary: summary, warnings: warnings)
  }
}

extension ClassificationRun {
  /// The validation set: `eval_data` read by `load`, else `val_set_size` held out of `train`;
  /// cut to `max_eval_samples`. Returns the training examples left, the validation ones and
  /// where they came from (for the data line).
  static func validationSplit(_ s: TrainSettings, _ train: [TokenizedExample],
                              load: (URL) throws -> [TokenizedExample])
    throws -> (train: [TokenizedExample], validation: [TokenizedExample], origin: String) {
    var train = train, validation: [TokenizedExample] = [], origin = ""
    if let evalFile = s.evalData {
      let url = URL(fileURLWithPath: evalFile)
      validation = try load(url)
      origin = " from \(url.lastPathComponent)"
    } else if s.valSetSize > 0 {
      (train, validation) = try Batching.split(train, validationFraction: s.valSetSize, seed: UInt64(s.seed))
      origin = String(format: " (%.0f%% held out)", s.valSetSize * 100)
    }
    if s.maxEvalSamples > 0, validation.count > s.maxEvalSamples {
      validation = Array(validation.prefix(s.maxEvalSamples))
      origin += ", first \(s.maxEvalSamples) used"
    }
    return (train, validation, origin)
  }
}

/// The tokenized data of an encoder run.
struct EncoderTrainData {
  var train: [TokenizedExample]
  var validation: [TokenizedExample]
  /// Label names by id (classification); empty for mlm.
  var labels: [String]
  var longestRow: Int
  var summary: String
  var warnings: [String]
}
