/// How to generate text: length, sampling and stop strings. Keys follow transformers'
/// `GenerationConfig` (`max_new_tokens`, `temperature`, `top_k`, `top_p`,
/// `repetition_penalty`, `stop_strings`) plus `seed`; a missing key takes its default.
///
/// Sampling mirrors transformers' `generate`: temperature 0 is greedy (`do_sample=False`);
/// otherwise the logits go through repetition penalty → temperature → top-k → top-p, and a
/// token is drawn from the softmax of what is left.
public struct GenerationConfig: Codable, Equatable, Sendable {
  /// The most tokens to generate (default 128); must be ≥ 1.
  public var maxNewTokens: Int
  /// Softmax temperature (default 0 = greedy, always the most likely token); must be ≥ 0.
  public var temperature: Float
  /// Keep only the k most likely tokens before sampling (default 0 = off); must be ≥ 0.
  public var topK: Int
  /// Nucleus sampling: keep the smallest set of most likely tokens whose probability sums to
  /// ≥ p (default 1 = off); must be in (0, 1].
  public var topP: Float
  /// Divide positive (multiply negative) logits of tokens already in the prompt or output
  /// by this (default 1 = off; transformers' CTRL-style penalty); must be > 0.
  public var repetitionPenalty: Float
  /// Seed of the sampling RNG (default 0): the same seed, model and prompt give the same text.
  public var seed: UInt64
  /// Stop when the generated text contains any of these (default none); the stop string
  /// and anything after it are left out of the output.
  public var stopStrings: [String]

  enum CodingKeys: String, CodingKey {
    case maxNewTokens = "max_new_tokens", temperature, topK = "top_k", topP = "top_p"
    case repetitionPenalty = "repetition_penalty", seed, stopStrings = "stop_strings"
  }

  /// A config with every default unless given.
  public init(maxNewTokens: Int = 128, temperature: Float = 0, topK: Int = 0, topP: Float = 1,
              repetitionPenalty: Float = 1, seed: UInt64 = 0, stopStrings: [String] = []) {
    self.maxNewTokens = maxNewTokens; self.temperature = temperature; self.topK = topK
    self.topP = topP; self.repetitionPenalty = repetitionPenalty; self.seed = seed
    self.stopStrings = stopStrings
  }

  public init(from decoder: Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    let d = GenerationConfig()
    maxNewTokens = try c.decodeIfPresent(Int.self, forKey: .maxNewTokens) ?? d.maxNewTokens
    temperature = try c.decodeIfPresent(Float.self, forKey: .temperature) ?? d.temperature
    topK = try c.decodeIfPresent(Int.self, forKey: .topK) ?? d.topK
    topP = try c.decodeIfPresent(Float.self, forKey: .topP) ?? d.topP
    repetitionPenalty = try c.decodeIfPresent(Float.self, forKey: .repetitionPenalty) ?? d.repetitionPenalty
    seed = try c.decodeIfPresent(UInt64.self, forKey: .seed) ?? d.seed
    stopStrings = try c.decodeIfPresent([String].self, forKey: .stopStrings) ?? d.stopStrings
  }

  /// True when the next token is always the most likely one (no RNG draw).
  public var isGreedy: Bool { temperature == 0 }

  /// Throws the first out-of-range field, named as the CLI flag / config key.
  public func validate() throws(GenerationError) {
    func bad(_ s: String) -> GenerationError { .invalidConfig(s) }
    guard maxNewTokens >= 1 else { throw bad("max-new-tokens must be ≥ 1 (got \(maxNewTokens))") }
    guard temperature >= 0, temperature.isFinite else { throw bad("temperature must be ≥ 0 (got \(temperature))") }
    guard topK >= 0 else { throw bad("top-k must be ≥ 0, 0 = off (got \(topK))") }
    guard topP > 0, topP <= 1 else { throw bad("top-p must be in (0, 1], 1 = off (got \(topP))") }
    guard repetitionPenalty > 0, repetitionPenalty.isFinite else {
      throw bad("repetition-penalty must be > 0, 1 = off (got \(repetitionPenalty))")
    }
    guard !stopStrings.contains("") else { throw bad("stop strings must not be empty") }
  }
}

/// Why generation could not run.
public enum GenerationError: Error, CustomStringConvertible, Equatable {
  /// A `GenerationConfig` field is out of range.
  case invalidConfig(String)
  /// The prompt is empty or does not fit the context.
  case badPrompt(String)
  /// The model returned logits of the wrong size.
  case badLogits(expected: Int, got: Int)

  public var description: String {
    switch self {
    case .invalidConfig(let s): return s
    case .badPrompt(let s): return s
    case .badLogits(let e, let g): return "the model returned \(g) logits, expected the vocabulary size \(e)"
    }
  }
}
