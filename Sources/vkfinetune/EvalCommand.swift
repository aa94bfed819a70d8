import ArgumentParser
import Foundation
import VKFCore
import VKFData
import VKFModel
import VKFPEFT
import VKFTokenizer
import VKFTrain

/// `vkfinetune eval`: mean loss and perplexity of a model (optionally with a PEFT adapter) on
/// a data file, masked exactly as `train` masks it.
struct EvalCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "eval",
    abstract: "Loss and perplexity of a model (+ adapter) on a data file.",
    discussion: """
      The loss is the mean next-token cross-entropy over every trained target (assistant \
      tokens, or all with --train-on-prompt), the same number `train` logs as eval_loss; \
      perplexity is exp(loss). A BERT classifier (a BertForSequenceClassification directory, \
      e.g. what `train --objective classification --method full` writes) is evaluated on \
      {"text", "label"} records instead: loss, accuracy and F1.
      """)

  @OptionGroup var backendOptions: BackendOptions

  @Option(help: "Model: a Hugging Face directory, a .gguf file, or org/name in the Hugging Face cache.")
  var model: String

  @Option(help: "PEFT adapter directory (adapter_config.json + adapter_model.safetensors) to apply.")
  var adapter: String?

  @Option(help: "Data file (.json / .jsonl), any format `train` reads.")
  var data: String

  @Option(help: "Longest example in tokens (longer ones are cut).")
  var maxSeqLength = TrainSettings().maxSeqLength

  @Option(help: "Rows per forward pass.")
  var batchSize = TrainSettings().perDeviceTrainBatchSize

  @Option(help: "Record format: \(DatasetFormat.allCases.map(\.rawValue).joined(separator: ", ")).")
  var datasetFormat = "auto"

  @Option(help: "Chat template: a built-in name (default: the model's own).")
  var chatTemplate: String?

  @Flag(help: "Count prompt tokens too.")
  var trainOnPrompt = false

  @Option(help: "Also write the result as JSON to this file.")
  var json: String?

  func run() throws {
    var s = TrainSettings()
    s.maxSeqLength = maxSeqLength
    s.perDeviceTrainBatchSize = batchSize
    s.trainOnPrompt = trainOnPrompt
    s.chatTemplate = chatTemplate
    s.datasetFormat = try RecipeKeys.format(RecipeEntry(key: "dataset_format", value: .scalar(datasetFormat),
                                                         origin: "--dataset-format"))
    guard maxSeqLength > 1 else { throw RecipeError("--max-seq-length must be at least 2, got \(maxSeqLength)") }
    guard batchSize > 0 else { throw RecipeError("--batch-size must be a positive integer, got \(batchSize)") }
    if let chatTemplate, !ChatTemplate.builtinNames.contains(chatTemplate.lowercased()) {
      throw RecipeError("--chat-template must be one of \(ChatTemplate.builtinNames.joined(separator: ", "))")
    }
    try TrainSettings.checkDataFile(data, key: "--data")
    if let json { try OutputChecks.writableParent(of: json, flag: "--json") }

    if case .huggingFaceDirectory(let dir) = try ModelLocator.resolve(model), BertConfig.isBert(dir) {
      return try evaluateClassifier(dir)
    }
    let loaded = try ModelLoader.load(model)
    let tokenizer = try TrainData.sftTokenizer(settings: s, model: loaded)
    let examples = try SFTDataset.load(URL(fileURLWithPath: data), tokenizer: tokenizer).examples
    let backend = try backendOptions.makeBackend()
    let (weights, lora) = try ModelWithAdapter.load(loaded, adapter: adapter, backend: backend)
    lora?.training = false
    let task = SFTTask(model: try DecoderModel(weights: weights), trainables: [], zero: {})
    var sum = 0.0, tokens = 0
    // The SFT tokenizer already cut every example to max_seq_length, as for training.
    for batch in Batching.batches(examples, batchSize: batchSize, padID: loaded.eosTokenIDs.first ?? 0) {
      let r = try task.evaluate(batch)
      sum += r.lossSum; tokens += r.tokens
    }
    guard tokens > 0 else {
      throw RecipeError("\(data): no trained target in \(examples.count) example(s) (check the format, masking and --max-seq-length)")
    }
    let loss = sum / Double(tokens)
    print(String(format: "eval loss %.4f | ppl %.2f | %d tokens in %d examples", loss, exp(loss), tokens, examples.count))
    if let json {
      let report = EvalReport(model: model, adapter: adapter, data: data, loss: loss, perplexity: exp(loss),
                              tokens: tokens, examples: examples.count)
      try AtomicFile.write(try JSONEncoder.pretty.encode(report), to: json)
    }
  }
}

extension EvalCommand {
  /// Loss, accuracy and F1 of a BERT classifier directory on labelled records.
  func evaluateClassifier(_ dir: URL) throws {
    if adapter != nil {
      throw RecipeError("--adapter with a BERT model is not supported yet: evaluate a full fine-tune's directory "
        + "(tools/check_bert_classifier.py evaluates a SEQ_CLS adapter with PEFT)")
    }
    let config = try BertConfig.load(from: dir)
    guard !config.labels.isEmpty else {
      throw RecipeError("\(dir.path)/config.json has no id2label: it is not a sequence classifier "
        + "(train one with --objective classification)")
    }
    let tokenizerURL = dir.appendingPathComponent("tokenizer.json")
    guard FileManager.default.fileExists(atPath: tokenizerURL.path) else {
      throw RecipeError("\(dir.path) has no tokenizer.json; save the model's fast tokenizer beside it")
    }
    let tokenizer = try Tokenizer(contentsOf: tokenizerURL)
    let labels = ClassificationLabels(names: config.labels)
    let examples = try ClassificationDataset.load(URL(fileURLWithPath: data), labels: labels,
                                                  maxLength: min(maxSeqLength, config.maxPositions),
                                                  encode: { tokenizer.encode($0, addSpecialTokens: true) }).examples
    let backend = try backendOptions.makeBackend()
    let weights = try BertWeights(source: try SafetensorsCheckpoint.open(directory: dir), config: config,
                                  numLabels: labels.names.count, backend: backend, trainable: false, seed: 0)
    if !weights.initialised.isEmpty {
      throw RecipeError("\(dir.path) lacks \(weights.initialised.joined(separator: ", ")): not a trained classifier")
    }
    let task = ClassificationTask(model: BertModel(weights: weights), trainables: [], zero: {})
    var sum = 0.0, count = 0
    for batch in Batching.batches(examples, batchSize: batchSize, padID: config.padTokenId) {
      let r = try task.evaluate(batch)
      sum += r.lossSum; count += r.tokens
    }
    guard count > 0 else { throw RecipeError("\(data): no labelled sentence") }
    let m = task.takeMetrics(training: false), loss = sum / Double(count)
    print(String(format: "eval loss %.4f | accuracy %.4f | f1 %.4f | %d sentences", loss, m["accuracy"] ?? 0,
                 m["f1"] ?? 0, count))
    if let json {
      let report = EvalReport(model: model, adapter: nil, data: data, loss: loss, perplexity: exp(loss), tokens: count,
                              examples: examples.count, accuracy: m["accuracy"], f1: m["f1"])
      try AtomicFile.write(try JSONEncoder.pretty.encode(report), to: json)
    }
  }
}

/// `eval --json`.
struct EvalReport: Codable {
  var model: String
  var adapter: String?
  var data: String
  var loss: Double
  var perplexity: Double
  var tokens: Int
  var examples: Int
  /// Classifiers: accuracy and F1 over the sentences (`tokens` counts them).
  var accuracy: Double?
  var f1: Double?
}

/// A base model's frozen weights with an optional PEFT adapter attached.
enum ModelWithAdapter {
  static func load(_ loaded: LoadedModel, adapter: String?, backend: Backend) throws -> (DecoderWeights, LoRAModel?) {
    let weights = try DecoderWeights(from: loaded.weights, shape: loaded.shape, backend: backend, trainable: .none)
    guard let adapter else { return (weights, nil) }
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: adapter, isDirectory: &isDir), isDir.boolValue else {
      throw RecipeError("--adapter: no such directory \(adapter)")
    }
    return (weights, try PEFTAdapterFiles.load(URL(fileURLWithPath: adapter), into: weights))
  }
}

/// Path checks done before minutes of work, not after.
enum OutputChecks {
  static func writableParent(of path: String, flag: String) throws {
    let dir = URL(fileURLWithPath: path).standardizedFileURL.deletingLastPathComponent().path
    guard access(dir, W_OK) == 0 else {
      throw RecipeError("\(flag): cannot write into \(dir) (\(String(cString: strerror(errno))))")
    }
  }
}
