import Foundation
import VKFCore

/// A BERT encoder's `config.json` (`model_type` "bert": BertModel,
/// BertForSequenceClassification, sentence-transformers' MiniLM …), read with transformers'
/// defaults and checked key by key. The whole JSON object is kept, so a written model's
/// config carries every key the input had.
public struct BertConfig {
  public var vocabSize: Int
  public var hiddenSize: Int
  public var layers: Int
  public var heads: Int
  public var intermediateSize: Int
  public var maxPositions: Int
  public var typeVocabSize: Int
  public var layerNormEps: Float
  /// The MLP's activation (`hidden_act`: gelu, gelu_new / gelu_pytorch_tanh).
  public var activation: Activation
  public var initializerRange: Double
  public var padTokenId: Int
  public var hiddenDropout: Double
  public var attentionDropout: Double
  /// Label names by id (`id2label`); empty when the file has none.
  public var labels: [String]
  /// The JSON object as read.
  public var raw: [String: Any]

  /// transformers' `BertConfig` defaults for the keys a file may omit.
  nonisolated(unsafe) static let defaults: [String: Any] = [
    "vocab_size": 30522, "hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12,
    "intermediate_size": 3072, "hidden_act": "gelu", "max_position_embeddings": 512, "type_vocab_size": 2,
    "layer_norm_eps": 1e-12, "initializer_range": 0.02, "pad_token_id": 0, "hidden_dropout_prob": 0.1,
    "attention_probs_dropout_prob": 0.1, "position_embedding_type": "absolute",
  ]

  /// Reads `config.json` at `url` (or in the directory `url`).
  public static func load(from url: URL) throws -> BertConfig {
    let (data, file) = try DecoderConfig.readConfigFile(url)
    return try decode(data, file: file)
  }

  /// True when the JSON at `url` (a config.json or a directory holding one) says model_type
  /// "bert"; false when it says anything else or cannot be read (the decoder loader then
  /// gives its own error).
  public static func isBert(_ url: URL) -> Bool {
    guard let data = try? DecoderConfig.readConfigFile(url).data,
          let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else { return false }
    return object["model_type"] as? String == "bert"
  }

  /// Decodes and validates config JSON; `file` labels error messages.
  public static func decode(_ data: Data, file: String = "<memory>") throws -> BertConfig {
    guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any] else {
      throw ConfigError.notJSON(file: file, reason: "expected a top-level {...} object")
    }
    guard let type = object["model_type"] as? String else { throw ConfigError.missingField("model_type", file: file) }
    guard type == "bert" else {
      throw ConfigError.unsupportedModelType(type, file: file, supported: ["bert"])
    }
    func value(_ key: String) -> Any? {
      let v = object[key]
      return v == nil || v is NSNull ? defaults[key] : v
    }
    func int(_ key: String, positive: Bool = true) throws -> Int {
      guard let n = value(key) as? NSNumber,
            let i = Int(exactly: n.doubleValue) else {
        throw ConfigError.wrongType(key, expected: "an integer", file: file)
      }
      if positive, i <= 0 { throw ConfigError.invalidValue(key, reason: "must be positive, got \(i)", file: file) }
      return i
    }
    func double(_ key: String) throws -> Double {
      guard let n = value(key) as? NSNumber else {
        throw ConfigError.wrongType(key, expected: "a number", file: file)
      }
      return n.doubleValue
    }
    let act: Activation
    switch value("hidden_act") as? String {
    case "gelu": act = .gelu
    case "gelu_new", "gelu_pytorch_tanh": act = .geluTanh
    case let other:
      throw ConfigError.invalidValue("hidden_act", reason: "\(other.map { "\"\($0)\"" } ?? "a non-string") is not supported "
        + "(gelu, gelu_new, gelu_pytorch_tanh)", file: file)
    }
    let position = value("position_embedding_type") as? String
    guard position == "absolute" else {
      throw ConfigError.invalidValue("position_embedding_type", reason: "only \"absolute\" position embeddings are "
        + "supported, not \(position.map { "\"\($0)\"" } ?? "a non-string")", file: file)
    }
    if object["is_decoder"] as? Bool == true || object["add_cross_attention"] as? Bool == true {
      throw ConfigError.invalidValue("is_decoder", reason: "BERT as a decoder (is_decoder / add_cross_attention) "
        + "is not supported; vkfinetune trains BERT as an encoder", file: file)
    }
    var labels: [String] = []
    if let map = object["id2label"] as? [String: Any] {
      let pairs = try map.map { key, name -> (Int, String) in
        guard let id = Int(key), id >= 0, let s = name as? String else {
          throw ConfigError.wrongType("id2label", expected: "an object of \"id\": \"name\" strings", file: file)
        }
        return (id, s)
      }
      guard Set(pairs.map(\.0)) == Set(0..<pairs.count) else {
        throw ConfigError.invalidValue("id2label", reason: "ids must be 0…\(pairs.count - 1)", file: file)
      }
      labels = pairs.sorted { $0.0 < $1.0 }.map(\.1)
    }
    let c = BertConfig(
      vocabSize: try int("vocab_size"), hiddenSize: try int("hidden_size"), layers: try int("num_hidden_layers"),
      heads: try int("num_attention_heads"), intermediateSize: try int("intermediate_size"),
      maxPositions: try int("max_position_embeddings"), typeVocabSize: try int("type_vocab_size"),
      layerNormEps: Float(try double("layer_norm_eps")), activation: act, initializerRange: try double("initializer_range"),
      padTokenId: try int("pad_token_id", positive: false), hiddenDropout: try double("hidden_dropout_prob"),
      attentionDropout: try double("attention_probs_dropout_prob"), labels: labels, raw: object)
    let caps = DecoderConfig.dimensionCaps
    for (key, v, cap) in [("hidden_size", c.hiddenSize, caps.hidden), ("intermediate_size", c.intermediateSize, caps.intermediate),
                          ("num_hidden_layers", c.layers, caps.layers), ("num_attention_heads", c.heads, caps.heads),
                          ("vocab_size", c.vocabSize, caps.vocab), ("max_position_embeddings", c.maxPositions, 1 << 20),
                          ("type_vocab_size", c.typeVocabSize, 1 << 10)] where v > cap {
      throw ConfigError.invalidValue(key, reason: "\(v) exceeds \(cap)", file: file)
    }
    guard c.hiddenSize % c.heads == 0 else {
      throw ConfigError.invalidValue("num_attention_heads", reason: "\(c.heads) heads do not divide hidden_size \(c.hiddenSize)",
                                     file: file)
    }
    guard c.layerNormEps > 0, c.layerNormEps.isFinite else {
      throw ConfigError.invalidValue("layer_norm_eps", reason: "must be a positive number", file: file)
    }
    guard c.padTokenId >= 0, c.padTokenId < c.vocabSize else {
      throw ConfigError.invalidValue("pad_token_id", reason: "\(c.padTokenId) ∉ [0, \(c.vocabSize))", file: file)
    }
    return c
  }

  /// Per-head width.
  public var headDim: Int { hiddenSize / heads }
  /// transformers' attention scale 1/√head_dim.
  public var attentionScale: Float { 1 / Float(headDim).squareRoot() }
}
