import Foundation
import VKFTokenizer

/// A model found, opened and described: architecture, weights (Hugging Face names), tokenizer
/// and chat template, whether it came from a Hugging Face directory or a GGUF file.
public struct LoadedModel {
  /// Where it was found.
  public let location: ModelLocation
  /// The architecture the decoder is built with (a run may adjust what is a training choice:
  /// a mixture-of-experts model's load-balancing weight).
  public var shape: TransformerShape
  /// The weights, under Hugging Face names and shapes.
  public let weights: WeightSource
  /// The tokenizer (tokenizer.json, or one built from GGUF metadata).
  public let tokenizer: Tokenizer
  /// The chat template; nil when the model has none (a base model).
  public let chatTemplate: ChatTemplate?
  /// Beginning-of-sequence id, if the model names one.
  public let bosTokenID: Int?
  /// Every id that ends a generation (generation_config.json, config.json, tokenizer, GGUF),
  /// without duplicates, most specific first.
  public let eosTokenIDs: [Int]
  /// The Hugging Face config; nil for a GGUF without config.json beside it.
  public let config: DecoderConfig?
}

/// Opens whatever `--model` names.
///
/// Hugging Face directory: config.json → shape, safetensors → weights, tokenizer.json,
/// chat_template.jinja or tokenizer_config.json. GGUF file: metadata → shape (checked against
/// a config.json beside it, which then supplies the exact RoPE table), tensors → weights,
/// tokenizer.json beside it or else the embedded `tokenizer.ggml.*` tables, chat template
/// beside it or else `tokenizer.chat_template`.
public enum ModelLoader {
  /// `argument` as `--model` takes it: HF directory, .gguf file, or org/name in the HF cache.
  public static func load(_ argument: String) throws -> LoadedModel {
    try load(ModelLocator.resolve(argument))
  }

  /// Loads a resolved location. `useSiblingFiles: false` ignores config.json, tokenizer.json
  /// and template files beside a GGUF (as if the file were alone; tests use it).
  public static func load(_ location: ModelLocation, useSiblingFiles: Bool = true) throws -> LoadedModel {
    switch location {
    case .huggingFaceDirectory(let directory):
      return try loadDirectory(directory, location: location)
    case .gguf(let file):
      return try loadGGUF(file, location: location, useSiblingFiles: useSiblingFiles)
    }
  }

  // MARK: - Hugging Face directory

  static func loadDirectory(_ directory: URL, location: ModelLocation) throws -> LoadedModel {
    let configURL = directory.appendingPathComponent("config.json")
    let config = try DecoderConfig.load(from: configURL)
    let shape = try TransformerShape(config: config, file: configURL.path)
    var weights: WeightSource = try SafetensorsCheckpoint.open(directory: directory)
    if let raw = try JSONSideFile.object(at: configURL),
       let (scheme, format) = try CompressedTensors.scheme(config: raw, path: configURL.path),
       let inner = weights as? SafetensorsSource {
      weights = try CompressedTensorsSource(inner, scheme: scheme, format: format)
    }
    let tokenizerURL = directory.appendingPathComponent("tokenizer.json")
    guard FileManager.default.fileExists(atPath: tokenizerURL.path) else {
      throw ModelFileError(directory.path, "has no tokenizer.json; download the model's tokenizer files "
        + "into this directory (only tokenizer.json BPE tokenizers are supported)")
    }
    let tokenizer = try Tokenizer(contentsOf: tokenizerURL)
    let template = try siblingChatTemplate(in: directory)
    let bos = tokenizer.bosTokenID ?? config.bosTokenId
    let eos = unique(try generationEOS(in: directory) + config.eosTokenIds + [tokenizer.eosTokenID])
    try checkTokenIDs(tokenizer, bos: bos, eos: eos, vocab: shape.vocab, tokenizerPath: tokenizerURL.path,
                      weightsPath: directory.path)
    return LoadedModel(
      location: location, shape: shape, weights: weights, tokenizer: tokenizer, chatTemplate: template,
      bosTokenID: bos, eosTokenIDs: eos, config: config)
  }

  // MARK: - GGUF

  static func loadGGUF(_ file: URL, location: ModelLocation, useSiblingFiles: Bool) throws -> LoadedModel {
    let weights = try GGUFWeightSource(path: file.path)
    let facts = try GGUFModelFacts(file: weights.file)
    var shape = try TransformerShape(gguf: facts, weights: weights)
    let directory = file.deletingLastPathComponent()
    let fm = FileManager.default

    var config: DecoderConfig?
    let configURL = directory.appendingPathComponent("config.json")
    if useSiblingFiles, fm.fileExists(atPath: configURL.path) {
      let sibling = try DecoderConfig.load(from: configURL)
      let fromConfig = try TransformerShape(config: sibling, file: configURL.path)
      var fromGGUF = shape
      if facts.expertWeightsNorm == nil, let norm = fromConfig.moe?.normalizeTopK {
        // llama.cpp writes no renormalisation flag for Mixtral / qwen3moe (it always
        // renormalises); the config's norm_topk_prob is the model's own setting.
        fromGGUF.moe?.normalizeTopK = norm
      }
      if let difference = fromConfig.firstDifference(from: fromGGUF) {
        throw ModelFileError(configURL.path, "describes a different model than \(file.lastPathComponent) "
          + "(config vs GGUF: \(difference)); remove or fix the config.json beside the .gguf")
      }
      // Same architecture: take the config's RoPE table, computed exactly as transformers does.
      shape = fromConfig
      config = sibling
    }

    let tokenizerFacts = Result { () throws(ModelFileError) in try GGUFTokenizerFacts(file: weights.file) }
    let ggufTokenizer = try? tokenizerFacts.get()
    let tokenizerURL = directory.appendingPathComponent("tokenizer.json")
    let tokenizer: Tokenizer
    if useSiblingFiles, fm.fileExists(atPath: tokenizerURL.path) {
      tokenizer = try Tokenizer(contentsOf: tokenizerURL)
    } else {
      // The facts' own error says what is missing or mistyped.
      tokenizer = try GGUFTokenizerBuilder.tokenizer(tokenizerFacts.get(), path: file.path)
    }

    var template = useSiblingFiles ? try siblingChatTemplate(in: directory) : nil
    if template == nil, let source = ggufTokenizer?.chatTemplate {
      template = try ChatTemplate(source: source)
    }
    var eos = useSiblingFiles ? try generationEOS(in: directory) : []
    eos += (config?.eosTokenIds ?? []) + [tokenizer.eosTokenID, ggufTokenizer?.eosTokenID].compactMap { $0 }
    let bos = tokenizer.bosTokenID ?? config?.bosTokenId ?? ggufTokenizer?.bosTokenID
    let tokenizerPath = useSiblingFiles && fm.fileExists(atPath: tokenizerURL.path) ? tokenizerURL.path : file.path
    try checkTokenIDs(tokenizer, bos: bos, eos: unique(eos), vocab: shape.vocab, tokenizerPath: tokenizerPath,
                      weightsPath: file.path)
    return LoadedModel(
      location: location, shape: shape, weights: weights, tokenizer: tokenizer, chatTemplate: template,
      bosTokenID: bos, eosTokenIDs: unique(eos), config: config)
  }

  // MARK: - Sibling files

  /// chat_template.jinja, else tokenizer_config.json's `chat_template`, else nil. A template
  /// that exists but does not parse is an error (silently chatting without it would not be).
  static func siblingChatTemplate(in directory: URL) throws -> ChatTemplate? {
    let fm = FileManager.default
    let jinja = directory.appendingPathComponent("chat_template.jinja")
    let tokenizerConfig = directory.appendingPathComponent("tokenizer_config.json")
    if fm.fileExists(atPath: jinja.path) {
      do { return try ChatTemplate.load(modelDirectory: directory) } catch {
        throw ModelFileError(jinja.path, "\(error)")
      }
    }
    guard let object = try JSONSideFile.object(at: tokenizerConfig), object["chat_template"] != nil,
          let data = fm.contents(atPath: tokenizerConfig.path) else { return nil }
    do { return try ChatTemplate.fromTokenizerConfig(data) } catch {
      throw ModelFileError(tokenizerConfig.path, "\(error)")
    }
  }

  /// `eos_token_id` of generation_config.json (an int or a list of ints), or [] when the file
  /// or the key is absent; anything else is an error naming the file.
  static func generationEOS(in directory: URL) throws -> [Int] {
    let url = directory.appendingPathComponent("generation_config.json")
    guard let object = try JSONSideFile.object(at: url) else { return [] }
    switch object["eos_token_id"] {
    case nil, is NSNull: return []
    case let one as Int: return [one]
    case let many as [Int]: return many
    case let other?:
      throw ModelFileError(url.path, "eos_token_id must be an integer or a list of integers (got \(other))")
    }
  }

  /// Every id the tokenizer can produce, and the BOS / EOS ids, must index the model's
  /// embedding rows; otherwise the embedding lookup reads out of bounds.
  static func checkTokenIDs(_ tokenizer: Tokenizer, bos: Int?, eos: [Int], vocab: Int,
                            tokenizerPath: String, weightsPath: String) throws {
    if tokenizer.vocabularySize > vocab {
      let id = (vocab..<tokenizer.vocabularySize).first { tokenizer.token(for: $0) != nil } ?? vocab
      throw ModelFileError(tokenizerPath, "token id \(id) (\(tokenizer.token(for: id).map { "\"\($0)\"" } ?? "?")) "
        + "is outside the model's vocabulary of \(vocab) embeddings (\(weightsPath)); the tokenizer "
        + "belongs to another model")
    }
    for (what, id) in [("BOS", bos)] + eos.map({ ("EOS", Optional($0)) }) {
      guard let id, id < 0 || id >= vocab else { continue }
      throw ModelFileError(tokenizerPath, "the \(what) token id \(id) (from the tokenizer, config.json or "
        + "generation_config.json) is outside the model's vocabulary of \(vocab) embeddings (\(weightsPath))")
    }
  }

  /// The non-nil ids in first-seen order.
  static func unique(_ ids: [Int?]) -> [Int] {
    var seen = Set<Int>()
    return ids.compactMap { $0 }.filter { seen.insert($0).inserted }
  }
}
