import Foundation
import VKFCore

/// One row's outcome of `BatchGenerator.generate`.
public struct BatchCompletion: Equatable, Sendable {
  /// Generated ids, without the EOS id (but with the tokens of a trimmed stop string).
  public var tokenIDs: [Int]
  /// The continuation up to any stop string.
  public var text: String
  /// Why this row stopped.
  public var stopReason: StopReason
  /// The row's prompt length in tokens.
  public var promptTokens: Int
  /// Σ over the generated tokens (an EOS included) of the entropy of the distribution each
  /// was drawn from (`BatchGenerator.recordsEntropy`; 0 otherwise).
  public var entropySum = 0.0
}

/// Timing of the last `BatchGenerator.generate`.
public struct BatchGenerationStatistics: Equatable, Sendable {
  /// Rows decoded together.
  public var rows = 0
  /// Prompt tokens of every row (padding not counted).
  public var promptTokens = 0
  /// Tokens generated over every row (EOS not counted).
  public var generatedTokens = 0
  /// Decode steps run (each one pass over every row).
  public var steps = 0
  /// Seconds from the start to every row's first token.
  public var prefillSeconds = 0.0
  /// Seconds of the later steps.
  public var decodeSeconds = 0.0
  public init() {}
}

/// Generates continuations of many prompts at once: the prompts are left-padded into one
/// batch (the padding is masked out of attention and positions start after it, so each
/// row computes what it would alone), prefilled in one pass, then every step is one pass over
/// all rows and one device-side draw (`Backend.sampleTokens`) whose token ids — B int32 —
/// are all a step reads back; the next pass reads them where they were written.
///
/// Rows stop on their own (EOS id, stop string, `maxNewTokens`, `contextLimit`); a stopped
/// row keeps its slot until every row is done. At temperature 0 each row's tokens are those
/// `TextGenerator` produces for its prompt alone (same argmax, same repetition penalty);
/// sampled rows draw from the same distribution with the device's own stream
/// (`SamplingParameters`: u from (seed, row, step)), not `Sampler`'s.
public final class BatchGenerator {
  /// The model.
  public let model: DecoderModel
  /// ids → text, for stop strings and the returned text.
  public let decoder: TokenTextDecoder
  /// Any of these ends a row (the id itself is not output).
  public let eosTokenIDs: Set<Int>
  /// The most tokens (prompt + output) one row may hold: the model's position limit.
  public let contextLimit: Int
  /// The most prompt tokens one prefill pass takes per row.
  public let prefillChunk: Int
  /// Keep the cache in the model's training activation arena when it fits
  /// (`DecoderModel.makeKVCache(…, sharingActivations:)`): for generation between steps.
  public let sharesActivationMemory: Bool
  /// Timing of the last call.
  public private(set) var statistics = BatchGenerationStatistics()
  /// Also record each drawn token's entropy (`BatchCompletion.entropySum`; B more floats read
  /// back per step).
  public var recordsEntropy = false
  private var entropyBuffer: Tensor?
  private var cache: KVCache?
  private var presence: Tensor?

  /// A generator over `model`. `contextLimit`: max_position_embeddings (Int.max: none).
  public init(model: DecoderModel, decoder: TokenTextDecoder, eosTokenIDs: [Int], contextLimit: Int = .max,
              prefillChunk: Int = 128, sharesActivationMemory: Bool = false) {
    self.model = model; self.decoder = decoder; self.eosTokenIDs = Set(eosTokenIDs)
    self.contextLimit = contextLimit; self.prefillChunk = prefillChunk
    self.sharesActivationMemory = sharesActivationMemory
  }

  /// Whether the cache now lives in the model's activation arena.
  public var cacheSharesActivations: Bool { cache.map { model.cacheSharesActivations($0) } ?? false }

  /// Bytes the cache, its scratch and the presence marks hold now (kept between calls with
  /// the same number of rows and no longer rows).
  public var byteCount: Int { (cache?.byteCount ?? 0) + 4 * (presence?.count ?? 0) }

  /// Allocates the cache for `rows` rows of up to `capacity` tokens now, so later calls with
  /// that many rows and no more tokens reuse it (a batch of shorter prompts would otherwise
  /// size it for itself, and the next, longer one reallocate).
  public func reserve(rows: Int, capacity: Int) throws {
    _ = try cacheFor(rows: rows, capacity: capacity)
  }

  /// Frees the cache (the next call allocates a new one).
  public func release() { cache = nil; presence = nil }

  /// Continues every prompt (ids, special tokens included): row r of the result is prompt r's.
  public func generate(prompts: [[Int]], config: GenerationConfig) throws -> [BatchCompletion] {
    try config.validate()
    guard !prompts.isEmpty else { throw GenerationError.badPrompt("no prompts to generate from") }
    let vocab = model.shape.vocab
    for (i, p) in prompts.enumerated() {
      guard !p.isEmpty else { throw GenerationError.badPrompt("prompt \(i) is empty (no tokens)") }
      guard p.count < contextLimit else {
        throw GenerationError.badPrompt("prompt \(i) has \(p.count) tokens; the context holds \(contextLimit), leaving no room to generate")
      }
      if let bad = p.first(where: { $0 < 0 || $0 >= vocab }) {
        throw GenerationError.badPrompt("prompt \(i) holds token id \(bad), outside the vocabulary [0, \(vocab))")
      }
    }
    let start = Date()
    let rows = prompts.count, longest = prompts.map(\.count).max() ?? 0
    let cache = try cacheFor(rows: rows, capacity: longest + config.maxNewTokens)
    let pad = prompts.map { longest - $0.count }
    try cache.setPadding(pad.allSatisfy { $0 == 0 } ? [] : pad)
    var ids = [Int32](); ids.reserveCapacity(rows * longest)
    for (r, p) in prompts.enumerated() {
      ids += [Int32](repeating: 0, count: pad[r])
      ids += p.map { Int32($0) }
    }
    let marks = try presenceMarks(prompts, config: config)
    if recordsEntropy, entropyBuffer?.count != rows { entropyBuffer = try model.backend.allocate([rows]) }
    let entropy = recordsEntropy ? entropyBuffer : nil
    try model.append(ids, newTokens: longest, cache: cache)

    var rowsLeft = rows
    var out = prompts.map { BatchCompletion(tokenIDs: [], text: "", stopReason: .maxTokens, promptTokens: $0.count) }
    var done = [Bool](repeating: false, count: rows)
    var streams = prompts.map { _ in IncrementalDecoder(decoder) }
    var stops = prompts.map { _ in StopStringMatcher(config.stopStrings) }
    var parameters = SamplingParameters(temperature: config.temperature, topK: config.topK, topP: config.topP,
                                        repetitionPenalty: config.repetitionPenalty, seed: config.seed)
    var stats = BatchGenerationStatistics()
    stats.rows = rows
    stats.promptTokens = prompts.reduce(0) { $0 + $1.count }
    for step in 0..<config.maxNewTokens {
      parameters.step = UInt32(step)
      let (next, entropies) = try model.drawNext(cache: cache, parameters: parameters, presence: marks, entropy: entropy)
      if step == 0 { stats.prefillSeconds = Date().timeIntervalSince(start) }
      stats.steps += 1
      for r in 0..<rows where !done[r] {
        let id = Int(next[r])
        if let entropies { out[r].entropySum += Double(entropies[r]) }
        var reason: StopReason?
        if eosTokenIDs.contains(id) {
          reason = .eos(id)
        } else {
          out[r].tokenIDs.append(id)
          out[r].text += stops[r].push(streams[r].append(id))
          if let s = stops[r].matched { reason = .stopString(s) }
          else if out[r].tokenIDs.count >= config.maxNewTokens { reason = .maxTokens }
          else if out[r].promptTokens + out[r].tokenIDs.count >= contextLimit { reason = .contextFull }
        }
        if let reason { out[r].stopReason = reason; done[r] = true; rowsLeft -= 1 }
      }
      if rowsLeft == 0 { break }
      try model.appendDrawn(cache: cache)
    }
    for r in 0..<rows where stops[r].matched == nil {
      out[r].text += stops[r].push(streams[r].flush())
      if let s = stops[r].matched { out[r].stopReason = .stopString(s) }
      out[r].text += stops[r].flush()
    }
    stats.generatedTokens = out.reduce(0) { $0 + $1.tokenIDs.count }
    stats.decodeSeconds = Date().timeIntervalSince(start) - stats.prefillSeconds
    statistics = stats
    return out
  }

  /// A cache for `rows` rows of `capacity` tokens: the last one when it fits, else a new one.
  private func cacheFor(rows: Int, capacity: Int) throws -> KVCache {
    if let c = cache, c.batch == rows, c.capacity >= capacity, c.backend === model.backend,
       !sharesActivationMemory || c.borrowsMemory == model.cacheSharesActivations(c) {
      c.reset()
      return c
    }
    cache = nil  // free the old buffers first
    let c = try model.makeKVCache(batch: rows, capacity: capacity, prefillChunk: prefillChunk,
                                  sharingActivations: sharesActivationMemory)
    cache = c
    return c
  }

  /// The presence marks (R, V) of the prompts' tokens, for the repetition penalty (nil: off).
  private func presenceMarks(_ prompts: [[Int]], config: GenerationConfig) throws -> Tensor? {
    guard config.repetitionPenalty != 1 else { return nil }
    let vocab = model.shape.vocab, rows = prompts.count
    if presence?.count != rows * vocab { presence = try model.backend.allocate([rows, vocab], .i32) }
    guard let p = presence else { return nil }
    var marks = [Int32](repeating: 0, count: rows * vocab)
    for (r, prompt) in prompts.enumerated() { for id in prompt { marks[r * vocab + id] = 1 } }
    try model.backend.upload(marks, to: p)
    return p
  }
}
