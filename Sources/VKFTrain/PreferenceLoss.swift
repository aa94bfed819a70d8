// DPO-family and reward-model losses on sequence log-probs / scores, with their gradients.
import Foundation
import VKFCore

/// TRL's DPO loss types (`loss_type`).
public enum DPOLossType: String, Codable, Sendable, CaseIterable {
  /// −(1−ε)·log σ(βΔ) − ε·log σ(−βΔ) (ε = label smoothing, 0 by default: the DPO paper).
  case sigmoid
  /// relu(1 − βΔ) (SLiC).
  case hinge
  /// (Δ̄ − 1/(2β))², with each log-prob divided by its answer's length (IPO).
  case ipo
  /// [−(1−ε)·log σ(βΔ) + ε·log σ(−βΔ)] / (1 − 2ε) (robust DPO, unbiased under label noise).
  case robust
}

/// Settings of a DPO loss, with TRL's names in comments.
public struct DPOLossConfig: Codable, Sendable, Equatable {
  /// `loss_type`.
  public var type: DPOLossType = .sigmoid
  /// `beta`.
  public var beta: Double = 0.1
  /// `label_smoothing` (ε) for sigmoid and robust; must be < 0.5.
  public var labelSmoothing: Double = 0
  /// `rpo_alpha`: weight of an SFT (mean NLL) term on the chosen answers; nil for none.
  public var rpoAlpha: Double?
  /// ORPO (TRL's ORPOTrainer, `beta`): the chosen answers' NLL (over prompt and answer) minus
  /// β·log σ(log odds ratio) of length-averaged log-probs; no reference; `type` unused.
  public var oddsRatio = false

  public init(type: DPOLossType = .sigmoid, beta: Double = 0.1, labelSmoothing: Double = 0,
              rpoAlpha: Double? = nil, oddsRatio: Bool = false) {
    self.type = type; self.beta = beta; self.labelSmoothing = labelSmoothing; self.rpoAlpha = rpoAlpha
    self.oddsRatio = oddsRatio
  }

  /// ORPO's settings (TRL ORPOConfig's `beta`, default 0.1).
  public static func orpo(beta: Double = 0.1) -> DPOLossConfig { DPOLossConfig(beta: beta, oddsRatio: true) }

  /// The settings as the backends' `preferenceLoss` op takes them.
  public var parameters: PreferenceLossParameters {
    let kind: PreferenceLossKind
    switch type {
    case .sigmoid: kind = .sigmoid
    case .hinge: kind = .hinge
    case .ipo: kind = .ipo
    case .robust: kind = .robust
    }
    if oddsRatio { return PreferenceLossParameters(kind: .orpo, beta: beta) }
    return PreferenceLossParameters(kind: kind, beta: beta, labelSmoothing: labelSmoothing, rpoAlpha: rpoAlpha ?? 0)
  }

  /// One-line reasons for values that cannot work.
  public func validate() throws {
    guard beta > 0, beta.isFinite else { throw PreferenceLossError("beta must be > 0 (got \(beta))") }
    guard labelSmoothing >= 0, labelSmoothing < 0.5 else {
      throw PreferenceLossError("label_smoothing must be in [0, 0.5) (got \(labelSmoothing))")
    }
    if labelSmoothing > 0, type == .hinge || type == .ipo {
      throw PreferenceLossError("label_smoothing applies to the sigmoid and robust losses, not \(type.rawValue)")
    }
    if let a = rpoAlpha, !(a >= 0 && a.isFinite) { throw PreferenceLossError("rpo_alpha must be ≥ 0 (got \(a))") }
    if oddsRatio, labelSmoothing != 0 || (rpoAlpha ?? 0) != 0 || type != .sigmoid {
      throw PreferenceLossError("ORPO takes beta only (its NLL term is built in): loss_type, label_smoothing and "
        + "rpo_alpha are DPO settings")
    }
  }
}

/// A bad preference-loss setting.
public struct PreferenceLossError: Error, CustomStringConvertible, Equatable {
  public var description: String
  public init(_ d: String) { description = d }
}

/// Sequence-level inputs of one pair: summed answer log-probs under the policy and the
/// reference, and the answer lengths in tokens.
public struct PairLogProbs: Sendable, Equatable {
  public var policyChosen: Double, policyRejected: Double
  public var referenceChosen: Double, referenceRejected: Double
  public var chosenTokens: Int, rejectedTokens: Int
  public init(policyChosen: Double, policyRejected: Double, referenceChosen: Double,
              referenceRejected: Double, chosenTokens: Int, rejectedTokens: Int) {
    self.policyChosen = policyChosen; self.policyRejected = policyRejected
    self.referenceChosen = referenceChosen; self.referenceRejected = referenceRejected
    self.chosenTokens = chosenTokens; self.rejectedTokens = rejectedTokens
  }
}

/// One pair's loss, its gradient with respect to the *summed* policy log-probs, and the
/// logged rewards.
public struct PairLoss: Sendable, Equatable {
  /// The pair's loss (before averaging over the batch; without the RPO term).
  public var loss: Double
  /// dloss/d(policy chosen summed log-prob) and dloss/d(policy rejected summed log-prob).
  public var dPolicyChosen: Double, dPolicyRejected: Double
  /// β·(π_c − ref_c) and β·(π_r − ref_r), on summed log-probs for every loss type (as TRL).
  public var rewardChosen: Double, rewardRejected: Double
}

/// The DPO-family losses of `DPOLossConfig` and the reward-model loss.
public enum PreferenceLoss {
  /// log σ(x), stable for large |x|.
  static func logSigmoid(_ x: Double) -> Double { PreferenceLossMath.logSigmoid(x) }
  /// σ(x).
  static func sigmoid(_ x: Double) -> Double { PreferenceLossMath.sigmoid(x) }

  /// The loss of one pair under `config` (formulas in REFERENCE.md, TRL's semantics; the
  /// same math as the backends' `preferenceLoss` op).
  public static func dpo(_ p: PairLogProbs, _ config: DPOLossConfig) -> PairLoss {
    let out = PreferenceLossMath.pair(policyChosen: p.policyChosen, policyRejected: p.policyRejected,
                                      referenceChosen: p.referenceChosen, referenceRejected: p.referenceRejected,
                                      chosenTokens: p.chosenTokens, rejectedTokens: p.rejectedTokens,
                                      config.parameters)
    return PairLoss(loss: out.loss, dPolicyChosen: out.dPolicyChosen, dPolicyRejected: out.dPolicyRejected,
                    rewardChosen: out.rewardChosen, rewardRejected: out.rewardRejected)
  }

  /// Reward-model loss −log σ(r_c − r_r − margin) and its gradients (d/dr_c, d/dr_r).
  public static func reward(chosen: Double, rejected: Double, margin: Double = 0)
    -> (loss: Double, dChosen: Double, dRejected: Double) {
    let x = chosen - rejected - margin
    let g = -sigmoid(-x)
    return (-logSigmoid(x), g, -g)
  }
}

/// Batch means of what DPO logs (TRL's metric names in `metrics`).
public struct DPOStepMetrics: Sendable, Equatable {
  public var loss = 0.0
  public var rewardsChosen = 0.0, rewardsRejected = 0.0, rewardsAccuracy = 0.0
  public var logpsChosen = 0.0, logpsRejected = 0.0
  public var pairs = 0
  /// ORPO's sums: log σ(log odds), log odds and pairs·NLL.
  public struct OddsRatioSums: Sendable, Equatable {
    public var ratio = 0.0, logOdds = 0.0, nll = 0.0
  }
  /// ORPO's sums; nil for the DPO losses.
  public var oddsRatio: OddsRatioSums?
  public init() {}

  /// Adds one pair (call `finish` once after the last).
  public mutating func add(_ l: PairLoss, _ p: PairLogProbs) {
    loss += l.loss
    rewardsChosen += l.rewardChosen; rewardsRejected += l.rewardRejected
    rewardsAccuracy += l.rewardChosen > l.rewardRejected ? 1 : 0
    logpsChosen += p.policyChosen; logpsRejected += p.policyRejected
    pairs += 1
  }

  /// Means over the pairs added so far.
  public var mean: DPOStepMetrics {
    guard pairs > 0 else { return self }
    var m = self
    let n = Double(pairs)
    m.loss /= n; m.rewardsChosen /= n; m.rewardsRejected /= n; m.rewardsAccuracy /= n
    m.logpsChosen /= n; m.logpsRejected /= n
    return m
  }

  /// Adds the sums of a `preferenceLoss` op's metrics vector (`PreferenceLossParameters.Metric`).
  public mutating func add(sums m: [Double]) {
    typealias M = PreferenceLossParameters.Metric
    func v(_ k: M) -> Double { k.rawValue < m.count ? m[k.rawValue] : 0 }
    loss += v(.loss)
    rewardsChosen += v(.rewardsChosen); rewardsRejected += v(.rewardsRejected); rewardsAccuracy += v(.accuracy)
    logpsChosen += v(.logpsChosen); logpsRejected += v(.logpsRejected)
    pairs += Int(v(.pairs).rounded())
    if odds {
      var o = oddsRatio ?? OddsRatioSums()
      o.ratio += v(.logOddsRatio); o.logOdds += v(.logOdds); o.nll += v(.nll)
      oddsRatio = o
    }
  }

  /// Whether `add(sums:)` keeps ORPO's sums (set by an ORPO task).
  public var odds = false

  /// rewards/margins.
  public var rewardsMargin: Double { rewardsChosen - rewardsRejected }

  /// TRL's names → values (means), for metrics.jsonl and the progress line.
  public var metrics: [String: Double] {
    let m = mean
    var out = ["loss": m.loss, "rewards/chosen": m.rewardsChosen, "rewards/rejected": m.rewardsRejected,
               "rewards/margins": m.rewardsMargin, "rewards/accuracies": m.rewardsAccuracy,
               "logps/chosen": m.logpsChosen, "logps/rejected": m.logpsRejected]
    if let o = oddsRatio, pairs > 0 {
      // TRL ORPOTrainer's names (log_odds_ratio is the mean log σ(log odds)).
      let n = Double(pairs)
      out["log_odds_ratio"] = o.ratio / n; out["log_odds_chosen"] = o.logOdds / n; out["nll_loss"] = o.nll / n
      out["loss"] = m.loss + o.nll / n  // TRL: nll − mean β·log σ(log odds)
    }
    return out
  }
}
