// Proximal policy optimisation with a learned value (TRL's PPOTrainer, last shipped in TRL
// 0.29 as trl.experimental.ppo) as host math: a rollout batch's per-token KL penalty and
// reward, generalised advantage estimation, whitening, and the clipped policy and value
// losses of a micro-batch with their gradients per token.
import Foundation

/// TRL's `kl_estimator` (http://joschu.net/blog/kl-approx.html, with r = ref − logp).
public enum PPOKLEstimator: String, CaseIterable, Codable, Sendable {
  /// −r: unbiased (TRL's default).
  case k1
  /// (eʳ − 1) − r: unbiased, lower variance, never negative.
  case k3
}

/// The settings of a PPO run (TRL PPOConfig names; defaults are TRL's).
public struct PPOConfig: Equatable, Sendable {
  /// `kl_coef`: weight of the per-token KL penalty in the reward.
  public var klCoef = 0.05
  /// `kl_estimator`.
  public var klEstimator = PPOKLEstimator.k1
  /// `cliprange`: the probability ratio is clipped to [1 − c, 1 + c].
  public var cliprange = 0.2
  /// `cliprange_value`: a new value is clipped to the rollout's value ± this.
  public var cliprangeValue = 0.2
  /// `vf_coef`: weight of the value loss.
  public var vfCoef = 0.1
  /// `gamma`: discount; `lam`: GAE's λ.
  public var gamma = 1.0, lam = 0.95
  /// `num_ppo_epochs`: passes over each rollout batch.
  public var numPPOEpochs = 4
  /// `num_mini_batches`: optimizer updates per pass (the rollout batch split evenly).
  public var numMiniBatches = 1
  /// `whiten_rewards`: whiten the per-token rewards over the batch (mean kept).
  public var whitenRewards = false
  /// `missing_eos_penalty`: subtracted from the score of a completion without an EOS.
  public var missingEOSPenalty: Double?
  /// `temperature`: of the sampling and of the log-probs (TRL divides by T + 1e-7).
  public var temperature: Float = 0.7

  public init() {}

  /// The log-probs' logit divisor: TRL's `temperature + 1e-7`.
  public var logitTemperature: Float { Float(Double(temperature) + 1e-7) }

  public func validate() throws {
    func bad(_ field: String, _ value: Any, _ requirement: String) -> TrainingError {
      .invalidConfig(field: field, value: "\(value)", requirement: requirement)
    }
    guard klCoef >= 0, klCoef.isFinite else { throw bad("kl_coef", klCoef, "a number ≥ 0") }
    guard cliprange > 0, cliprange < 1 else { throw bad("cliprange", cliprange, "a number in (0, 1)") }
    guard cliprangeValue > 0, cliprangeValue.isFinite else { throw bad("cliprange_value", cliprangeValue, "a number > 0") }
    guard vfCoef >= 0, vfCoef.isFinite else { throw bad("vf_coef", vfCoef, "a number ≥ 0") }
    guard (0...1).contains(gamma) else { throw bad("gamma", gamma, "a number in [0, 1]") }
    guard (0...1).contains(lam) else { throw bad("lam", lam, "a number in [0, 1]") }
    guard numPPOEpochs >= 1 else { throw bad("num_ppo_epochs", numPPOEpochs, "at least 1") }
    guard numMiniBatches >= 1 else { throw bad("num_mini_batches", numMiniBatches, "at least 1") }
    if let p = missingEOSPenalty, !(p >= 0 && p.isFinite) { throw bad("missing_eos_penalty", p, "a number ≥ 0") }
    guard temperature > 0, temperature.isFinite else {
      throw bad("temperature", temperature, "a number > 0 (PPO samples, and its log-probs are at this temperature)")
    }
  }
}

/// A rollout batch laid out as TRL does: every row padded to the batch's longest completion W.
/// Row r keeps `lengths[r]` tokens (up to and including its EOS, else all); its log-probs and
/// advantages count at t < length, its values at t < `valueLengths[r]` (one more — the state
/// after the EOS — when the row is shorter than W).
public struct PPORolloutShape: Equatable, Sendable {
  public let lengths: [Int]
  public let width: Int
  public init(lengths: [Int]) {
    self.lengths = lengths
    width = lengths.max() ?? 0
  }
  public var rows: Int { lengths.count }
  /// TRL's `~padding_mask_p1` per row.
  public var valueLengths: [Int] { lengths.map { min($0 + 1, width) } }
  /// Where a row's score joins its reward: the slot after the EOS when there is one, else the
  /// last token (TRL's `actual_end`).
  public var scoreIndices: [Int] { lengths.map { $0 < width ? $0 : $0 - 1 } }
}

/// What a rollout batch trains on (rows × W, zero outside each row's mask).
public struct PPOAdvantages: Sendable {
  /// Per-token KL estimate, −kl_coef·kl (the non-score reward) and the reward with the score.
  public var kl: [[Double]], nonScoreReward: [[Double]], rewards: [[Double]]
  /// GAE advantages, whitened over the batch's kept tokens; and returns (= advantage + value,
  /// before whitening).
  public var advantages: [[Double]], returns: [[Double]]
}

public enum PPOMath {
  /// Masked mean and unbiased variance of `x` over `mask` (TRL's masked_mean / masked_var).
  static func meanVariance(_ x: [[Double]], _ lengths: [Int]) -> (mean: Double, variance: Double) {
    var sum = 0.0, n = 0
    for (row, k) in zip(x, lengths) { for t in 0..<k { sum += row[t]; n += 1 } }
    let mean = n > 0 ? sum / Double(n) : 0
    var sq = 0.0
    for (row, k) in zip(x, lengths) { for t in 0..<k { sq += (row[t] - mean) * (row[t] - mean) } }
    // TRL raises for a single token (Bessel's n − 1 = 0); here one token whitens to 0 · its value.
    let variance = n > 1 ? sq / Double(n) * Double(n) / Double(n - 1) : 0
    return (mean, variance)
  }

  /// TRL's masked_whiten: (x − mean)/√(var + 1e-8), the mean added back unless `shiftMean`;
  /// zero outside the mask.
  static func whiten(_ x: [[Double]], _ lengths: [Int], shiftMean: Bool) -> [[Double]] {
    let (mean, variance) = meanVariance(x, lengths)
    let scale = 1 / (variance + 1e-8).squareRoot()
    return zip(x, lengths).map { row, k in
      row.indices.map { t in t < k ? (row[t] - mean) * scale + (shiftMean ? 0 : mean) : 0 }
    }
  }

  /// From a batch's log-probs (rows × their kept tokens), the reference's, the values (rows ×
  /// their value lengths) and the scores (after the missing-EOS penalty): per-token rewards,
  /// GAE advantages and returns (TRL PPOTrainer.train, "compute rewards" to "advantages").
  public static func advantages(_ c: PPOConfig, shape s: PPORolloutShape, logProbs: [[Double]],
                                referenceLogProbs: [[Double]], values: [[Double]], scores: [Double]) -> PPOAdvantages {
    let w = s.width
    let zeros = [[Double]](repeating: [Double](repeating: 0, count: w), count: s.rows)
    var kl = zeros, nonScore = zeros, rewards = zeros, v = zeros
    let valueLengths = s.valueLengths, ends = s.scoreIndices
    for r in 0..<s.rows {
      for t in 0..<s.lengths[r] {
        let logr = referenceLogProbs[r][t] - logProbs[r][t]
        kl[r][t] = c.klEstimator == .k1 ? -logr : (exp(logr) - 1) - logr
        nonScore[r][t] = -c.klCoef * kl[r][t]
      }
      rewards[r] = nonScore[r]
      rewards[r][ends[r]] += scores[r]
      for t in 0..<valueLengths[r] { v[r][t] = values[r][t] }
    }
    if c.whitenRewards { rewards = whiten(rewards, valueLengths, shiftMean: false) }
    var advantages = zeros, returns = zeros
    for r in 0..<s.rows {
      var last = 0.0
      for t in stride(from: w - 1, through: 0, by: -1) {
        let next = t < w - 1 ? v[r][t + 1] : 0
        let delta = rewards[r][t] + c.gamma * next - v[r][t]
        last = delta + c.gamma * c.lam * last
        advantages[r][t] = last
        returns[r][t] = last + v[r][t]
      }
    }
    advantages = whiten(advantages, s.lengths, shiftMean: true)
    return PPOAdvantages(kl: kl, nonScoreReward: nonScore, rewards: rewards, advantages: advantages, returns: returns)
  }

  /// A micro-batch's losses, their gradients and statistics (TRL's inner PPO loop).
  public struct MicroBatch: Sendable {
    /// masked_mean of the clipped surrogate, and 0.5·masked_mean of the clipped squared error.
    public var policyLoss = 0.0, valueLoss = 0.0
    /// dL/dlogp and dL/dvalue per row and token of the total pg + vf_coef·vf (unscaled).
    public var logProbGradients: [[Double]] = [], valueGradients: [[Double]] = []
    /// Fractions of tokens where the clipped branch won (policy, value).
    public var policyClipFraction = 0.0, valueClipFraction = 0.0
    /// TRL's approxkl = 0.5·mean((logp − old)²) and mean ratio, both over rows × W (padding
    /// counts as difference 0 and ratio 1, as TRL's masked fill makes it).
    public var approxKL = 0.0, meanRatio = 0.0
  }

  /// The micro-batch of `rows` (indices into the batch): new log-probs and values for those
  /// rows (their kept / value lengths), against the rollout's `old` log-probs, `values`,
  /// advantages and returns.
  public static func microBatch(_ c: PPOConfig, shape s: PPORolloutShape, rows: [Int], logProbs: [[Double]],
                                values newValues: [[Double]], old: [[Double]], oldValues: [[Double]],
                                advantages a: PPOAdvantages) -> MicroBatch {
    var out = MicroBatch()
    let valueLengths = s.valueLengths
    let policyTokens = rows.reduce(0) { $0 + s.lengths[$1] }
    let valueTokens = rows.reduce(0) { $0 + valueLengths[$1] }
    var pgSum = 0.0, vfSum = 0.0, pgClipped = 0, vfClipped = 0, sqDiff = 0.0, ratioSum = 0.0
    for (i, r) in rows.enumerated() {
      var gLogp = [Double](repeating: 0, count: s.lengths[r])
      for t in 0..<s.lengths[r] {
        let diff = logProbs[i][t] - old[r][t]
        let ratio = exp(diff), adv = a.advantages[r][t]
        let l1 = -adv * ratio, l2 = -adv * min(max(ratio, 1 - c.cliprange), 1 + c.cliprange)
        pgSum += max(l1, l2)
        if l2 > l1 { pgClipped += 1 } else { gLogp[t] = -adv * ratio / Double(max(policyTokens, 1)) }
        sqDiff += diff * diff; ratioSum += ratio
      }
      ratioSum += Double(s.width - s.lengths[r])
      var gValue = [Double](repeating: 0, count: valueLengths[r])
      for t in 0..<valueLengths[r] {
        let v = newValues[i][t], v0 = oldValues[r][t], ret = a.returns[r][t]
        let clipped = min(max(v, v0 - c.cliprangeValue), v0 + c.cliprangeValue)
        let l1 = (v - ret) * (v - ret), l2 = (clipped - ret) * (clipped - ret)
        vfSum += max(l1, l2)
        if l2 > l1 { vfClipped += 1 } else { gValue[t] = c.vfCoef * (v - ret) / Double(max(valueTokens, 1)) }
      }
      out.logProbGradients.append(gLogp)
      out.valueGradients.append(gValue)
    }
    out.policyLoss = pgSum / Double(max(policyTokens, 1))
    out.valueLoss = 0.5 * vfSum / Double(max(valueTokens, 1))
    out.policyClipFraction = Double(pgClipped) / Double(max(policyTokens, 1))
    out.valueClipFraction = Double(vfClipped) / Double(max(valueTokens, 1))
    let cells = Double(max(rows.count * s.width, 1))
    out.approxKL = 0.5 * sqDiff / cells
    out.meanRatio = ratioSum / cells
    return out
  }

  /// The optimizer updates of one PPO epoch: `rows` (the permuted batch) split into
  /// `numMiniBatches` equal mini-batches, each split into micro-batches of at most
  /// `microBatchRows` rows whose losses are averaged (gradient accumulation).
  public static func updates(permutation rows: [Int], numMiniBatches m: Int, microBatchRows: Int) -> [[[Int]]] {
    let mini = rows.count / m
    return (0..<m).map { k in
      let slice = Array(rows[(k * mini)..<((k + 1) * mini)])
      return stride(from: 0, to: slice.count, by: max(microBatchRows, 1)).map {
        Array(slice[$0..<min($0 + max(microBatchRows, 1), slice.count)])
      }
    }
  }
}
