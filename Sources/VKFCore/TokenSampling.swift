/// How `Backend.sampleTokens` picks each row's next token: transformers' logits processors
/// (repetition penalty → temperature → top-k → top-p) and a draw, all on the device.
///
/// Temperature 0 is greedy: the first index of the largest (penalised) logit, as
/// `torch.argmax`. Otherwise, with g = penalised logit / temperature:
/// - top-k keeps every token whose g is ≥ the k-th largest g (ties with it are kept, as
///   `TopKLogitsWarper`);
/// - top-p then removes the least likely tokens, as a whole value class at a time, while
///   their probability mass stays ≤ 1 − p (`TopPLogitsWarper` removes the ascending prefix
///   with cumulative ≤ 1 − p; the two differ only where several tokens share one logit at
///   the cut, which transformers splits by index order);
/// - the token is drawn by inverse CDF: the first kept index, in index order, whose running
///   sum of exp(g − max g) exceeds u·Σ, with u = `unit(seed, row, step)` ∈ [0, 1).
///
/// The draw is a pure function of (seed, row, step) — 32-bit integer hashes only, so every
/// backend draws the same u; their sums round differently, so a token can differ only when
/// u·Σ falls within rounding of a boundary (~1e-7 of the mass).
public struct SamplingParameters: Equatable, Sendable {
  /// 0 = greedy; > 0 divides the logits.
  public var temperature: Float
  /// Keep the k most likely tokens (0 = off).
  public var topK: Int
  /// Keep the most likely tokens up to this mass (1 = off); in (0, 1].
  public var topP: Float
  /// CTRL-style penalty on tokens marked in `presence` (1 = off); > 0.
  public var repetitionPenalty: Float
  /// The run's seed.
  public var seed: UInt64
  /// Which draw of the run this is (a generated position): a new step, a new u per row.
  public var step: UInt32

  public init(temperature: Float, topK: Int = 0, topP: Float = 1, repetitionPenalty: Float = 1,
              seed: UInt64 = 0, step: UInt32 = 0) {
    self.temperature = temperature; self.topK = topK; self.topP = topP
    self.repetitionPenalty = repetitionPenalty; self.seed = seed; self.step = step
  }

  /// Greedy decoding (temperature 0).
  public var isGreedy: Bool { temperature == 0 }
}

/// The integer arithmetic `sampleTokens` shares between backends (sample_tokens.comp mirrors it).
public enum TokenSampling {
  /// The uniform of `row` at `step`: hash(seedLow ^ hash(seedHigh ^ hash(step ^ hash(row)))),
  /// its top 24 bits over 2²⁴ — exactly representable, in [0, 1).
  @inline(__always)
  public static func unit(seed: UInt64, row: UInt32, step: UInt32) -> Float {
    let h = DropoutMask.hash
    let key = h(UInt32(truncatingIfNeeded: seed) ^ h(UInt32(truncatingIfNeeded: seed >> 32) ^ h(step ^ h(row))))
    return Float(key >> 8) * 0x1p-24
  }

  /// A key whose unsigned order is the float order (−∞ lowest), for threshold searches.
  @inline(__always)
  public static func orderKey(_ x: Float) -> UInt32 {
    let u = x.bitPattern
    return u & 0x8000_0000 != 0 ? ~u : u | 0x8000_0000
  }

  /// `RepetitionPenaltyLogitsProcessor` on one logit of a token already seen.
  @inline(__always)
  public static func penalised(_ l: Float, _ penalty: Float) -> Float { l < 0 ? l * penalty : l / penalty }
}
