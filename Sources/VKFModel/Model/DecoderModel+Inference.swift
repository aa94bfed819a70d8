import VKFCore

// MARK: - Cached (inference) forward

extension DecoderModel {
  /// A KV cache (and inference scratch) for `batch` rows of up to `capacity` tokens on this
  /// model's backend. `prefillChunk`: the most new tokens one pass takes; its scratch grows
  /// with chunk × capacity (attention scores), so long prompts run in several passes.
  /// `sharingActivations`: keep the keys, values and f32 scratch in the training activation
  /// arena's allocation when it is large enough (`reserve(batch:tokens:)` first) — memory
  /// that is idle between training steps, so generating inside a training loop (GRPO, PPO)
  /// costs no second copy. Such a cache must not be used between a forward and its backward.
  public func makeKVCache(batch: Int, capacity: Int, prefillChunk: Int = 128,
                          sharingActivations: Bool = false) throws -> KVCache {
    try KVCache(shape: shape, backend: backend, batch: batch, capacity: capacity, prefillChunk: prefillChunk,
                borrowing: sharingActivations ? activationArenaTensor : nil)
  }

  /// Whether `cache` lives in this model's current activation arena.
  func cacheSharesActivations(_ cache: KVCache) -> Bool {
    guard cache.borrowsMemory, let arena = activationArenaTensor, let k = cache.keys.first else { return false }
    return k.storage === arena.storage
  }

  /// Appends ids (B, Tn) row-major — every row's next Tn tokens, at positions
  /// `cache.length ..< cache.length + Tn` — to the cache and returns the logits of each row's
  /// last new token, (B, V) row-major. Only those B·V floats are downloaded.
  /// Legend: B = cache.batch, Tn new tokens per row, V vocabulary.
  public func forward(newIDs ids: [Int32], cache: KVCache) throws -> [Float] {
    let b = cache.batch
    guard cache.backend === backend, cache.shape == shape else {
      throw VKFError.other("DecoderModel.forward(newIDs:): the cache was made for another model or backend")
    }
    guard !ids.isEmpty, ids.count % b == 0 else {
      throw VKFError.shapeMismatch(op: "DecoderModel.forward(newIDs:)",
        detail: "\(ids.count) ids do not form \(b) non-empty rows")
    }
    let tn = ids.count / b
    guard cache.length + tn <= cache.capacity else {
      throw VKFError.outOfRange(op: "DecoderModel.forward(newIDs:)",
        detail: "\(cache.length) cached + \(tn) new tokens exceed the cache capacity \(cache.capacity); "
          + "make the cache with a larger capacity")
    }
    let vocab = Int32(shape.vocab)
    if let bad = ids.first(where: { $0 < 0 || $0 >= vocab }) {
      throw VKFError.outOfRange(op: "DecoderModel.forward(newIDs:)", detail: "token id \(bad) ∉ [0, \(vocab))")
    }
    try append(ids, newTokens: tn, cache: cache)
    return try backend.download(try lastLogits(cache), as: Float.self)
  }

  /// Appends ids (B, Tn) row-major in chunks of at most Tc tokens per row; leaves each row's
  /// last hidden state, normed, in the cache's scratch.
  func append(_ ids: [Int32], newTokens tn: Int, cache: KVCache) throws {
    let b = cache.batch
    var start = 0
    while start < tn {
      let count = min(cache.prefillChunk, tn - start)
      var chunk = [Int32](); chunk.reserveCapacity(b * count)
      for row in 0..<b { chunk += ids[(row * tn + start)..<(row * tn + start + count)] }
      try forwardChunk(chunk, newTokens: count, cache: cache)
      start += count
    }
  }

  /// The logits (B, V) of each row's last token so far, computed into the cache's scratch.
  func lastLogits(_ cache: KVCache) throws -> Tensor {
    let sc = cache.scratch, b = cache.batch
    let logits = try sc.logits.leading([b, shape.vocab])
    try lmHead.logits(backend, try sc.lastNormed.leading([b, shape.hidden]), into: logits)
    return logits
  }

  /// Draws each row's next token from its last logits into the scratch's ids, where the next
  /// `appendDrawn` reads them, and returns them (B): the only download of a decode step.
  /// `entropy` (B): each row's entropy of the distribution drawn from, downloaded too.
  func drawNext(cache: KVCache, parameters: SamplingParameters, presence: Tensor?,
                entropy: Tensor? = nil) throws -> (ids: [Int32], entropy: [Float]?) {
    let ids = try cache.scratch.ids.leading([cache.batch])
    try backend.sampleTokens(logits: try lastLogits(cache), presence: presence, parameters: parameters, into: ids,
                             entropy: entropy)
    return (try backend.download(ids, as: Int32.self), try entropy.map { try backend.floats($0) })
  }

  /// Appends the tokens `drawNext` left on the device, one per row.
  func appendDrawn(cache: KVCache) throws {
    guard cache.length < cache.capacity else {
      throw VKFError.outOfRange(op: "DecoderModel.appendDrawn", detail: "the cache is full (\(cache.capacity) tokens)")
    }
    try forwardChunk(nil, newTokens: 1, cache: cache)
  }

  /// One pass over ids (B, Tn) with Tn ≤ prefillChunk (nil: Tn = 1 and the ids are already
  /// in the scratch); leaves each row's last hidden state, normed, in `scratch.lastNormed` (B, C).
  private func forwardChunk(_ ids: [Int32]?, newTokens tn: Int, cache: KVCache) throws {
    let be = backend, s = shape, sc = cache.scratch, b = cache.batch, past = cache.length
    let n = b * tn
    if let ids { try be.upload(ids, to: try sc.ids.leading([n])) }
    try be.upload(cache.positions(newTokens: tn), to: try sc.positions.leading([n]))
    let x = try sc.x.leading([n, s.hidden])
    try be.embedding(ids: try sc.ids.leading([n]), table: weights.embedding, into: x)
    if s.embeddingScale != 1 { try be.scale(x, by: s.embeddingScale, into: x) }
    for l in 0..<s.layers {
      let layer = CachedDecoderLayer(shape: s, weights: weights.layers[l], invFreq: ropeTable(layer: l),
                                     keys: cache.keys[l], values: cache.values[l], scratch: sc,
                                     window: s.window(layer: l),
                                     keyStarts: cache.padding.isEmpty ? nil : sc.keyStarts)
      try layer.forward(be, batch: b, newTokens: tn, past: past)
    }
    cache.length = past + tn
    // Gather each row's last token (row·Tn + Tn − 1) as an embedding lookup into x's rows.
    try be.upload((0..<b).map { Int32($0 * tn + tn - 1) }, to: sc.lastRows)
    let last = try sc.last.leading([b, s.hidden])
    try be.embedding(ids: sc.lastRows, table: x, into: last)
    try be.rmsNorm(last, weight: weights.finalNorm, weightOffset: s.normWeightOffset, eps: s.rmsNormEps,
                   into: try sc.lastNormed.leading([b, s.hidden]), rstd: try sc.lastRstd.leading([b]))
  }
}
