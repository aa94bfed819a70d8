import Foundation

/// A causal LM seen one sequence at a time: feed tokens, get the next token's logits.
public protocol TokenPredictor: AnyObject {
  /// Logits per step (the vocabulary size).
  var vocabularySize: Int { get }
  /// The most tokens (prompt + output) the context holds.
  var capacity: Int { get }
  /// Forgets the context.
  func reset() throws
  /// Appends `ids` to the context; returns the logits (V) of the token after them.
  func append(_ ids: [Int]) throws -> [Float]
}

/// A `DecoderModel` with a batch-1 KV cache: the prompt is one prefill, each new token one
/// single-token pass.
public final class CachedLlamaPredictor: TokenPredictor {
  /// The model.
  public let model: DecoderModel
  /// Its cache (batch 1).
  public let cache: KVCache

  /// A predictor holding up to `capacity` tokens.
  public init(model: DecoderModel, capacity: Int, prefillChunk: Int = 128) throws {
    self.model = model
    cache = try model.makeKVCache(batch: 1, capacity: capacity, prefillChunk: prefillChunk)
  }

  public var vocabularySize: Int { model.shape.vocab }
  public var capacity: Int { cache.capacity }
  public func reset() { cache.reset() }
  public func append(_ ids: [Int]) throws -> [Float] {
    try model.forward(newIDs: ids.map { Int32(truncatingIfNeeded: $0) }, cache: cache)
  }
}

/// Why generation stopped.
public enum StopReason: Equatable, Sendable {
  /// The model produced this end-of-sequence id.
  case eos(Int)
  /// The output contained this stop string (trimmed from the text).
  case stopString(String)
  /// `maxNewTokens` tokens were generated.
  case maxTokens
  /// The context (prompt + output) reached the predictor's capacity.
  case contextFull
}

/// The outcome of one `TextGenerator.generate`.
public struct GenerationResult: Equatable, Sendable {
  /// Generated ids, without the EOS id (but with the tokens of a trimmed stop string).
  public var tokenIDs: [Int]
  /// The text streamed to the caller: the continuation up to any stop string.
  public var text: String
  /// Why it stopped.
  public var stopReason: StopReason
  /// Prompt length in tokens.
  public var promptTokens: Int
  /// Seconds from the start to the prompt's logits (prefill).
  public var prefillSeconds: Double
  /// Seconds spent producing the tokens after the first (decode steps).
  public var decodeSeconds: Double
}

/// The generation loop: prefill the prompt, then sample, stream, and stop at an EOS id, a
/// stop string, `maxNewTokens`, or a full context.
public struct TextGenerator {
  /// The model.
  public let predictor: TokenPredictor
  /// ids → text for streaming and stop strings.
  public let decoder: TokenTextDecoder
  /// Any of these ends generation (the id itself is not output).
  public let eosTokenIDs: Set<Int>

  /// A generator over `predictor`, decoding with `decoder`.
  public init(predictor: TokenPredictor, decoder: TokenTextDecoder, eosTokenIDs: [Int]) {
    self.predictor = predictor; self.decoder = decoder; self.eosTokenIDs = Set(eosTokenIDs)
  }

  /// Generates a continuation of `prompt` (ids, special tokens included), calling `onText`
  /// with each piece of complete text as soon as it is known not to belong to a stop string.
  public func generate(prompt: [Int], config: GenerationConfig,
                       onText: (String) throws -> Void = { _ in }) throws -> GenerationResult {
    try config.validate()
    guard !prompt.isEmpty else { throw GenerationError.badPrompt("the prompt is empty (no tokens)") }
    guard prompt.count < predictor.capacity else {
      throw GenerationError.badPrompt("the prompt has \(prompt.count) tokens; the context holds "
        + "\(predictor.capacity), leaving no room to generate")
    }
    try predictor.reset()
    var sampler = Sampler(config: config)
    var stream = IncrementalDecoder(decoder)
    var stops = StopStringMatcher(config.stopStrings)
    var context = prompt, output: [Int] = [], text = ""
    func emit(_ s: String) throws {
      guard !s.isEmpty else { return }
      text += s
      try onText(s)
    }
    let start = Date()
    var logits = try predictor.append(prompt)
    let prefillSeconds = Date().timeIntervalSince(start)
    var reason = StopReason.maxTokens
    while true {
      guard logits.count == predictor.vocabularySize else {
        throw GenerationError.badLogits(expected: predictor.vocabularySize, got: logits.count)
      }
      let id = sampler.next(logits: logits, context: context)
      if eosTokenIDs.contains(id) { reason = .eos(id); break }
      output.append(id); context.append(id)
      try emit(stops.push(stream.append(id)))
      if let s = stops.matched { reason = .stopString(s); break }
      if output.count >= config.maxNewTokens { reason = .maxTokens; break }
      if context.count >= predictor.capacity { reason = .contextFull; break }
      logits = try predictor.append([id])
    }
    if stops.matched == nil {
      try emit(stops.push(stream.flush()))
      if let s = stops.matched { reason = .stopString(s) }
      try emit(stops.flush())
    }
    return GenerationResult(tokenIDs: output, text: text, stopReason: reason, promptTokens: prompt.count,
                            prefillSeconds: prefillSeconds,
                            decodeSeconds: Date().timeIntervalSince(start) - prefillSeconds)
  }
}
