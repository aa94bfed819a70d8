import ArgumentParser
import Foundation
import VKFCore
import VKFData
import VKFModel
import VKFPEFT
import VKFTrain

/// `vkfinetune quantize`: post-training int8 quantisation of a model's projections, written
/// where vLLM, transformers and llama.cpp read it, with the held-out loss before and after.
struct QuantizeCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "quantize",
    abstract: "Post-training int8 quantisation (compressed-tensors for vLLM / transformers, or GGUF q8_0).",
    discussion: """
      Every projection of every layer (q, k, v, o, gate, up, down) becomes int8 weights with f32 \
      scales; the embedding, norms and LM head stay f32. --format compressed-tensors writes a \
      Hugging Face directory in compressed-tensors' pack-quantized format (what llm-compressor \
      writes; vLLM serves the channel and group strategies, transformers loads all), with its \
      min-max quantiser's exact arithmetic: symmetric scale = max|w| / 127.5, asymmetric scale = \
      (max − min) / 255 with an int8 zero point, per tensor, per output channel or per group of \
      --group-size columns. vkfinetune loads such a directory with int8 bases (eval, generate, \
      LoRA training on top). --format gguf writes llama.cpp's q8_0 (symmetric blocks of 32, the \
      same file as `export --format gguf --outtype q8_0`). With --eval-data the held-out loss of \
      the model before and of the written file after are printed. An --adapter is merged first.
      """)

  @OptionGroup var backendOptions: BackendOptions

  @Option(help: "Model: a Hugging Face directory, a .gguf file, or org/name in the Hugging Face cache.")
  var model: String
  @Option(help: "PEFT LoRA adapter directory to merge before quantising.")
  var adapter: String?
  @Option(help: "Output: a directory (compressed-tensors) or a .gguf file (gguf).")
  var output: String
  @Option(help: "compressed-tensors (default) or gguf (q8_0).")
  var format = "compressed-tensors"
  @Option(help: "symmetric (default; zero point 0) or asymmetric (an int8 zero point per scale).")
  var scheme = "symmetric"
  @Option(help: "Scale granularity: channel (default, one per output row), group (--group-size columns) or tensor.")
  var strategy = "channel"
  @Option(help: "Columns per scale for --strategy group (default 128, compressed-tensors' W8A16 preset).")
  var groupSize = 128
  @Option(help: "Held-out data (any format `train` reads): loss before and after.")
  var evalData: String?
  @Option(help: "Longest held-out example in tokens.")
  var maxSeqLength = 512
  @Option(help: "Rows per forward pass of the held-out evaluation.")
  var batchSize = 4
  @Option(help: "Also write the report as JSON to this file.")
  var json: String?
  @Flag(help: "Replace an existing --output.")
  var overwrite = false

  func resolvedScheme() throws -> CompressedTensors.Scheme {
    guard ["symmetric", "asymmetric"].contains(scheme) else {
      throw RecipeError("--scheme must be symmetric or asymmetric, got \(scheme)")
    }
    let s: CompressedTensors.Strategy
    switch strategy {
    case "channel": s = .channel
    case "tensor": s = .tensor
    case "group":
      guard groupSize > 0 else { throw RecipeError("--group-size must be a positive integer, got \(groupSize)") }
      s = .group(groupSize)
    default: throw RecipeError("--strategy must be channel, group or tensor, got \(strategy)")
    }
    return .init(symmetric: scheme == "symmetric", strategy: s)
  }

  func run() throws {
    let scheme = try resolvedScheme()
    guard ["compressed-tensors", "gguf"].contains(format) else {
      throw RecipeError("--format must be compressed-tensors or gguf, got \(format)")
    }
    if format == "gguf", scheme != .init(symmetric: true, strategy: .channel) || strategy != "channel" {
      throw RecipeError("--format gguf writes llama.cpp's q8_0 (symmetric blocks of 32); leave --scheme and --strategy at their defaults")
    }
    guard maxSeqLength > 1, batchSize > 0 else { throw RecipeError("--max-seq-length must be ≥ 2 and --batch-size ≥ 1") }
    let dest = URL(fileURLWithPath: output).standardizedFileURL
    if FileManager.default.fileExists(atPath: dest.path), !overwrite {
      throw RecipeError("\(dest.path) exists; pass --overwrite to replace it")
    }
    try OutputChecks.writableParent(of: dest.path, flag: "--output")
    if let evalData { try TrainSettings.checkDataFile(evalData, key: "--eval-data") }
    if let json { try OutputChecks.writableParent(of: json, flag: "--json") }
    if let adapter { try ExportCommand.checkDirectory(adapter) }

    let loaded = try ModelLoader.load(model)
    guard !(loaded.weights is CompressedTensorsSource) else {
      throw RecipeError("\(model) is already an int8 (compressed-tensors) checkpoint")
    }
    if case .group(let g) = scheme.strategy {
      // The projections' row lengths: hidden (q, k, v, gate, up), heads·head_dim (o), intermediate (down).
      let sh = loaded.shape
      for (cols, what) in [(sh.hidden, "hidden_size"), (sh.heads * sh.headDim, "heads × head_dim"),
                           (sh.intermediate, "intermediate_size")] where cols % g != 0 {
        let divisors = [32, 64, 128, 256].filter { sh.hidden % $0 == 0 && sh.intermediate % $0 == 0
          && (sh.heads * sh.headDim) % $0 == 0 }.map(String.init).joined(separator: ", ")
        throw RecipeError("--group-size \(g) does not divide the model's \(what) \(cols)"
          + (divisors.isEmpty ? "" : "; \(divisors) would"))
      }
    }
    let backend = try backendOptions.makeBackend()
    let weights = try DecoderWeights(from: loaded.weights, shape: loaded.shape, backend: backend, trainable: .none)
    if let adapter {
      let a = try PEFTAdapterFiles.loadAdapter(URL(fileURLWithPath: adapter), into: weights)
      guard a.scoreHead == nil else { throw RecipeError("\(adapter) is a reward-model adapter; quantise a causal LM") }
      try Merge.merge(a.lora)
    }
    var s = TrainSettings()
    s.maxSeqLength = maxSeqLength
    let examples = try evalData.map { path in
      try SFTDataset.load(URL(fileURLWithPath: path), tokenizer: try TrainData.sftTokenizer(settings: s, model: loaded)).examples
    }
    let pad = loaded.eosTokenIDs.first ?? 0
    let before = try examples.map { try Self.loss(weights, $0, batchSize: batchSize, pad: pad, data: evalData ?? "") }

    let start = Date()
    var report = Int8ModelWriter.Report()
    if format == "gguf" {
      let source = try (loaded.weights as? GGUFWeightSource).map { $0.file }
      let name = loaded.location.url.standardizedFileURL.deletingPathExtension().lastPathComponent
      if let source {
        try GGUFModelExport.write(weights: weights, source: source, name: name, outtype: .q8_0, to: dest.path)
      } else {
        let arch = try ExportCommand.architecture(loaded)
        let hf = try GGUFHFMetadata.build(directory: loaded.location.url, architecture: arch, tokenizer: loaded.tokenizer)
        try GGUFModelExport.write(weights: weights, architecture: arch, metadata: hf.metadata, extraTensors: hf.extraTensors,
                                  name: name, outtype: .q8_0, origin: loaded.location.url.path, to: dest.path)
      }
    } else {
      let (r, parts) = try Int8ModelWriter.quantize(weights, scheme: scheme)
      report = r
      try Int8ModelWriter.write(weights, parts: parts, scheme: scheme, model: loaded, to: dest, overwrite: overwrite)
      print("quantised \(r.projections) projections to int8 (\(scheme.symmetric ? "symmetric" : "asymmetric"), "
        + "\(scheme.strategy.name)\(strategy == "group" ? " \(groupSize)" : "")): "
        + "\(MemoryEstimate.format(r.denseBytes)) → \(MemoryEstimate.format(r.quantizedBytes)), relative squared error "
        + String(format: "%.3g", r.relativeSquaredError))
    }
    let seconds = Date().timeIntervalSince(start)
    print("wrote \(dest.path) (\(format == "gguf" ? "GGUF q8_0" : "compressed-tensors pack-quantized")) in "
      + String(format: "%.1f s", seconds))
    // The written file itself, loaded as any later command would load it.
    var after: Double?
    if let examples, let before {
      let back = try ModelLoader.load(dest.path)
      let quantized = try DecoderWeights(from: back.weights, shape: back.shape, backend: backend, trainable: .none)
      let a = try Self.loss(quantized, examples, batchSize: batchSize, pad: pad, data: evalData ?? "")
      after = a
      let b: Double = before
      print(String(format: "held-out loss %.4f → %.4f (%+.4f), perplexity %.3f → %.3f (%+.2f %%), %d examples",
                   b, a, a - b, Foundation.exp(b), Foundation.exp(a), 100 * (Foundation.exp(a) / Foundation.exp(b) - 1),
                   examples.count))
    }
    if let json {
      let r = QuantizeReport(model: model, adapter: adapter, output: dest.path, format: format,
                             scheme: scheme.symmetric ? "symmetric" : "asymmetric", strategy: strategy,
                             groupSize: strategy == "group" ? groupSize : nil, projections: report.projections,
                             relativeSquaredError: format == "gguf" ? nil : report.relativeSquaredError,
                             lossBefore: before, lossAfter: after, seconds: seconds)
      try AtomicFile.write(try JSONEncoder.pretty.encode(r), to: json)
    }
  }

  /// Mean next-token cross-entropy of `weights` over `examples` (as `eval`).
  static func loss(_ weights: DecoderWeights, _ examples: [TokenizedExample], batchSize: Int, pad: Int, data: String) throws -> Double {
    let task = SFTTask(model: try DecoderModel(weights: weights), trainables: [], zero: {})
    var sum = 0.0, tokens = 0
    for batch in Batching.batches(examples, batchSize: batchSize, padID: pad) {
      let r = try task.evaluate(batch)
      sum += r.lossSum; tokens += r.tokens
    }
    guard tokens > 0 else { throw RecipeError("\(data): no trained target in \(examples.count) example(s)") }
    return sum / Double(tokens)
  }
}

/// `quantize --json`.
struct QuantizeReport: Codable {
  var model: String
  var adapter: String?
  var output: String
  var format: String
  var scheme: String
  var strategy: String
  var groupSize: Int?
  var projections: Int
  var relativeSquaredError: Double?
  var lossBefore: Double?
  var lossAfter: Double?
  var seconds: Double
}
