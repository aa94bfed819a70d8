import Foundation
import VKFCore

// MARK: - Loading

extension DecoderConfig {
  /// Reads and validates `config.json` at `url`, or a model directory containing one.
  public static func load(from url: URL) throws -> DecoderConfig {
    let (data, file) = try readConfigFile(url)
    return try decode(data, file: file)
  }

  /// The bytes of `config.json` at `url` (or in the directory `url`) and its path, read
  /// within the settings-file cap; unreadable is a `ConfigError` naming the file.
  static func readConfigFile(_ url: URL) throws -> (data: Data, file: String) {
    var file = url
    var isDirectory: ObjCBool = false
    if FileManager.default.fileExists(atPath: url.path, isDirectory: &isDirectory), isDirectory.boolValue {
      file = url.appendingPathComponent("config.json")
    }
    do { return (try BoundedFile.read(file, BoundedFile.settings), file.path) } catch {
      throw ConfigError.unreadable(file: file.path, reason: error.localizedDescription)
    }
  }

  /// Decodes and validates config JSON; `file` only labels error messages.
  public static func decode(_ data: Data, file: String = "<memory>") throws -> DecoderConfig {
    guard (try? JSONSerialization.jsonObject(with: data)) is [String: Any] else {
      throw ConfigError.notJSON(file: file, reason: "expected a top-level {...} object")
    }
    let config: DecoderConfig
    do {
      config = try JSONDecoder().decode(DecoderConfig.self, from: data)
    } catch let error as ConfigError {
      throw error.relabelled(file: file)
    } catch let error as RopeScalingUnsupported {
      throw ConfigError.unsupportedRopeScaling(error.name, file: file,
                                               supported: RopeScaling.Kind.allCases.map(\.rawValue))
    } catch let error as DecodingError {
      throw ConfigError(error, file: file)
    }
    try config.validate(file: file)
    return config
  }

  /// Upper bounds on the dimensions, checked before anything is sized from them (a corrupt
  /// head_dim of 6·10¹⁴ would size the RoPE table at 10¹⁵ bytes). Each is ≥ 4× the largest
  /// open model's (Llama 3.1 405B: hidden 16,384, MLP 53,248, 126 layers, 128 heads; Gemma:
  /// head_dim 256, vocabulary 262,144).
  public static let dimensionCaps = (hidden: 1 << 16, intermediate: 1 << 18, layers: 1 << 10, heads: 1 << 10,
                                     headDim: 1 << 10, vocab: 1 << 22)

  /// Checks the relations between fields that the attention and MLP code rely on.
  public func validate(file: String = "<memory>") throws {
    for (key, value) in [("hidden_size", hiddenSize), ("intermediate_size", intermediateSize),
                         ("num_hidden_layers", numHiddenLayers), ("num_attention_heads", numAttentionHeads),
                         ("num_key_value_heads", numKeyValueHeads), ("head_dim", headDim),
                         ("vocab_size", vocabSize)] where value <= 0 {
      throw ConfigError.invalidValue(key, reason: "must be positive, got \(value)", file: file)
    }
    for (key, value, cap) in [("hidden_size", hiddenSize, Self.dimensionCaps.hidden),
                              ("intermediate_size", intermediateSize, Self.dimensionCaps.intermediate),
                              ("num_hidden_layers", numHiddenLayers, Self.dimensionCaps.layers),
                              ("num_attention_heads", numAttentionHeads, Self.dimensionCaps.heads),
                              ("num_key_value_heads", numKeyValueHeads, Self.dimensionCaps.heads),
                              ("head_dim", headDim, Self.dimensionCaps.headDim),
                              ("vocab_size", vocabSize, Self.dimensionCaps.vocab)] where value > cap {
      throw ConfigError.invalidValue(key, reason: "\(value) is beyond any model this trainer can hold (at most \(cap)); "
        + "the config is corrupt", file: file)
    }
    if numAttentionHeads % numKeyValueHeads != 0 {
      throw ConfigError.invalidValue(
        "num_key_value_heads",
        reason: "\(numKeyValueHeads) does not divide num_attention_heads \(numAttentionHeads)", file: file)
    }
    if headDim % 2 != 0 {
      throw ConfigError.invalidValue("head_dim", reason: "RoPE needs an even head_dim, got \(headDim)", file: file)
    }
    if gatedActivation == nil {
      throw ConfigError.invalidValue(isGemmaFamily ? "hidden_activation" : "hidden_act",
                                     reason: "\"silu\" and \"gelu_pytorch_tanh\" are implemented, got \"\(hiddenAct)\"",
                                     file: file)
    }
    _ = try layerWindows(file: file)
  }

  /// Each layer's sliding attention window (0 = full causal attention), as transformers
  /// decides it: `layer_types` when present ("sliding_attention" layers use the window in
  /// force, none when it is null or off); else mistral applies `sliding_window` to every layer, qwen2 (with
  /// `use_sliding_window`) to layers from `max_window_layers` (default 28) on, llama to none.
  /// Throws `invalidValue` naming the key for a malformed `layer_types` or window.
  public func layerWindows(file: String = "<memory>") throws -> [Int] {
    // transformers 5 saves qwen2_moe's window as 0 when use_sliding_window is false: none.
    if let w = slidingWindow, w < 0 || (w == 0 && effectiveSlidingWindow != nil) {
      throw ConfigError.invalidValue("sliding_window", reason: "must be positive or null, got \(w)", file: file)
    }
    if let types = layerTypes {
      guard types.count == numHiddenLayers else {
        throw ConfigError.invalidValue("layer_types", reason: "\(types.count) entries for \(numHiddenLayers) layers",
                                       file: file)
      }
      return try types.map { type -> Int in
        switch type {
        case "full_attention": return 0
        // Without a window in force (null, or use_sliding_window false) transformers masks
        // these layers causally only.
        case "sliding_attention": return effectiveSlidingWindow ?? 0
        default:
          throw ConfigError.invalidValue("layer_types", reason: "\"\(type)\" is not full_attention or "
            + "sliding_attention (the attention kinds vkfinetune implements)", file: file)
        }
      }
    }
    guard let w = effectiveSlidingWindow else { return Array(repeating: 0, count: numHiddenLayers) }
    switch architecture.windowRule {
    case .none: return Array(repeating: 0, count: numHiddenLayers)
    case .everyLayer: return Array(repeating: w, count: numHiddenLayers)
    case .fromMaxWindowLayers:
      let from = maxWindowLayers ?? 28
      return (0..<numHiddenLayers).map { $0 >= from ? w : 0 }
    case .evenBelowMaxWindowLayers:
      let below = maxWindowLayers ?? 28
      return (0..<numHiddenLayers).map { $0 % 2 == 0 && $0 < below ? w : 0 }
    case .everyNthFull(let defaultPattern):
      let pattern = slidingWindowPattern ?? defaultPattern
      guard pattern > 0 else {
        throw ConfigError.invalidValue("sliding_window_pattern", reason: "must be positive, got \(pattern)", file: file)
      }
      return (0..<numHiddenLayers).map { ($0 + 1) % pattern != 0 ? w : 0 }
    }
  }
}

// MARK: - RoPE

extension DecoderConfig {
  /// The RoPE inverse frequencies (headDim/2 values) for sequences up to
  /// `sequenceLength` tokens, matching transformers' `ROPE_INIT_FUNCTIONS`.
  ///
  /// - `default`, `llama3`: independent of length (VKFCore `RoPE.inverseFrequencies`).
  /// - `linear`: every frequency divided by `factor`.
  /// - `dynamic`: the default frequencies up to `max_position_embeddings`; past it the
  ///   base grows as in `_compute_dynamic_ntk_parameters`.
  public func ropeInverseFrequencies(sequenceLength: Int? = nil) -> [Float] {
    guard let scaling = ropeScaling else {
      return RoPE.inverseFrequencies(headDim: headDim, theta: ropeTheta)
    }
    switch scaling.kind {
    case .llama3:
      return RoPE.inverseFrequencies(headDim: headDim, theta: ropeTheta, llama3: scaling.llama3)
    case .linear:
      return RoPE.inverseFrequencies(headDim: headDim, theta: ropeTheta).map { $0 / Float(scaling.factor) }
    case .dynamic:
      let maxPositions = Double(scaling.originalMaxPositionEmbeddings ?? maxPositionEmbeddings)
      let length = Double(sequenceLength ?? 0)
      guard length > maxPositions else {
        return RoPE.inverseFrequencies(headDim: headDim, theta: ropeTheta)
      }
      let dim = Double(headDim)
      let base = ropeTheta * pow(scaling.factor * length / maxPositions - (scaling.factor - 1), dim / (dim - 2))
      return RoPE.inverseFrequencies(headDim: headDim, theta: base)
    }
  }
}

// MARK: - Error mapping

extension ConfigError {
  /// Builds a field-naming error out of Foundation's `DecodingError`.
  init(_ error: DecodingError, file: String) {
    func path(_ context: DecodingError.Context, _ last: CodingKey? = nil) -> String {
      let keys = context.codingPath + (last.map { [$0] } ?? [])
      let named = keys.map { $0.intValue.map { "[\($0)]" } ?? $0.stringValue }
      return named.joined(separator: ".").replacingOccurrences(of: ".[", with: "[")
    }
    switch error {
    case let .keyNotFound(key, context):
      self = .missingField(path(context, key), file: file)
    case let .typeMismatch(type, context):
      self = .wrongType(path(context), expected: Self.describe(type), file: file)
    case let .valueNotFound(type, context):
      self = .wrongType(path(context), expected: "\(Self.describe(type)), not null", file: file)
    case let .dataCorrupted(context):
      self = .notJSON(file: file, reason: context.debugDescription)
    @unknown default:
      self = .notJSON(file: file, reason: "\(error)")
    }
  }

  /// "a number", "a string"… for the JSON type a Swift type decodes from.
  static func describe(_ type: Any.Type) -> String {
    switch type {
    case is Int.Type, is Double.Type, is Float.Type: return "a number"
    case is String.Type: return "a string"
    case is Bool.Type: return "true or false"
    case is [Int].Type: return "a list of integers"
    default: return "a JSON object"
    }
  }

  /// The same error with `file` filled in (decoding inside `init(from:)` cannot know it).
  func relabelled(file: String) -> ConfigError {
    switch self {
    case let .unsupportedModelType(type, _, supported):
      return .unsupportedModelType(type, file: file, supported: supported)
    default: return self
    }
  }
}
