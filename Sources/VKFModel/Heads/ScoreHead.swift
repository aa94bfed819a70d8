import VKFCore

/// A decoder's sequence-scoring head as a component: `score.weight` (1, C) applied to the final
/// normed hidden state of each row's last token whose id is not the pad id — transformers'
/// `<Model>ForSequenceClassification` with `num_labels` 1 and `pad_token_id` (a reward model).
/// The decoder runs up to its hidden states (`DecoderModel.forwardHidden`); this head scores
/// them and takes the loss's per-score gradient back to dL/dhidden and its own gradient.
/// Legend: N = B·T tokens, C hidden.
public final class ScoreHead {
  /// score.weight (1, C), as transformers names it.
  public let weight: Tensor
  /// Its accumulated gradient.
  public let gradient: Tensor
  /// The parameter name in a merged model (`score.weight`).
  public static let parameterName = "score.weight"
  /// The key in a PEFT adapter (`modules_to_save`).
  public static let peftKey = "base_model.model.score.weight"

  /// A head with transformers' init: normal(0, initializer_range) from `seed`.
  public init(hidden: Int, backend: Backend, seed: UInt64, std: Double = 0.02) throws {
    var rng = SplitMix64(seed: seed)
    weight = try backend.tensor(rng.normals(count: hidden, std: std), shape: [1, hidden])
    gradient = try backend.allocate([1, hidden])
    try backend.fill(gradient, value: 0)
  }

  /// A head with given values (loading a trained reward model).
  public init(values: [Float], backend: Backend) throws {
    weight = try backend.tensor(values, shape: [1, values.count])
    gradient = try backend.allocate([1, values.count])
    try backend.fill(gradient, value: 0)
  }

  /// The flat index (r·T + t) of each row's scored token — its last whose id is not `padID` —
  /// or nil for a row of padding only.
  public static func scoredPositions(_ ids: [Int32], rows: Int, padID: Int) -> [Int?] {
    let t = ids.count / max(rows, 1)
    return (0..<rows).map { r in (0..<t).last { Int(ids[r * t + $0]) != padID }.map { r * t + $0 } }
  }

  /// Every token's score h·wᵀ (N, 1) from hidden states h (N, C).
  public func tokenScores(_ be: Backend, hidden h: Tensor, into scores: Tensor) throws {
    try be.matmul(h, weight, into: scores, transposeA: false, transposeB: true, alpha: 1, beta: 0)
  }

  /// Each row's score (rows) on the device: the token scores masked by `selector` (N: 1 at
  /// each row's scored token) and summed per row with `ones` (≥ T). `tokenScores` (N, 1) and
  /// `masked` (N) are scratch. Ops only (recordable).
  public func rowScores(_ be: Backend, hidden h: Tensor, selector: Tensor, tokenScores: Tensor, masked: Tensor,
                        ones: Tensor, rows: Int, into scores: Tensor) throws {
    let n = h.rowCount, t = n / max(rows, 1)
    try self.tokenScores(be, hidden: h, into: tokenScores)
    try be.mul(try tokenScores.reshaped([n]), selector, into: masked)
    try be.matmul(try masked.reshaped([rows, t]), try ones.view(shape: [t, 1]), into: try scores.reshaped([rows, 1]),
                  transposeA: false, transposeB: false, alpha: 1, beta: 0)
  }

  /// From per-token coefficients c (N, 1; alpha·c = dL/dscore at each scored token, 0
  /// elsewhere): the head's gradient += alpha·cᵀ·h and dL/dh = alpha·c·w (overwritten, or
  /// added to when `accumulating`: another head shares the hidden states).
  public func backward(_ be: Backend, coefficients c: Tensor, hidden h: Tensor, alpha: Float,
                       dHidden: Tensor, accumulating: Bool = false) throws {
    try be.matmul(c, h, into: gradient, transposeA: true, transposeB: false, alpha: alpha, beta: 1)
    try be.matmul(c, weight, into: dHidden, transposeA: false, transposeB: false, alpha: alpha, beta: accumulating ? 1 : 0)
  }
}
