// GRPO against TRL 1.16's GRPOTrainer on fixed rollouts (tools/make_grpo_golden.py): the
// advantages, completion masks, reward and length metrics, and each case's loss, KL and clip
// ratios from the fixture's log-probs (host math); then the whole rollout step — our policy
// and reference passes, the loss and the LoRA gradients — on the CPU and on Vulkan.
import Foundation
import XCTest
import VKFCore
import VKFData
import VKFModel
import VKFPEFT
import VKFTestSupport
@testable import VKFTrain

final class GRPOGoldenTests: XCTestCase {
  /// Advantages, rewards and metrics: f32 (TRL) against Double (ours) of O(1) values.
  static let valueTolerance = 1e-5
  /// Losses from the fixture's log-probs: sums of ≤ 48 f32 terms of O(1) in TRL.
  static let lossRelativeTolerance = 1e-5

  struct Case: Decodable {
    var loss_type: String, scale_rewards: String, beta: Double, epsilon: Double, epsilon_high: Double
    var has_gradients: Bool, use_bias_correction_kl: Bool, mask_truncated_completions: Bool
    var advantages: [Double], loss: Double, kl: Double?, clip_ratio_low: Double, clip_ratio_high: Double
    var clip_ratio_region: Double, num_items_in_batch: Int, frac_reward_zero_std: Double
  }
  struct Meta: Decodable {
    var prompts: [[Int]], prompt_of_row: [Int], completions: [[Int]], completion_lengths: [Int], truncated: [Bool]
    var eos_token_id: Int, pad_token_id: Int, num_generations: Int, max_completion_length: Int, seq_length: Int
    var rewards_per_func: [[Double?]], reward_weights: [Double], old_logp_offsets: [[Double]]
    var metrics: [String: Double], cases: [Case]
  }

  static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

  static func load() throws -> (Meta, SafetensorsFile) {
    let meta = try JSONDecoder().decode(Meta.self, from: Data(contentsOf: fixtures.appendingPathComponent("grpo_golden.json")))
    return (meta, try SafetensorsFile(contentsOf: fixtures.appendingPathComponent("grpo_golden.safetensors")))
  }

  static func config(_ c: Case, _ m: Meta) throws -> GRPOLossConfig {
    GRPOLossConfig(beta: c.beta, epsilon: c.epsilon, epsilonHigh: c.epsilon_high,
                   lossType: try XCTUnwrap(GRPOLossType(rawValue: c.loss_type)),
                   scaleRewards: try XCTUnwrap(GRPORewardScaling(rawValue: c.scale_rewards)),
                   biasCorrectedKL: c.use_bias_correction_kl, maskTruncatedCompletions: c.mask_truncated_completions,
                   maxCompletionLength: m.max_completion_length)
  }

  func test_masksRewardsAndLengthMetrics_matchTRL() throws {
    let (m, _) = try Self.load()
    let masks = m.completions.map { CompletionMask(completion: $0, eos: [m.eos_token_id], padID: m.pad_token_id) }
    XCTAssertEqual(masks.map(\.length), m.completion_lengths)
    XCTAssertEqual(masks.map(\.truncated), m.truncated)
    let perFunction = m.rewards_per_func.map { $0.map { $0 ?? .nan } }
    let rewards = GRPOMath.combinedRewards(perFunction, weights: m.reward_weights)
    let metrics = GRPOMetrics.rollout(rewardsPerFunction: perFunction, names: ["reward_a", "reward_b"], rewards: rewards,
                                      masks: masks)
    for (key, want) in m.metrics where key != "entropy" && key != "frac_reward_zero_std" {
      let got = try XCTUnwrap(metrics[key], "no metric \(key)")
      XCTAssertEqual(got, want, accuracy: Self.valueTolerance, key)
    }
  }

  func test_eachCase_advantagesLossKLAndClipRatios_matchTRL() throws {
    let (m, file) = try Self.load()
    let rows = m.completions.count, width = m.max_completion_length
    let policy = try file.floats("policy_logps").map(Double.init), ref = try file.floats("ref_logps").map(Double.init)
    let old = try file.floats("old_logps").map(Double.init)
    let masks = m.completions.map { CompletionMask(completion: $0, eos: [m.eos_token_id], padID: m.pad_token_id) }
    let rewards = GRPOMath.combinedRewards(m.rewards_per_func.map { $0.map { $0 ?? .nan } }, weights: m.reward_weights)
    for c in m.cases {
      let config = try Self.config(c, m)
      let (adv, zero) = GRPOMath.advantages(rewards: rewards, groupSize: m.num_generations, scaling: config.scaleRewards)
      for (a, b) in zip(adv, c.advantages) { XCTAssertEqual(a, b, accuracy: Self.valueTolerance, "\(c.loss_type)") }
      XCTAssertEqual(Double(zero.filter { $0 }.count) / Double(rows), c.frac_reward_zero_std, accuracy: 1e-9)
      let kept = masks.map { config.maskTruncatedCompletions && $0.truncated ? 0 : $0.length }
      XCTAssertEqual(kept.reduce(0, +), c.num_items_in_batch)
      let scales = GRPOMath.rowScales(config, tokens: kept, stepTokens: kept.reduce(0, +), microBatches: 1)
      var scale = [Double](repeating: 0, count: rows * width), a = scale
      for r in 0..<rows {
        for t in 0..<kept[r] { scale[r * width + t] = scales[r] }
        for t in 0..<width { a[r * width + t] = adv[r] }
      }
      let s = GRPOMath.surrogate(config, logp: policy, old: old, ref: ref, advantage: a, scale: scale)
      let what = "\(c.loss_type) \(c.scale_rewards) β \(c.beta)"
      XCTAssertEqual(s.loss, c.loss, accuracy: Self.lossRelativeTolerance * max(abs(c.loss), 1e-3), what)
      if let kl = c.kl { XCTAssertEqual(s.klSum / Double(s.tokens), kl, accuracy: Self.valueTolerance, what) }
      XCTAssertEqual(Double(s.lowClipped) / Double(s.tokens), c.clip_ratio_low, accuracy: 1e-7, what)
      XCTAssertEqual(Double(s.highClipped) / Double(s.tokens), c.clip_ratio_high, accuracy: 1e-7, what)
    }
  }
}
