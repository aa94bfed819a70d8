import VKFCore

/// A vocabulary projection and its cross-entropy, fused chunk by chunk (Liger's fused linear
/// cross-entropy, over rows): each chunk's logits, its per-token losses and — with gradients —
/// at once dL/dx and the projection's own gradients, so no pass holds N × V logits.
///
/// The decoders' LM head (`lm_head`, or the tied embedding; Gemma 2's final soft-cap) and
/// BERT's masked-LM decoder (the tied word embeddings plus a bias) are both this head over
/// their own projection. It holds no buffers: the caller's arena lends the chunk's logits.
/// Legend: n rows of a chunk, C input width, V vocabulary.
public struct LanguageModelHead {
  /// logits = x·Wᵀ (+ b), W (V, C); its gradients accumulate when trained.
  public var projection: Linear
  /// `final_logit_softcapping`: logits become cap·tanh(logits / cap); 0 = none.
  public var softcap: Float
  /// Rows per chunk.
  public var chunkRows: Int
  /// The loss's logits are multiplied by this first (1/temperature: GRPO's log-probs are
  /// log_softmax(logits / T)); 1 = none. Not combined with a soft-cap.
  public var logitScale: Float = 1

  /// The ignored target (PyTorch's default `ignore_index`).
  public static let ignoreIndex: Int32 = -100

  public init(projection: Linear, softcap: Float = 0, chunkRows: Int) {
    self.projection = projection; self.softcap = softcap; self.chunkRows = max(1, chunkRows)
  }

  /// The vocabulary size V.
  public var vocab: Int { projection.outFeatures }

  /// The row ranges of `rows` rows, `chunkRows` at a time.
  public func chunks(rows: Int) -> [Range<Int>] {
    stride(from: 0, to: rows, by: chunkRows).map { $0..<min(rows, $0 + chunkRows) }
  }

  /// Logits (n, V) of rows x (n, C), soft-capped: inference, where the caller wants them all.
  public func logits(_ be: Backend, _ x: Tensor, into logits: Tensor) throws {
    try projection.forward(be, x, into: logits)
    if softcap > 0 { try be.scale(logits, by: 1, softcap: softcap, into: logits) }
  }

  /// One chunk: logits of x (n, C) into `logits` (n, V scratch), the per-token losses
  /// −log p(target) / normalizer into `losses` (n; 0 at ignored targets). With `gradients`:
  /// dL/dlogits (in place of the logits, each row × `tokenWeights` when given), then dx
  /// (n, C; overwritten, skipped when nil) and the projection's gradients. `ones` (n): row
  /// sums of a bias gradient.
  public func lossChunk(_ be: Backend, x: Tensor, targets: Tensor, logits: Tensor, normalizer: LossNormalizer,
                        losses: Tensor, gradients: Bool, tokenWeights: Tensor? = nil, dx: Tensor?,
                        ones: Tensor) throws {
    try projection.forward(be, x, into: logits)
    if logitScale != 1 { try be.scale(logits, by: logitScale, into: logits) }
    try be.crossEntropy(logits: logits, targets: targets, ignoreIndex: Self.ignoreIndex, normalizer: normalizer,
                        softcap: softcap, losses: losses, dLogits: gradients ? logits : nil)
    guard gradients else { return }
    // d(scaled)/d(logits) = logitScale.
    if logitScale != 1 { try be.scale(logits, by: logitScale, into: logits) }
    if let tokenWeights { try be.scaleRows(logits, weights: tokenWeights, into: logits) }
    try projection.backward(be, dy: logits, x: x, dx: dx, accumulateInput: false, ones: ones)
  }
}
