// The DPO family's per-pair loss and gradient: one definition for the host (VKFTrain's
// PreferenceLoss) and the CPU twin of the backends' `preferenceLoss` op.
import Foundation

/// TRL's DPO loss types, as the `preferenceLoss` op encodes them.
public enum PreferenceLossKind: UInt32, Sendable, CaseIterable {
  /// −(1−ε)·log σ(βΔ) − ε·log σ(−βΔ).
  case sigmoid = 0
  /// relu(1 − βΔ).
  case hinge = 1
  /// (Δ̄ − 1/(2β))² on length-averaged log-probs.
  case ipo = 2
  /// [−(1−ε)·log σ(βΔ) + ε·log σ(−βΔ)] / (1 − 2ε).
  case robust = 3
  /// A reward model's Bradley–Terry loss −log σ(Δ) on scores (TRL's RewardTrainer): the
  /// policy values are the pair's scores, the reference values their margin (m_c − m_r is
  /// subtracted; 0 for none); β and ε are not used; the logged rewards are the scores.
  case reward = 4
  /// ORPO's odds-ratio term (TRL's ORPOTrainer) on length-averaged log-probs a = π/len:
  /// −β·log σ(log odds), log odds = (a_c − a_r) − (log(1 − e^a_c) − log(1 − e^a_r)); no
  /// reference; the logged rewards are β·a. Its NLL term on the chosen rows is added by the
  /// task (it reaches prompt tokens too).
  case orpo = 5
}

/// Fixed settings of a `preferenceLoss` op (recorded with it).
public struct PreferenceLossParameters: Sendable, Equatable {
  public var kind: PreferenceLossKind
  public var beta: Double
  /// ε of sigmoid and robust.
  public var labelSmoothing: Double
  /// RPO's α (an SFT term on the chosen answers), 0 for none.
  public var rpoAlpha: Double

  public init(kind: PreferenceLossKind, beta: Double, labelSmoothing: Double = 0, rpoAlpha: Double = 0) {
    self.kind = kind; self.beta = beta; self.labelSmoothing = labelSmoothing; self.rpoAlpha = rpoAlpha
  }

  /// Pairs one op call may take (the kernel's shared-memory arrays).
  public static let maxPairs = 256

  /// Slots of the metrics vector the op adds into, each a sum over pairs.
  public enum Metric: Int, CaseIterable {
    case loss = 0, rewardsChosen, rewardsRejected, accuracy, logpsChosen, logpsRejected, pairs
    /// ORPO: Σ log σ(log odds) and Σ log odds (TRL's log_odds_ratio / log_odds_chosen), and
    /// Σ pairs·(the micro-batch's chosen NLL) (added by the task).
    case logOddsRatio, logOdds, nll
  }
  /// f32 elements of the metrics vector (`Metric` slots, padded).
  public static let metricCount = 12
}

/// One pair's loss (without RPO), d loss / d(summed policy log-prob) of each answer, and the
/// rewards β·(π − ref) TRL logs.
public struct PreferencePairLoss: Sendable, Equatable {
  public var loss: Double
  public var dPolicyChosen: Double, dPolicyRejected: Double
  public var rewardChosen: Double, rewardRejected: Double
  /// ORPO only: log σ(log odds) and the log odds (0 otherwise).
  public var logOddsRatio = 0.0, logOdds = 0.0
}

/// The math of `Backend.preferenceLoss`.
public enum PreferenceLossMath {
  /// log σ(x), stable for large |x|.
  public static func logSigmoid(_ x: Double) -> Double { x >= 0 ? -log1p(exp(-x)) : x - log1p(exp(x)) }
  /// σ(x).
  public static func sigmoid(_ x: Double) -> Double { x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x)) }
  /// log(1 − e^x) for x < 0, accurate on both sides of −ln 2 (TRL's log1mexp).
  public static func log1mexp(_ x: Double) -> Double { x < -M_LN2 ? log1p(-exp(x)) : log(-expm1(x)) }

  /// ORPO's pair loss from length-averaged log-probs (a_c, a_r < 0): −β·log σ(lo) with
  /// lo = (a_c − a_r) − (log1mexp(a_c) − log1mexp(a_r)); its derivatives by a_c and a_r
  /// (d lo/d a = 1/(1 − e^a) = −1/expm1(a)).
  static func orpo(averageChosen ac: Double, averageRejected ar: Double, beta: Double)
    -> (loss: Double, dChosen: Double, dRejected: Double, ratio: Double, logOdds: Double) {
    let lo = (ac - ar) - (log1mexp(ac) - log1mexp(ar))
    let ratio = logSigmoid(lo), dLo = -beta * sigmoid(-lo)
    return (-beta * ratio, dLo * (-1 / expm1(ac)), dLo * (1 / expm1(ar)), ratio, lo)
  }

  /// The loss of one pair from summed answer log-probs (π policy, ref reference) and answer
  /// lengths (formulas in REFERENCE.md, TRL's semantics).
  public static func pair(policyChosen: Double, policyRejected: Double, referenceChosen: Double,
                          referenceRejected: Double, chosenTokens: Int, rejectedTokens: Int,
                          _ p: PreferenceLossParameters) -> PreferencePairLoss {
    let beta = p.beta, eps = p.labelSmoothing
    if p.kind == .orpo {
      let lc = Double(max(chosenTokens, 1)), lr = Double(max(rejectedTokens, 1))
      let ac = policyChosen / lc, ar = policyRejected / lr
      let o = orpo(averageChosen: ac, averageRejected: ar, beta: beta)
      return PreferencePairLoss(loss: o.loss, dPolicyChosen: o.dChosen / lc, dPolicyRejected: o.dRejected / lr,
                                rewardChosen: beta * ac, rewardRejected: beta * ar, logOddsRatio: o.ratio,
                                logOdds: o.logOdds)
    }
    // ipo works on length-averaged log-probs; the chain rule brings 1/length back.
    let lc = p.kind == .ipo ? Double(max(chosenTokens, 1)) : 1
    let lr = p.kind == .ipo ? Double(max(rejectedTokens, 1)) : 1
    let delta = (policyChosen - referenceChosen) / lc - (policyRejected - referenceRejected) / lr
    let x = beta * delta
    let loss: Double, dDelta: Double
    switch p.kind {
    case .sigmoid:
      loss = -(1 - eps) * logSigmoid(x) - eps * logSigmoid(-x)
      dDelta = beta * (-(1 - eps) * sigmoid(-x) + eps * sigmoid(x))
    case .hinge:
      loss = max(0, 1 - x)
      dDelta = 1 - x > 0 ? -beta : 0
    case .ipo:
      let d = delta - 1 / (2 * beta)
      loss = d * d
      dDelta = 2 * d
    case .robust:
      loss = (-(1 - eps) * logSigmoid(x) + eps * logSigmoid(-x)) / (1 - 2 * eps)
      dDelta = -beta * ((1 - eps) * sigmoid(-x) + eps * sigmoid(x)) / (1 - 2 * eps)
    case .reward, .orpo:
      loss = -logSigmoid(delta)
      dDelta = -sigmoid(-delta)
    }
    if p.kind == .reward {
      return PreferencePairLoss(loss: loss, dPolicyChosen: dDelta, dPolicyRejected: -dDelta,
                                rewardChosen: policyChosen, rewardRejected: policyRejected)
    }
    return PreferencePairLoss(loss: loss, dPolicyChosen: dDelta / lc, dPolicyRejected: -dDelta / lr,
                              rewardChosen: beta * (policyChosen - referenceChosen),
                              rewardRejected: beta * (policyRejected - referenceRejected))
  }

  /// The whole op on host arrays (rows = 2 × pairs, chosen first in each pair): per-row
  /// token weights −(dL/dπ_row) with L = (Σ_pairs ℓ + RPO)/`pairsInStep`, the micro-batch's
  /// share of L, and the metric sums (`PreferenceLossParameters.Metric`).
  public static func batch(policy: [Double], reference: [Double], answerTokens: [Int], pairsInStep: Double,
                           _ p: PreferenceLossParameters) -> (rowWeights: [Double], loss: Double, metrics: [Double]) {
    let rows = policy.count, pairs = rows / 2
    var w = [Double](repeating: 0, count: rows)
    var m = [Double](repeating: 0, count: PreferenceLossParameters.metricCount)
    var loss = 0.0
    typealias M = PreferenceLossParameters.Metric
    for i in 0..<pairs {
      let c = 2 * i, r = c + 1
      let out = pair(policyChosen: policy[c], policyRejected: policy[r], referenceChosen: reference[c],
                     referenceRejected: reference[r], chosenTokens: answerTokens[c], rejectedTokens: answerTokens[r], p)
      loss += out.loss / pairsInStep
      // dL/dloss_token = −dL/dπ: the cross-entropy gradient's weight.
      w[c] = -out.dPolicyChosen / pairsInStep
      w[r] = -out.dPolicyRejected / pairsInStep
      m[M.loss.rawValue] += out.loss
      m[M.rewardsChosen.rawValue] += out.rewardChosen
      m[M.rewardsRejected.rawValue] += out.rewardRejected
      m[M.accuracy.rawValue] += out.rewardChosen > out.rewardRejected ? 1 : 0
      // ORPO logs the length-averaged log-probs it works on (TRL's logps/chosen there).
      let orpo = p.kind == .orpo
      m[M.logpsChosen.rawValue] += orpo ? policy[c] / Double(max(answerTokens[c], 1)) : policy[c]
      m[M.logpsRejected.rawValue] += orpo ? policy[r] / Double(max(answerTokens[r], 1)) : policy[r]
      m[M.pairs.rawValue] += 1
      m[M.logOddsRatio.rawValue] += out.logOddsRatio
      m[M.logOdds.rawValue] += out.logOdds
    }
    if p.rpoAlpha > 0 {
      // α · mean NLL over this micro-batch's chosen tokens, weighted by its share of pairs.
      let chosenTokens = stride(from: 0, to: rows, by: 2).reduce(0) { $0 + answerTokens[$1] }
      if chosenTokens > 0 {
        let share = Double(pairs) / pairsInStep
        let nll = stride(from: 0, to: rows, by: 2).reduce(0.0) { $0 - policy[$1] } / Double(chosenTokens)
        loss += p.rpoAlpha * nll * share
        for c in stride(from: 0, to: rows, by: 2) { w[c] += p.rpoAlpha * share / Double(chosenTokens) }
      }
    }
    return (w, loss, m)
  }
}
