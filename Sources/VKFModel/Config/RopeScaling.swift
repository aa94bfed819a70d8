import Foundation
import VKFCore

/// The `rope_scaling` object of a Hugging Face config (or the scaling part of the newer
/// `rope_parameters`), restricted to the variants vkfinetune implements.
///
/// Keys stay verbatim. Older configs spell the variant `type`, newer ones `rope_type`;
/// both are accepted and `rope_type` is written back.
public struct RopeScaling: Codable, Equatable, Sendable {
  /// The RoPE variants this trainer implements (`default` means "no scaling").
  public enum Kind: String, Codable, Sendable, CaseIterable {
    /// Llama 3.1+ frequency-band rescaling (`_compute_llama3_parameters`).
    case llama3
    /// Position interpolation: every inverse frequency divided by `factor`.
    case linear
    /// NTK-aware scaling that only changes frequencies past `max_position_embeddings`.
    case dynamic
  }

  /// Which variant (`rope_type`, or legacy `type`). No default: the key is required.
  public var kind: Kind
  /// Scaling factor. Default: none (required for every supported kind).
  public var factor: Double
  /// llama3 only: low-frequency band factor. Default: nil (required for llama3).
  public var lowFreqFactor: Double?
  /// llama3 only: high-frequency band factor. Default: nil (required for llama3).
  public var highFreqFactor: Double?
  /// llama3 (required) and dynamic (optional): the pre-extension context length.
  /// Default: nil.
  public var originalMaxPositionEmbeddings: Int?

  enum CodingKeys: String, CodingKey {
    case ropeType = "rope_type", type, factor
    case lowFreqFactor = "low_freq_factor", highFreqFactor = "high_freq_factor"
    case originalMaxPositionEmbeddings = "original_max_position_embeddings"
  }

  /// Memberwise initializer.
  public init(kind: Kind, factor: Double, lowFreqFactor: Double? = nil, highFreqFactor: Double? = nil,
              originalMaxPositionEmbeddings: Int? = nil) {
    self.kind = kind; self.factor = factor
    self.lowFreqFactor = lowFreqFactor; self.highFreqFactor = highFreqFactor
    self.originalMaxPositionEmbeddings = originalMaxPositionEmbeddings
  }

  /// The variant name of a scaling object without decoding the rest (nil for `default`).
  static func variantName(in c: KeyedDecodingContainer<CodingKeys>) throws -> String? {
    let name = try c.decodeIfPresent(String.self, forKey: .ropeType)
      ?? c.decodeIfPresent(String.self, forKey: .type)
    return name == "default" ? nil : name
  }

  /// Decodes a scaling object; unknown variants surface as `RopeScalingUnsupported`, which
  /// `DecoderConfig.load` turns into `ConfigError.unsupportedRopeScaling`.
  public init(from decoder: Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    guard let name = try Self.variantName(in: c) else {
      throw RopeScalingUnsupported(name: "default")
    }
    guard let kind = Kind(rawValue: name) else { throw RopeScalingUnsupported(name: name) }
    self.kind = kind
    factor = try c.decode(Double.self, forKey: .factor)
    lowFreqFactor = try c.decodeIfPresent(Double.self, forKey: .lowFreqFactor)
    highFreqFactor = try c.decodeIfPresent(Double.self, forKey: .highFreqFactor)
    originalMaxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .originalMaxPositionEmbeddings)
    if kind == .llama3 {
      // Fail at load time rather than at the first forward pass.
      _ = try c.decode(Double.self, forKey: .lowFreqFactor)
      _ = try c.decode(Double.self, forKey: .highFreqFactor)
      _ = try c.decode(Int.self, forKey: .originalMaxPositionEmbeddings)
    }
  }

  /// Encodes with the modern `rope_type` key.
  public func encode(to encoder: Encoder) throws {
    var c = encoder.container(keyedBy: CodingKeys.self)
    try c.encode(kind.rawValue, forKey: .ropeType)
    try c.encode(factor, forKey: .factor)
    try c.encodeIfPresent(lowFreqFactor, forKey: .lowFreqFactor)
    try c.encodeIfPresent(highFreqFactor, forKey: .highFreqFactor)
    try c.encodeIfPresent(originalMaxPositionEmbeddings, forKey: .originalMaxPositionEmbeddings)
  }

  /// The VKFCore parameters for `RoPE.inverseFrequencies`, when this is llama3 scaling.
  public var llama3: RoPE.Llama3Scaling? {
    guard kind == .llama3, let low = lowFreqFactor, let high = highFreqFactor,
          let original = originalMaxPositionEmbeddings else { return nil }
    return RoPE.Llama3Scaling(factor: factor, lowFreqFactor: low, highFreqFactor: high,
                              originalMaxPositionEmbeddings: Double(original))
  }
}

/// Thrown while decoding a `rope_scaling` whose variant is not implemented (internal:
/// `DecoderConfig.load` converts it into `ConfigError.unsupportedRopeScaling`).
struct RopeScalingUnsupported: Error { var name: String }
