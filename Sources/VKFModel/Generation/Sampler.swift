import Foundation
import VKFCore

/// Picks the next token from one row of logits, on the CPU, as transformers' `generate`
/// does: repetition penalty, then greedy argmax (temperature 0) or temperature → top-k →
/// top-p → a draw from the softmax with a seeded RNG.
public struct Sampler {
  /// The sampling settings (validated by the caller).
  public let config: GenerationConfig
  private var rng: SplitMix64

  /// A sampler whose draws are fixed by `config.seed`.
  public init(config: GenerationConfig) {
    self.config = config
    rng = SplitMix64(seed: config.seed)
  }

  /// The next token id from `logits` (V); `context` (prompt + output so far) feeds the
  /// repetition penalty.
  public mutating func next(logits: [Float], context: [Int]) -> Int {
    var l = logits
    if config.repetitionPenalty != 1 {
      Self.applyRepetitionPenalty(&l, penalty: config.repetitionPenalty, tokens: context)
    }
    if config.isGreedy { return Self.argmax(l) }
    let t = config.temperature
    if t != 1 { for i in l.indices { l[i] /= t } }
    if config.topK > 0 { Self.topKFilter(&l, k: config.topK) }
    if config.topP < 1 { Self.topPFilter(&l, p: config.topP) }
    return Self.draw(Self.softmax(l), uniform: rng.nextUnitDouble())
  }

  // MARK: - Logits processors (each a transformers LogitsProcessor)

  /// Index of the largest value, the first on ties (as `torch.argmax`).
  public static func argmax(_ l: [Float]) -> Int {
    var best = 0
    for i in l.indices where l[i] > l[best] { best = i }
    return best
  }

  /// `RepetitionPenaltyLogitsProcessor`: for each distinct id in `tokens`, a logit < 0 is
  /// multiplied by `penalty`, otherwise divided by it.
  public static func applyRepetitionPenalty(_ l: inout [Float], penalty: Float, tokens: [Int]) {
    for id in Set(tokens) where l.indices.contains(id) {
      l[id] = l[id] < 0 ? l[id] * penalty : l[id] / penalty
    }
  }

  /// `TopKLogitsWarper`: logits below the k-th largest become −∞ (ties with it are kept).
  public static func topKFilter(_ l: inout [Float], k: Int) {
    guard k > 0, k < l.count else { return }
    let threshold = l.sorted(by: >)[k - 1]
    for i in l.indices where l[i] < threshold { l[i] = -.infinity }
  }

  /// `TopPLogitsWarper`: sort ascending, remove tokens while the cumulative probability
  /// (from the least likely up) is ≤ 1 − p, never the most likely token. What is left is the
  /// smallest set of most likely tokens whose probability sums to ≥ p.
  public static func topPFilter(_ l: inout [Float], p: Float) {
    guard p < 1 else { return }
    let probs = softmax(l)
    // Stable ascending order, as torch.sort on distinct values; ties keep index order.
    let order = l.indices.sorted { l[$0] < l[$1] || (l[$0] == l[$1] && $0 < $1) }
    var cumulative = 0.0
    let cut = 1 - Double(p)
    for (rank, i) in order.enumerated() where rank < order.count - 1 {
      cumulative += probs[i]
      guard cumulative <= cut else { break }
      l[i] = -.infinity
    }
  }

  /// Softmax in Double; −∞ logits get probability 0.
  public static func softmax(_ l: [Float]) -> [Double] {
    let m = Double(l.max() ?? 0)
    guard m.isFinite else { return l.map { _ in 1 / Double(max(l.count, 1)) } }
    let e = l.map { $0 == -.infinity ? 0 : exp(Double($0) - m) }
    let sum = e.reduce(0, +)
    return e.map { $0 / sum }
  }

  /// The index where the running sum of `probs` first exceeds `uniform` ∈ [0, 1); the last
  /// index with nonzero probability when rounding leaves the sum short.
  public static func draw(_ probs: [Double], uniform u: Double) -> Int {
    var cumulative = 0.0, lastNonzero = 0
    for (i, p) in probs.enumerated() where p > 0 {
      cumulative += p
      lastNonzero = i
      if u < cumulative { return i }
    }
    return lastNonzero
  }
}

