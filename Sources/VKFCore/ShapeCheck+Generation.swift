// Shape checks of the generation ops (sampling, the left-padding key mask).

extension ShapeCheck {
  /// Returns (rows, vocab) of `sampleTokens`: logits (R, V) f32, presence (R, V) i32 or nil,
  /// ids (R) i32; V < 2²⁴ (the kernel counts tokens in f32).
  public static func sampleTokens(logits: Tensor, presence: Tensor?, parameters p: SamplingParameters,
                                  ids: Tensor, entropy: Tensor? = nil) throws -> (rows: Int, vocab: Int) {
    let op = Op.sampleTokens
    try dtype(op, .f32, logits, entropy)
    try dtype(op, .i32, ids, presence)
    guard logits.rank == 2 else { throw fail(op, "logits \(logits): (rows, vocab) required") }
    let (rows, vocab) = (logits.shape[0], logits.shape[1])
    guard vocab > 0, vocab < 1 << 24 else { throw fail(op, "vocabulary \(vocab) must lie in [1, 2²⁴)") }
    try count(op, rows, ids, entropy)
    if let entropy { try noOverlap(op, output: entropy, inputs: logits, ids, presence) }
    try count(op, logits.count, presence)
    guard p.temperature >= 0, p.temperature.isFinite else {
      throw fail(op, "temperature \(p.temperature) must be finite and ≥ 0")
    }
    guard p.topK >= 0 else { throw fail(op, "top-k \(p.topK) must be ≥ 0 (0 = off)") }
    guard p.topP > 0, p.topP <= 1 else { throw fail(op, "top-p \(p.topP) must lie in (0, 1]") }
    guard p.repetitionPenalty > 0, p.repetitionPenalty.isFinite else {
      throw fail(op, "repetition penalty \(p.repetitionPenalty) must be finite and > 0")
    }
    try noOverlap(op, output: ids, inputs: logits, presence)
    if let presence { try noOverlap(op, output: presence, inputs: logits) }
    return (rows, vocab)
  }

  /// `causalSoftmax`'s per-sequence first keys: i32, `groups` entries dividing the x's
  /// (rows / tq) matrices. Returns the number of groups (0 without key starts).
  public static func keyStarts(_ op: Op, _ starts: Tensor?, rows: Int, tq: Int) throws -> Int {
    guard let starts else { return 0 }
    try dtype(op, .i32, starts)
    let matrices = tq > 0 ? rows / tq : 0
    guard starts.count > 0, matrices % starts.count == 0 else {
      throw fail(op, "\(starts.count) key starts do not divide \(matrices) score matrices")
    }
    return starts.count
  }
}
