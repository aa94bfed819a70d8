import VKFCore

/// `BertForSequenceClassification`'s head as a component: the hidden state of each row's
/// first token ([CLS]) → pooler tanh(dense) → classifier logits (B, L). Its buffers live in
/// the encoder's arena.
struct BertClassifierHead {
  /// `bert.pooler.dense` (C → C) and `classifier` (C → L).
  let pooler: Linear, classifier: Linear

  /// Logits into `ar.logits` from the last hidden states (N, C).
  func forward(_ be: Backend, _ ar: BertArena, hidden: Tensor) throws {
    // The first token of each row, gathered as an embedding lookup into the last hidden states.
    try be.embedding(ids: ar.clsRows, table: hidden, into: ar.pooledInput)
    try pooler.forward(be, ar.pooledInput, into: ar.pooled)
    try be.scale(ar.pooled, by: 1, softcap: 1, into: ar.pooled)  // tanh
    try classifier.forward(be, ar.pooled, into: ar.logits)
  }

  /// The classifier's and the pooler's gradients from `ar.dLogits`; with `encoderTrained`,
  /// dL/d(last hidden) into `ar.dResidual` (zero but at the [CLS] rows). Returns whether it did.
  func backward(_ be: Backend, _ ar: BertArena, encoderTrained: Bool) throws -> Bool {
    let rowOnes = try ar.ones.rows(0..<ar.batch)
    try classifier.backward(be, dy: ar.dLogits, x: ar.pooled, dx: ar.dPooled, accumulateInput: false, ones: rowOnes)
    // Through tanh: d = dy ⊙ (1 − y²) = dy − dy ⊙ y ⊙ y.
    try be.mul(ar.dPooled, ar.pooled, into: ar.pooledScratch)
    try be.mul(ar.pooledScratch, ar.pooled, into: ar.pooledScratch)
    try be.add(ar.dPooled, ar.pooledScratch, alpha: -1, into: ar.dPooled)
    try pooler.backward(be, dy: ar.dPooled, x: ar.pooledInput, dx: encoderTrained ? ar.pooledScratch : nil,
                        accumulateInput: false, ones: rowOnes)
    guard encoderTrained else { return false }
    try be.fill(ar.dResidual, value: 0)
    try be.embeddingBackward(ids: ar.clsRows, dOut: ar.pooledScratch, dTable: ar.dResidual)
    return true
  }
}

/// `BertForMaskedLM`'s head as a component, run at the masked tokens only: their last hidden
/// rows → transform dense → activation → LayerNorm → `decoder`, a `LanguageModelHead` over the
/// tied word embeddings plus a bias (in row chunks: no pass holds M × V logits). Its buffers
/// are the arena's `BertMLMBuffers`. Legend: M masked tokens, C hidden, V vocabulary.
struct BertMaskedLMHead {
  let transform: Linear
  let norm: LayerNormParameters
  let decoder: LanguageModelHead
  let activation: Activation
  let eps: Float

  /// Gathers the `m` masked rows of `hidden` (indices and targets already in `h.rows` /
  /// `h.targets`), runs the transform and the decoder's loss chunk by chunk into `h.losses`;
  /// with `gradients`, the decoder's gradients now and dL/d(normed) into `h.dNormed`.
  func forward(_ be: Backend, _ h: BertMLMBuffers, hidden: Tensor, rows m: Int, normalizer: LossNormalizer,
               gradients: Bool) throws {
    let gathered = try h.gathered.rows(0..<m), dense = try h.dense.rows(0..<m), act = try h.act.rows(0..<m)
    let normed = try h.normed.rows(0..<m)
    try be.embedding(ids: try h.rows.rows(0..<m), table: hidden, into: gathered)
    try transform.forward(be, gathered, into: dense)
    try be.activation(activation, dense, into: act)
    try be.layerNorm(act, weight: norm.weight, bias: norm.bias, eps: eps, into: normed,
                     mean: try h.mean.rows(0..<m), rstd: try h.rstd.rows(0..<m))
    for r in decoder.chunks(rows: m) {
      try decoder.lossChunk(be, x: try normed.rows(r), targets: try h.targets.rows(r),
                            logits: try h.logits.view(shape: [r.count, decoder.vocab]), normalizer: normalizer,
                            losses: try h.losses.rows(r), gradients: gradients, dx: try h.dNormed.rows(r),
                            ones: try h.ones.rows(0..<r.count))
    }
  }

  /// Logits (M, V) of the masked rows, recomputed chunk by chunk from the normed rows. Waits.
  func logits(_ be: Backend, _ h: BertMLMBuffers, rows m: Int) throws -> [Float] {
    var out: [Float] = []
    out.reserveCapacity(m * decoder.vocab)
    for r in decoder.chunks(rows: m) {
      let logits = try h.logits.view(shape: [r.count, decoder.vocab])
      try decoder.logits(be, try h.normed.rows(r), into: logits)
      out += try be.floats(logits)
    }
    return out
  }

  /// The transform's gradients from `h.dNormed` (left by the forward); dL/d(last hidden) into
  /// `dHidden`, zero but at the masked tokens.
  func backward(_ be: Backend, _ h: BertMLMBuffers, rows m: Int, ones: Tensor, dHidden: Tensor) throws {
    let r = 0..<m
    let dNormed = try h.dNormed.rows(r), dAct = try h.normed.rows(r), dGathered = try h.act.rows(r)
    // The forward's normed and act rows are free once their gradients are formed: reuse them.
    try be.layerNormBackward(dNormed, x: try h.act.rows(r), weight: norm.weight, mean: try h.mean.rows(r),
                             rstd: try h.rstd.rows(r), dx: dAct, dWeight: norm.weightGrad, dBias: norm.biasGrad)
    try be.activationBackward(activation, dAct, x: try h.dense.rows(r), into: dAct)
    try transform.backward(be, dy: dAct, x: try h.gathered.rows(r), dx: dGathered, accumulateInput: false,
                           ones: try ones.rows(r))
    try be.fill(dHidden, value: 0)
    try be.embeddingBackward(ids: try h.rows.rows(r), dOut: dGathered, dTable: dHidden)
  }
}
