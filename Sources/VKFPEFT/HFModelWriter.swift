import Foundation
import VKFCore
import VKFModel

/// Writes a model as a Hugging Face directory that `AutoModelForCausalLM.from_pretrained`
/// loads: f32 safetensors (one file, or transformers-named shards plus
/// `model.safetensors.index.json`), `config.json`, and the tokenizer files found beside the
/// source model.
///
/// Used after `Merge.merge` to ship a fine-tuned model without PEFT. Every projection must be
/// dense with no adapter attached (an NF4 base or an unmerged adapter is refused, since
/// writing it would silently drop or mangle weights).
public enum HFModelWriter {
  /// Default largest shard: 5 GB (decimal), transformers 4's `max_shard_size` (5.x uses 50GB;
  /// both load either). Each shard is assembled in host memory (about twice its size at the
  /// peak), so the smaller default bounds memory for large models.
  public static let defaultShardBytes = 5_000_000_000

  /// Tokenizer and generation files copied from the source model's directory when present.
  public static let tokenizerFileNames = [
    "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "generation_config.json",
    "chat_template.jinja", "chat_template.json", "tokenizer.model", "vocab.json", "merges.txt",
    "added_tokens.json", "vocab.txt",
  ]

  /// The transformers class written in `architectures` for each supported `model_type`.
  public static let architectureNames = Dictionary(uniqueKeysWithValues: Architecture.registry.map {
    ($0.modelType, $0.causalLM)
  })
  /// The sequence-classification class of each `model_type` (reward models).
  public static let sequenceClassificationNames = Dictionary(uniqueKeysWithValues: Architecture.registry.map {
    ($0.modelType, $0.sequenceClassification)
  })

  /// A reward model's head: written as `score.weight` (1, hidden) in place of the LM head, with
  /// the `pad_token_id` whose last non-pad position the head reads (transformers' rule).
  public struct ScoreHead {
    /// score.weight (1, hidden).
    public var weight: Tensor
    /// The pad id training used (saved as `pad_token_id`).
    public var padTokenID: Int
    public init(weight: Tensor, padTokenID: Int) { self.weight = weight; self.padTokenID = padTokenID }
  }

  /// What `write` produced.
  public struct Written: Sendable, Equatable {
    /// The output directory.
    public var directory: URL
    /// Weight files, in shard order (["model.safetensors"] when not sharded).
    public var weightFiles: [String]
    /// Tokenizer and generation files copied from the source.
    public var copiedFiles: [String]
    /// The config written as config.json.
    public var config: DecoderConfig
  }

  // MARK: - Writing

  /// Writes `weights` with `config` (nil: synthesised from the weights' shape, as for a GGUF
  /// loaded without a config.json) to `dir`, atomically.
  ///
  /// - Parameters:
  ///   - tokenizerSource: a model directory or a file inside one (e.g. the .gguf); the
  ///     `tokenizerFileNames` present there are copied. nil copies nothing.
  ///   - shardBytes: largest shard in bytes of tensor data; a model above it is split as
  ///     transformers does (`model-00001-of-0000N.safetensors`).
  ///   - overwrite: replace an existing non-empty `dir` (otherwise refused).
  ///   - scoreHead: write a reward model (`<Model>ForSequenceClassification`, one label,
  ///     `score.weight`, no LM head) instead of a causal LM.
  @discardableResult
  public static func write(weights: DecoderWeights, config: DecoderConfig?, tokenizerSource: URL?,
                           to dir: URL, shardBytes: Int = defaultShardBytes, overwrite: Bool = false,
                           bosTokenID: Int? = nil, eosTokenIDs: [Int] = [], scoreHead: ScoreHead? = nil) throws -> Written {
    guard shardBytes > 0 else { throw PEFTError("shardBytes must be positive, got \(shardBytes)") }
    var cfg = try config ?? synthesizedConfig(shape: weights.shape, facts: nil,
                                              bosTokenID: bosTokenID, eosTokenIDs: eosTokenIDs)
    try check(cfg, matches: weights.shape)
    cfg.torchDtype = "float32"
    var tensors = try denseTensors(of: weights)
    var configJSON = try configObject(cfg)
    if let scoreHead {
      guard scoreHead.weight.shape == [1, weights.shape.hidden] else {
        throw PEFTError("the score head has shape \(scoreHead.weight.shape); a reward model needs [1, \(weights.shape.hidden)]")
      }
      tensors.removeAll { $0.name == ParameterNames.lmHead }
      tensors.append((RewardModelKeys.scoreWeight, scoreHead.weight))
      configJSON = try sequenceClassificationConfig(configJSON, modelType: cfg.modelType, padTokenID: scoreHead.padTokenID)
      cfg.padTokenId = scoreHead.padTokenID
    }
    let sources = tokenizerFiles(near: tokenizerSource)
    var weightFiles: [String] = []
    try AtomicDirectory.write(to: dir, overwrite: overwrite, what: "model directory") { tmp in
      weightFiles = try writeWeights(tensors, backend: weights.backend, into: tmp, shardBytes: shardBytes)
      try AtomicDirectory.writeFile(try AtomicDirectory.jsonData(configJSON),
                                    to: tmp.appendingPathComponent("config.json"))
      for file in sources {
        let data: Data
        do { data = try BoundedFile.read(file, BoundedFile.tokenizer) } catch {
          throw PEFTError("cannot read \(file.path) to copy it beside the model: \(error.localizedDescription)")
        }
        try AtomicDirectory.writeFile(data, to: tmp.appendingPathComponent(file.lastPathComponent))
      }
    }
    return Written(directory: dir, weightFiles: weightFiles, copiedFiles: sources.map(\.lastPathComponent),
                   config: cfg)
  }

  /// Writes `weights` as the model `model` was loaded from: its config (or one synthesised
  /// from the GGUF metadata and shape), its tokenizer files, its bos/eos ids.
  @discardableResult
  public static func write(weights: DecoderWeights, model: LoadedModel, to dir: URL,
                           shardBytes: Int = defaultShardBytes, overwrite: Bool = false,
                           scoreHead: ScoreHead? = nil) throws -> Written {
    var config = model.config
    if config == nil {
      let facts = try (model.weights as? GGUFWeightSource).map { try GGUFModelFacts(file: $0.file) }
      config = try synthesizedConfig(shape: weights.shape, facts: facts, bosTokenID: model.bosTokenID,
                                     eosTokenIDs: model.eosTokenIDs)
    }
    return try write(weights: weights, config: config, tokenizerSource: model.location.url, to: dir,
                     shardBytes: shardBytes, overwrite: overwrite, scoreHead: scoreHead)
  }

  // MARK: - Tensors

  /// Every parameter by Hugging Face name in load order, with its tensor; the tied LM head
  /// is omitted (transformers re-ties it from `tie_word_embeddings`).
  static func denseTensors(of weights: DecoderWeights) throws -> [(name: String, tensor: Tensor)] {
    var projections: [String: Linear] = [:]
    try weights.updateProjections { module, linear in
      if let adapter = linear.adapter, !(adapter is WeightPreservingAdapter) {
        throw PEFTError("\(module) still has an adapter attached; merge it (Merge.merge) or detach it "
          + "before writing a model directory")
      }
      guard linear.denseWeight != nil else {
        if case .int8 = linear.base {
          throw PEFTError("\(module) is an int8 (compressed-tensors) weight: merging into or re-exporting a quantised "
            + "checkpoint is not supported; start from the f32 model it was quantised from")
        }
        throw PEFTError("\(module) has an NF4 (QLoRA) base, which a float32 Hugging Face directory "
          + "cannot hold; load the base model in f32, load the adapter into it, merge, then write")
      }
      projections[module] = linear
    }
    var out: [(String, Tensor)] = []
    for (name, shape) in weights.shape.parameterShapes {
      let tensor: Tensor?
      if name.hasSuffix(".weight"), let linear = projections[String(name.dropLast(7))] {
        tensor = linear.denseWeight
      } else if name.hasSuffix(".bias"), let linear = projections[String(name.dropLast(5))] {
        tensor = linear.bias
      } else {
        tensor = weights.parameters[name]
      }
      guard let tensor else { throw PEFTError("\(name): parameter missing from the weights; cannot write it") }
      guard tensor.shape == shape else {
        throw PEFTError("\(name): has shape \(tensor.shape) but the model's shape implies \(shape)")
      }
      out.append((name, tensor))
    }
    return out
  }

  /// Writes the tensors, greedily split into shards as huggingface_hub's
  /// `split_state_dict_into_shards_factory` does, and the index when there is more than one.
  static func writeWeights(_ tensors: [(name: String, tensor: Tensor)], backend: Backend, into dir: URL,
                           shardBytes: Int) throws -> [String] {
    var shards: [[(name: String, tensor: Tensor)]] = []
    var current: [(name: String, tensor: Tensor)] = [], currentBytes = 0
    for t in tensors {
      let size = t.tensor.count * 4
      if size > shardBytes { shards.append([t]); continue }
      if currentBytes + size > shardBytes, !current.isEmpty {
        shards.append(current); current = []; currentBytes = 0
      }
      current.append(t); currentBytes += size
    }
    if !current.isEmpty { shards.append(current) }
    let metadata = ["format": "pt"]
    func write(_ shard: [(name: String, tensor: Tensor)], to name: String) throws {
      let st = try shard.map { t in
        try SafetensorsWriter.Tensor(name: t.name, shape: t.tensor.shape, floats: try backend.floats(t.tensor))
      }
      try SafetensorsWriter.write(tensors: st, metadata: metadata, to: dir.appendingPathComponent(name))
    }
    if shards.count <= 1 {
      try write(shards.first ?? [], to: SafetensorsCheckpoint.singleFileName)
      return [SafetensorsCheckpoint.singleFileName]
    }
    var names: [String] = [], weightMap: [String: String] = [:]
    for (i, shard) in shards.enumerated() {
      let name = String(format: "model-%05d-of-%05d.safetensors", i + 1, shards.count)
      try write(shard, to: name)
      names.append(name)
      for t in shard { weightMap[t.name] = name }
    }
    let totalSize = tensors.reduce(0) { $0 + $1.tensor.count * 4 }
    let totalParameters = tensors.reduce(0) { $0 + $1.tensor.count }
    let index: [String: Any] = [
      "metadata": ["total_size": totalSize, "total_parameters": totalParameters],
      "weight_map": weightMap,
    ]
    try AtomicDirectory.writeFile(try AtomicDirectory.jsonData(index),
                                  to: dir.appendingPathComponent(SafetensorsCheckpoint.indexFileName))
    return names
  }

  /// The files of `tokenizerFileNames` beside `source`: a directory, or a file (which need
  /// not exist) whose directory is searched.
  static func tokenizerFiles(near source: URL?) -> [URL] {
    guard let source else { return [] }
    var isDirectory: ObjCBool = false
    let fm = FileManager.default
    let isDir = fm.fileExists(atPath: source.path, isDirectory: &isDirectory) && isDirectory.boolValue
    let dir = isDir ? source : source.deletingLastPathComponent()
    return tokenizerFileNames.map { dir.appendingPathComponent($0) }.filter { fm.fileExists(atPath: $0.path) }
  }
}
