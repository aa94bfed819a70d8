// DPO-family and reward losses vs torch autograd of TRL's formulas (tools/make_preference_fixtures.py).
import Foundation
import XCTest
@testable import VKFTrain

final class PreferenceLossTests: XCTestCase {
  /// Both sides compute in f64 with the same formulas; only summation order differs.
  static let relativeTolerance = 1e-9

  private struct Fixture: Decodable {
    struct DPOCase: Decodable {
      var type: String, beta: Double, label_smoothing: Double
      var policy_chosen, policy_rejected, reference_chosen, reference_rejected: Double
      var chosen_tokens, rejected_tokens: Int
      var loss, d_policy_chosen, d_policy_rejected, reward_chosen, reward_rejected: Double
    }
    struct RewardCase: Decodable { var chosen, rejected, margin, loss, d_chosen, d_rejected: Double }
    var dpo: [DPOCase]
    var reward: [RewardCase]
  }

  private func fixture() throws -> Fixture {
    let url = try XCTUnwrap(Bundle.module.url(forResource: "preference_loss", withExtension: "json", subdirectory: "Fixtures"))
    return try JSONDecoder().decode(Fixture.self, from: Data(contentsOf: url))
  }

  private func close(_ a: Double, _ b: Double, _ what: String) {
    XCTAssertLessThanOrEqual(abs(a - b), Self.relativeTolerance * max(1, abs(b)), "\(what): \(a) vs \(b)")
  }

  func test_dpoLosses_matchTorch() throws {
    let f = try fixture()
    XCTAssertEqual(Set(f.dpo.map(\.type)), Set(DPOLossType.allCases.map(\.rawValue)), "every loss type is covered")
    for c in f.dpo {
      let config = DPOLossConfig(type: try XCTUnwrap(DPOLossType(rawValue: c.type)), beta: c.beta,
                                 labelSmoothing: c.label_smoothing)
      XCTAssertNoThrow(try config.validate())
      let out = PreferenceLoss.dpo(PairLogProbs(
        policyChosen: c.policy_chosen, policyRejected: c.policy_rejected, referenceChosen: c.reference_chosen,
        referenceRejected: c.reference_rejected, chosenTokens: c.chosen_tokens, rejectedTokens: c.rejected_tokens), config)
      let name = "\(c.type) β=\(c.beta) ε=\(c.label_smoothing)"
      close(out.loss, c.loss, "\(name) loss")
      close(out.dPolicyChosen, c.d_policy_chosen, "\(name) d/dπc")
      close(out.dPolicyRejected, c.d_policy_rejected, "\(name) d/dπr")
      close(out.rewardChosen, c.reward_chosen, "\(name) reward chosen")
      close(out.rewardRejected, c.reward_rejected, "\(name) reward rejected")
    }
  }

  func test_sigmoidAtEqualPolicyAndReference_isLog2() {
    let p = PairLogProbs(policyChosen: -12, policyRejected: -30, referenceChosen: -12, referenceRejected: -30,
                         chosenTokens: 5, rejectedTokens: 9)
    XCTAssertEqual(PreferenceLoss.dpo(p, DPOLossConfig()).loss, log(2), accuracy: 1e-15)
  }

  func test_rewardLoss_matchesTorch() throws {
    for c in try fixture().reward {
      let out = PreferenceLoss.reward(chosen: c.chosen, rejected: c.rejected, margin: c.margin)
      close(out.loss, c.loss, "reward loss")
      close(out.dChosen, c.d_chosen, "d/dr_c")
      close(out.dRejected, c.d_rejected, "d/dr_r")
    }
  }

  func test_badSettings_rejected() {
    XCTAssertThrowsError(try DPOLossConfig(beta: 0).validate())
    XCTAssertThrowsError(try DPOLossConfig(type: .robust, labelSmoothing: 0.5).validate())
    XCTAssertThrowsError(try DPOLossConfig(type: .ipo, labelSmoothing: 0.1).validate())
    XCTAssertThrowsError(try DPOLossConfig(rpoAlpha: -1).validate())
  }

  func test_metrics_meansAndAccuracy() {
    var m = DPOStepMetrics()
    let a = PairLogProbs(policyChosen: -1, policyRejected: -5, referenceChosen: -2, referenceRejected: -4,
                         chosenTokens: 1, rejectedTokens: 1)
    let b = PairLogProbs(policyChosen: -3, policyRejected: -1, referenceChosen: -2, referenceRejected: -2,
                         chosenTokens: 1, rejectedTokens: 1)
    let cfg = DPOLossConfig(beta: 0.5)
    m.add(PreferenceLoss.dpo(a, cfg), a)
    m.add(PreferenceLoss.dpo(b, cfg), b)
    XCTAssertEqual(m.metrics["rewards/accuracies"], 0.5)
    XCTAssertEqual(m.metrics["rewards/chosen"] ?? .nan, (0.5 * 1 + 0.5 * -1) / 2, accuracy: 1e-12)
    XCTAssertEqual(m.metrics["logps/rejected"] ?? .nan, -3, accuracy: 1e-12)
  }
}
