// Group relative policy optimisation (TRL GRPOTrainer 1.16) as host math: rewards →
// advantages, the completion mask, and the clipped surrogate with its KL term → the loss,
// dL/dlogp per token and the logged clip/KL statistics.
import Foundation

/// TRL's `loss_type` values this trainer implements.
public enum GRPOLossType: String, CaseIterable, Codable, Sendable {
  /// Each row's mean token loss, averaged over rows.
  case grpo
  /// Token loss summed over the micro-batch over its completion tokens.
  case bnpo
  /// Token loss summed over rows × max_completion_length (Dr. GRPO: no length bias).
  case drGRPO = "dr_grpo"
  /// Token loss summed over the step's completion tokens (TRL's default).
  case dapo
}

/// TRL's `scale_rewards`: what divides an advantage (reward − its group's mean).
public enum GRPORewardScaling: String, CaseIterable, Codable, Sendable {
  /// The group's standard deviation (+ 1e-4).
  case group
  /// The whole generation batch's standard deviation (+ 1e-4).
  case batch
  /// Nothing.
  case none
}

/// The loss settings of a GRPO step (TRL names in the comments).
public struct GRPOLossConfig: Equatable, Sendable {
  /// `beta`: weight of the KL to the reference (0: no reference pass).
  public var beta: Double
  /// `epsilon`: lower clip 1 − ε of the probability ratio.
  public var epsilon: Double
  /// `epsilon_high`: upper clip 1 + ε_high (TRL: nil → epsilon).
  public var epsilonHigh: Double
  /// `loss_type`.
  public var lossType: GRPOLossType
  /// `scale_rewards`.
  public var scaleRewards: GRPORewardScaling
  /// `use_bias_correction_kl`: the KL term times the probability ratio (TRL's default).
  public var biasCorrectedKL: Bool
  /// `mask_truncated_completions`: completions without an EOS add no loss.
  public var maskTruncatedCompletions: Bool
  /// `max_completion_length` (dr_grpo's denominator).
  public var maxCompletionLength: Int
  /// `temperature`: log-probs are log_softmax(logits / T), T the sampling temperature.
  public var temperature: Float = 1

  public init(beta: Double = 0, epsilon: Double = 0.2, epsilonHigh: Double? = nil, lossType: GRPOLossType = .dapo,
              scaleRewards: GRPORewardScaling = .group, biasCorrectedKL: Bool = true,
              maskTruncatedCompletions: Bool = false, maxCompletionLength: Int = 512) {
    self.beta = beta; self.epsilon = epsilon; self.epsilonHigh = epsilonHigh ?? epsilon; self.lossType = lossType
    self.scaleRewards = scaleRewards; self.biasCorrectedKL = biasCorrectedKL
    self.maskTruncatedCompletions = maskTruncatedCompletions; self.maxCompletionLength = maxCompletionLength
  }
}

/// One row of a rollout as TRL masks it: the completion's kept tokens (up to and including
/// the first EOS, else all of them) and whether it ran out of room without an EOS.
public struct CompletionMask: Equatable, Sendable {
  /// Tokens kept (the EOS counted).
  public var length: Int
  /// The last kept token is neither an EOS nor the pad id.
  public var truncated: Bool

  /// TRL's rule over raw generated ids (padded with `padID` after an EOS).
  public init(completion ids: [Int], eos: Set<Int>, padID: Int) {
    if let e = ids.firstIndex(where: { eos.contains($0) }) { length = e + 1 } else { length = ids.count }
    let last = length > 0 ? ids[length - 1] : padID
    truncated = !eos.contains(last) && last != padID
  }

  public init(length: Int, truncated: Bool) { self.length = length; self.truncated = truncated }
}

public enum GRPOMath {
  /// TRL's epsilon added to the standard deviation that scales advantages.
  public static let stdEpsilon = 1e-4

  /// Each row's reward: Σ_k w_k·R[r, k] with NaN counting 0 (TRL's nansum); NaN when every
  /// function returned NaN (an unscorable row: left out of the statistics, advantage 0).
  public static func combinedRewards(_ perFunction: [[Double]], weights: [Double]) -> [Double] {
    perFunction.map { row in
      guard row.contains(where: { !$0.isNaN }) else { return .nan }
      return zip(row, weights).reduce(0) { $0 + ($1.0.isNaN ? 0 : $1.1 * $1.0) }
    }
  }

  /// Mean of the non-NaN values (NaN when none).
  public static func nanMean(_ v: [Double]) -> Double {
    let x = v.filter { !$0.isNaN }
    return x.isEmpty ? .nan : x.reduce(0, +) / Double(x.count)
  }

  /// Unbiased (Bessel) standard deviation of the non-NaN values, as TRL's `nanstd`.
  public static func nanStd(_ v: [Double]) -> Double {
    let x = v.filter { !$0.isNaN }
    guard x.count > 1 else { return .nan }
    let m = x.reduce(0, +) / Double(x.count)
    return (x.reduce(0) { $0 + ($1 - m) * ($1 - m) } / Double(x.count - 1)).squareRoot()
  }

  /// Advantages of rows in consecutive groups of `groupSize` (one prompt's samples):
  /// reward − group mean, divided by (std + 1e-4) per `scaling`; unscorable rows get 0.
  /// Also each row's "its std is 0" flag (TRL's frac_reward_zero_std).
  public static func advantages(rewards: [Double], groupSize g: Int, scaling: GRPORewardScaling)
    -> (advantages: [Double], zeroStd: [Bool]) {
    let groups = rewards.count / max(g, 1)
    let batchStd = nanStd(rewards)
    var adv = [Double](repeating: 0, count: rewards.count), zero = [Bool](repeating: false, count: rewards.count)
    for k in 0..<groups {
      let slice = Array(rewards[(k * g)..<((k + 1) * g)])
      let mean = nanMean(slice)
      let std = scaling == .batch ? batchStd : nanStd(slice)
      for r in (k * g)..<((k + 1) * g) {
        zero[r] = abs(std) <= 1e-8  // torch.isclose(std, 0): |std| ≤ atol 1e-8
        guard !rewards[r].isNaN else { continue }
        adv[r] = rewards[r] - mean
        if scaling != .none { adv[r] /= std + stdEpsilon }
      }
    }
    return (adv, zero)
  }

  /// The loss weight of every completion token of each row (TRL's normalisation of Σ m·ℓ):
  /// `tokens[r]` masked tokens per row of this micro-batch, `stepTokens` masked tokens of the
  /// whole step (dapo), `microBatches` per step (TRL divides each by the accumulation steps).
  public static func rowScales(_ c: GRPOLossConfig, tokens: [Int], stepTokens: Int, microBatches: Int) -> [Double] {
    let ga = Double(max(microBatches, 1)), rows = Double(max(tokens.count, 1))
    switch c.lossType {
    case .grpo: return tokens.map { 1 / (ga * rows * Double(max($0, 1))) }
    case .bnpo: return tokens.map { _ in 1 / (ga * Double(max(tokens.reduce(0, +), 1))) }
    case .drGRPO: return tokens.map { _ in 1 / (ga * rows * Double(c.maxCompletionLength)) }
    case .dapo: return tokens.map { _ in 1 / Double(max(stepTokens, 1)) }
    }
  }

  /// Sums of one micro-batch's surrogate: the loss, dL/dlogp per token, and the statistics TRL
  /// logs as masked means over its tokens.
  public struct Step: Equatable, Sendable {
    public var loss = 0.0
    /// dL/dlogp per token (0 off the mask), in the caller's layout.
    public var gradient: [Double] = []
    /// Σ over masked tokens of the KL term (bias-corrected when configured), of the clipped
    /// indicators, and the masked token count.
    public var klSum = 0.0, lowClipped = 0, highClipped = 0, tokens = 0
  }

  /// Per token t of row r (flat index i, `row[i]`, mask weight `scale[row]` or 0 off the mask):
  /// ratio = e^(logp − old); ℓ = −min(ratio·A, clamp(ratio, 1 − ε, 1 + ε_high)·A)
  /// + β·(e^(ref − logp) − (ref − logp) − 1)·(ratio when bias-corrected); L = Σ scale·ℓ.
  /// dℓ/dlogp = −A·ratio where the unclipped term is the minimum (0 where the clip holds it),
  /// plus β·ratio·(logp − ref) (bias-corrected; the ratio's own derivative folded in) or
  /// β·(1 − e^(ref − logp)).
  public static func surrogate(_ c: GRPOLossConfig, logp: [Double], old: [Double], ref: [Double]?, advantage: [Double],
                               scale: [Double]) -> Step {
    var s = Step()
    s.gradient = [Double](repeating: 0, count: logp.count)
    let lo = 1 - c.epsilon, hi = 1 + c.epsilonHigh
    for i in logp.indices where scale[i] != 0 {
      let a = advantage[i], ratio = exp(logp[i] - old[i])
      let clipped = min(max(ratio, lo), hi)
      let unclippedWins = ratio * a <= clipped * a
      var l = -min(ratio * a, clipped * a)
      var g = unclippedWins || (ratio >= lo && ratio <= hi) ? -a * ratio : 0
      if ratio < lo && a < 0 { s.lowClipped += 1 }
      if ratio > hi && a > 0 { s.highClipped += 1 }
      if c.beta != 0, let ref {
        let d = ref[i] - logp[i]
        var kl = exp(d) - d - 1
        if c.biasCorrectedKL {
          kl *= ratio
          g += c.beta * ratio * (logp[i] - ref[i])
        } else {
          g += c.beta * (1 - exp(d))
        }
        l += c.beta * kl
        s.klSum += kl
      }
      s.loss += scale[i] * l
      s.gradient[i] = scale[i] * g
      s.tokens += 1
    }
    return s
  }
}
