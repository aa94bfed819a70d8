import VKFCore

/// BERT for sequence classification or masked-LM (transformers' `BertForSequenceClassification`,
/// `BertForMaskedLM`) as an explicit forward and backward over `Backend` ops:
/// word + position + token-type embeddings → LayerNorm → post-LN layers
/// (h1 = LN(x + o(attn(q(x), k(x), v(x)))), y = LN(h1 + out(gelu(inter(h1))))) → either pooler
/// tanh(dense(hidden of [CLS])) → classifier → cross-entropy over the labels, or, at the masked
/// tokens only, dense → act → LayerNorm → word embeddingsᵀ + bias → cross-entropy over the
/// vocabulary (in row chunks, as the decoders' LM head: no pass holds M × V logits).
///
/// Rows are right-padded; `lengths` says how many tokens of each row are real and the
/// attention of every query sees only those keys (transformers' attention_mask). Dropout is
/// not applied (the model runs as in `eval()`; see `BertConfig.hiddenDropout`).
/// Legend: B rows, T tokens per row, N = B·T, C hidden, NH heads, HS head size, F MLP width,
/// L labels.
public final class BertModel {
  public let weights: BertWeights
  public var config: BertConfig { weights.config }
  public var backend: Backend { weights.backend }
  private var arenas: [Key: BertArena] = [:]
  private var arena: BertArena?
  private enum Pending { case none, classifier, maskedLM(rows: Int) }
  private var pending = Pending.none
  /// The per-row losses of the last pass with labels.
  private var lastLosses: Tensor?
  private struct Key: Hashable { let batch: Int, tokens: Int }

  public init(weights: BertWeights) { self.weights = weights }

  /// The ignored label.
  public static let ignoreIndex: Int32 = -100

  /// Runs the model on ids (B, T) row-major with `lengths` (B) real tokens per row (the rest
  /// padding) and token types `typeIDs` (nil: all 0). With `labels` (B; −100 ignored) computes
  /// the per-row losses, divided by `lossNormalizer` (default: the labelled rows); with
  /// `computeGradients` also dL/dlogits for `backward()`.
  public func forward(ids: [Int32], typeIDs: [Int32]? = nil, lengths: [Int32], batch: Int, labels: [Int32]? = nil,
                      lossNormalizer: Float? = nil, computeGradients: Bool = false) throws {
    let op = "BertModel.forward"
    guard weights.classifier != nil else { throw VKFError.other("\(op): the model has the masked-LM head (forwardMaskedLM)") }
    if let labels {
      guard labels.count == batch else {
        throw VKFError.shapeMismatch(op: op, detail: "\(labels.count) labels for \(batch) rows")
      }
      if let bad = labels.first(where: { $0 != Self.ignoreIndex && ($0 < 0 || Int($0) >= weights.numLabels) }) {
        throw VKFError.outOfRange(op: op, detail: "label \(bad) ∉ [0, \(weights.numLabels))")
      }
    } else if computeGradients {
      throw VKFError.other("\(op): computeGradients needs labels")
    }
    let ar = try prepare(ids: ids, typeIDs: typeIDs, lengths: lengths, batch: batch, op: op)
    let be = backend
    guard let head = classifierHead else { throw VKFError.other("\(op): no classifier") }
    try head.forward(be, ar, hidden: ar.hidden[config.layers])
    guard let labels else { return }
    try be.upload(labels, to: ar.labels)
    let labelled = labels.filter { $0 != Self.ignoreIndex }.count
    try be.crossEntropy(logits: ar.logits, targets: ar.labels, ignoreIndex: Self.ignoreIndex,
                        normalizer: .value(lossNormalizer ?? Float(max(labelled, 1))), softcap: 0,
                        losses: ar.losses, dLogits: computeGradients ? ar.dLogits : nil)
    lastLosses = ar.losses
    pending = computeGradients ? .classifier : .none
  }

  /// Masked-LM forward: `targets` (B, T) hold the original id at each masked token and −100
  /// elsewhere; the loss is the cross-entropy at the masked tokens, divided by
  /// `lossNormalizer` (default: their count). With `computeGradients`, the head's gradients
  /// (the tied word embeddings' included) are accumulated now and `backward()` does the rest.
  public func forwardMaskedLM(ids: [Int32], typeIDs: [Int32]? = nil, lengths: [Int32], batch: Int, targets: [Int32],
                              lossNormalizer: Float? = nil, computeGradients: Bool = false) throws {
    let op = "BertModel.forwardMaskedLM", c = config
    guard weights.mlmTransform != nil else {
      throw VKFError.other("\(op): the model has the classification head (forward)")
    }
    guard targets.count == ids.count else {
      throw VKFError.shapeMismatch(op: op, detail: "\(targets.count) targets for \(ids.count) ids")
    }
    if let bad = targets.first(where: { $0 != Self.ignoreIndex && ($0 < 0 || Int($0) >= c.vocabSize) }) {
      throw VKFError.outOfRange(op: op, detail: "target \(bad) ∉ [0, \(c.vocabSize)) ∪ {−100}")
    }
    let masked = targets.indices.filter { targets[$0] != Self.ignoreIndex }
    guard !masked.isEmpty else { throw VKFError.other("\(op): no token is masked (every target is −100)") }
    let ar = try prepare(ids: ids, typeIDs: typeIDs, lengths: lengths, batch: batch, op: op, maskedLM: true)
    guard let h = ar.mlm, let head = maskedLMHead(chunkRows: h.chunkRows) else {
      throw VKFError.other("\(op): arena without masked-LM buffers")
    }
    let be = backend, m = masked.count
    try be.upload(masked.map { Int32($0) }, to: try h.rows.rows(0..<m))
    try be.upload(masked.map { targets[$0] }, to: try h.targets.rows(0..<m))
    try head.forward(be, h, hidden: ar.hidden[c.layers], rows: m, normalizer: .value(lossNormalizer ?? Float(m)),
                     gradients: computeGradients)
    lastLosses = try h.losses.rows(0..<m)
    maskedRows = m
    pending = computeGradients ? .maskedLM(rows: m) : .none
  }

  /// Logits (M, V) at the masked tokens of the last `forwardMaskedLM`, in (B, T) order,
  /// recomputed chunk by chunk from the head's normed rows (valid until `backward()`, which
  /// reuses them). Waits.
  public func maskedLMLogits() throws -> [Float] {
    guard let ar = arena, let h = ar.mlm, let m = maskedRows, let head = maskedLMHead(chunkRows: h.chunkRows) else {
      throw VKFError.other("BertModel.maskedLMLogits: run forwardMaskedLM first")
    }
    return try head.logits(backend, h, rows: m)
  }

  /// The masked-LM head over this model's weights (nil for the classification head).
  private func maskedLMHead(chunkRows: Int) -> BertMaskedLMHead? {
    let w = weights
    guard let transform = w.mlmTransform, let norm = w.mlmNorm, let bias = w.mlmBias else { return nil }
    let decoder = Linear(weight: w.wordEmbeddings, bias: bias, weightGrad: w.wordEmbeddingsGrad, biasGrad: w.mlmBiasGrad)
    return BertMaskedLMHead(transform: transform, norm: norm, decoder: LanguageModelHead(projection: decoder, chunkRows: chunkRows),
                            activation: config.activation, eps: config.layerNormEps)
  }

  /// The classification head over this model's weights (nil for the masked-LM head).
  private var classifierHead: BertClassifierHead? {
    guard let pooler = weights.pooler, let classifier = weights.classifier else { return nil }
    return BertClassifierHead(pooler: pooler, classifier: classifier)
  }

  /// Masked tokens of the last `forwardMaskedLM` whose head rows are intact (nil after `backward`).
  private var maskedRows: Int?

  /// Checks the inputs, uploads them into the arena of their shape and runs the encoder.
  private func prepare(ids: [Int32], typeIDs: [Int32]?, lengths: [Int32], batch: Int, op: String,
                       maskedLM: Bool = false) throws -> BertArena {
    let c = config
    guard batch > 0, !ids.isEmpty, ids.count % batch == 0 else {
      throw VKFError.shapeMismatch(op: op, detail: "\(ids.count) ids do not form \(batch) rows")
    }
    let t = ids.count / batch
    guard t <= c.maxPositions else {
      throw VKFError.outOfRange(op: op, detail: "rows of \(t) tokens exceed max_position_embeddings \(c.maxPositions)")
    }
    if let bad = ids.first(where: { $0 < 0 || Int($0) >= c.vocabSize }) {
      throw VKFError.outOfRange(op: op, detail: "token id \(bad) ∉ [0, \(c.vocabSize))")
    }
    let types = typeIDs ?? [Int32](repeating: 0, count: ids.count)
    guard types.count == ids.count else {
      throw VKFError.shapeMismatch(op: op, detail: "\(types.count) token types for \(ids.count) ids")
    }
    if let bad = types.first(where: { $0 < 0 || Int($0) >= c.typeVocabSize }) {
      throw VKFError.outOfRange(op: op, detail: "token type \(bad) ∉ [0, \(c.typeVocabSize))")
    }
    guard lengths.count == batch, lengths.allSatisfy({ $0 >= 1 && Int($0) <= t }) else {
      throw VKFError.shapeMismatch(op: op, detail: "lengths must be \(batch) values in [1, \(t)]")
    }
    let ar = try arena(batch: batch, tokens: t, maskedLM: maskedLM)
    let be = backend
    try be.upload(ids, to: ar.ids)
    try be.upload(types, to: ar.typeIDs)
    try be.upload(lengths, to: ar.lengths)
    pending = .none
    lastLosses = nil
    maskedRows = nil
    try trunk(ar)
    return ar
  }

  /// Classifier logits (B, L) of the last `forward`, row-major. Waits.
  public func logits() throws -> [Float] {
    guard let ar = arena else { throw VKFError.other("BertModel.logits: run forward first") }
    return try backend.floats(ar.logits)
  }

  /// Σ of the last forward's per-row losses (its mean loss, or its share of the normalizer). Waits.
  public func loss() throws -> Float {
    guard let losses = lastLosses else { throw VKFError.other("BertModel.loss: run a forward with labels first") }
    return Float(try backend.floats(losses).reduce(0.0) { $0 + Double($1) })
  }

  // MARK: - Forward

  private func trunk(_ ar: BertArena) throws {
    arena = ar
    let be = backend, w = weights, c = config
    try be.embedding(ids: ar.ids, table: w.wordEmbeddings, into: ar.embedded)
    try be.embedding(ids: ar.positions, table: w.positionEmbeddings, into: ar.s1)
    try be.add(ar.embedded, ar.s1, alpha: 1, into: ar.embedded)
    try be.embedding(ids: ar.typeIDs, table: w.typeEmbeddings, into: ar.s1)
    try be.add(ar.embedded, ar.s1, alpha: 1, into: ar.embedded)
    let en = w.embeddingNorm
    try be.layerNorm(ar.embedded, weight: en.weight, bias: en.bias, eps: c.layerNormEps, into: ar.hidden[0],
                     mean: ar.embeddingMean, rstd: ar.embeddingRstd)
    for l in 0..<c.layers { try layerForward(l, ar) }
  }

  private func layerForward(_ l: Int, _ ar: BertArena) throws {
    let be = backend, c = config, w = weights.layers[l], a = ar.saved[l]
    let x = ar.hidden[l], (b, t, nh, hs) = (ar.batch, ar.tokens, c.heads, c.headDim)
    for (proj, out) in [(w.query, a.q), (w.key, a.k), (w.value, a.v)] {
      try proj.forward(be, x, into: ar.s1)
      try be.permute(try ar.s1.reshaped([b, t, nh, hs]), dims: [0, 2, 1, 3], into: out)
    }
    try be.attention(q: a.q, k: a.k, v: a.v, scale: c.attentionScale, mask: ar.mask,
                     into: try ar.s2.reshaped([b, nh, t, hs]), lse: a.lse)
    try be.permute(try ar.s2.reshaped([b, nh, t, hs]), dims: [0, 2, 1, 3], into: try a.attn.reshaped([b, t, nh, hs]))
    try w.attentionOutput.forward(be, a.attn, into: a.preNorm1)
    try be.add(a.preNorm1, x, alpha: 1, into: a.preNorm1)
    let n1 = w.attentionNorm, n2 = w.outputNorm
    try be.layerNorm(a.preNorm1, weight: n1.weight, bias: n1.bias, eps: c.layerNormEps, into: a.h1,
                     mean: a.mean1, rstd: a.rstd1)
    try w.intermediate.forward(be, a.h1, into: a.inter)
    try be.activation(c.activation, a.inter, into: a.act)
    try w.output.forward(be, a.act, into: a.preNorm2)
    try be.add(a.preNorm2, a.h1, alpha: 1, into: a.preNorm2)
    try be.layerNorm(a.preNorm2, weight: n2.weight, bias: n2.bias, eps: c.layerNormEps, into: ar.hidden[l + 1],
                     mean: a.mean2, rstd: a.rstd2)
  }

  // MARK: - Backward

  /// Accumulates the gradients of the last forward's loss into the weights' gradients.
  public func backward() throws {
    guard let ar = arena else { throw VKFError.other("BertModel.backward: run a forward first") }
    let w = weights
    // Anything below the head with a gradient or an adapter: the encoder's backward must run.
    var encoderTrained = w.wordEmbeddingsGrad != nil || w.embeddingNorm.weightGrad != nil
    w.updateProjections { name, linear in
      if !name.hasSuffix("pooler.dense"), linear.isTrained { encoderTrained = true }
    }
    encoderTrained = encoderTrained || w.layers.contains { $0.attentionNorm.weightGrad != nil || $0.outputNorm.weightGrad != nil }
    switch pending {
    case .none:
      throw VKFError.other("BertModel.backward: call a forward with labels and computeGradients: true first")
    case .classifier:
      pending = .none
      guard let head = classifierHead, try head.backward(backend, ar, encoderTrained: encoderTrained) else { return }
    case .maskedLM(let m):
      pending = .none
      maskedRows = nil
      guard let h = ar.mlm, let head = maskedLMHead(chunkRows: h.chunkRows) else { return }
      try head.backward(backend, h, rows: m, ones: ar.ones, dHidden: ar.dResidual)
    }
    guard encoderTrained else { return }
    try encoderBackward(ar)
  }

  /// From dL/d(last hidden) in `dResidual` through every layer and the embeddings.
  private func encoderBackward(_ ar: BertArena) throws {
    let be = backend, w = weights, c = config
    for l in stride(from: c.layers - 1, through: 0, by: -1) { try layerBackward(l, ar) }
    // Embeddings: through their LayerNorm, then into each table at its ids.
    let en = w.embeddingNorm
    try be.layerNormBackward(ar.dResidual, x: ar.embedded, weight: en.weight, mean: ar.embeddingMean,
                             rstd: ar.embeddingRstd, dx: ar.s1, dWeight: en.weightGrad, dBias: en.biasGrad)
    for (ids, grad) in [(ar.ids, w.wordEmbeddingsGrad), (ar.positions, w.positionEmbeddingsGrad),
                        (ar.typeIDs, w.typeEmbeddingsGrad)] {
      if let grad { try be.embeddingBackward(ids: ids, dOut: ar.s1, dTable: grad) }
    }
  }

  /// dL/dy in `dResidual` → dL/dx in `dResidual`, accumulating the layer's gradients.
  private func layerBackward(_ l: Int, _ ar: BertArena) throws {
    let be = backend, c = config, w = weights.layers[l], a = ar.saved[l], ones = ar.ones
    let x = ar.hidden[l], (b, t, nh, hs) = (ar.batch, ar.tokens, c.heads, c.headDim)
    let n1 = w.attentionNorm, n2 = w.outputNorm
    // y = LN2(h1 + out(act)): dPre2 → s1
    try be.layerNormBackward(ar.dResidual, x: a.preNorm2, weight: n2.weight, mean: a.mean2, rstd: a.rstd2, dx: ar.s1,
                             dWeight: n2.weightGrad, dBias: n2.biasGrad)
    try w.output.backward(be, dy: ar.s1, x: a.act, dx: ar.dWide, accumulateInput: false, ones: ones)
    try be.activationBackward(c.activation, ar.dWide, x: a.inter, into: ar.dWide)
    try w.intermediate.backward(be, dy: ar.dWide, x: a.h1, dx: ar.s2, accumulateInput: false, ones: ones)
    try be.add(ar.s2, ar.s1, alpha: 1, into: ar.s2)  // dL/dh1
    // h1 = LN1(x + o(attn)): dPre1 → s3 (also the residual's share of dL/dx)
    try be.layerNormBackward(ar.s2, x: a.preNorm1, weight: n1.weight, mean: a.mean1, rstd: a.rstd1, dx: ar.s3,
                             dWeight: n1.weightGrad, dBias: n1.biasGrad)
    try w.attentionOutput.backward(be, dy: ar.s3, x: a.attn, dx: ar.s4, accumulateInput: false, ones: ones)
    let head = { (t4: Tensor) in try t4.reshaped([b, nh, t, hs]) }, token = { (t4: Tensor) in try t4.reshaped([b, t, nh, hs]) }
    try be.permute(try token(ar.s4), dims: [0, 2, 1, 3], into: try head(ar.s5))      // dOut, head-major
    try be.permute(try token(a.attn), dims: [0, 2, 1, 3], into: try head(ar.s4))     // out, head-major
    try be.attentionBackward(try head(ar.s5), q: a.q, k: a.k, v: a.v, out: try head(ar.s4), lse: a.lse,
                             scale: c.attentionScale, mask: ar.mask, delta: ar.delta, dq: try head(ar.s1),
                             dk: try head(ar.s2), dv: try head(ar.s6))
    try be.permute(try head(ar.s1), dims: [0, 2, 1, 3], into: try token(ar.s4))
    try be.permute(try head(ar.s2), dims: [0, 2, 1, 3], into: try token(ar.s5))
    try be.permute(try head(ar.s6), dims: [0, 2, 1, 3], into: try token(ar.s1))
    try w.query.backward(be, dy: ar.s4, x: x, dx: ar.dResidual, accumulateInput: false, ones: ones)
    try w.key.backward(be, dy: ar.s5, x: x, dx: ar.dResidual, accumulateInput: true, ones: ones)
    try w.value.backward(be, dy: ar.s1, x: x, dx: ar.dResidual, accumulateInput: true, ones: ones)
    try be.add(ar.dResidual, ar.s3, alpha: 1, into: ar.dResidual)
  }

  // MARK: - Arena

  private func arena(batch: Int, tokens: Int, maskedLM: Bool) throws -> BertArena {
    let key = Key(batch: batch, tokens: tokens)
    if let a = arenas[key], (a.mlm != nil) == maskedLM { return a }
    // One shape's buffers at a time: a new shape releases the old ones first.
    arenas = [:]; arena = nil
    let a = try BertArena(config: config, labels: weights.numLabels, batch: batch, tokens: tokens, maskedLM: maskedLM,
                          backend: backend)
    arenas[key] = a
    return a
  }

  /// Device bytes of a (batch, tokens) pass's buffers (the memory estimate).
  public static func activationBytes(config: BertConfig, head: BertHead, batch: Int, tokens: Int) -> Int {
    var labels = 0, maskedLM = false
    switch head {
    case .classifier(let n): labels = n
    case .maskedLM: maskedLM = true
    }
    return BertArena.elements(config: config, labels: labels, batch: batch, tokens: tokens, maskedLM: maskedLM) * 4
  }
}
