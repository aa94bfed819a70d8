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

/// The rollout step through the model: log-probs, loss and LoRA gradients against TRL.
final class GRPOStepGoldenTests: XCTestCase {
  /// Per-token log-probs: our f32 forward against PyTorch's (the fixture models' bound).
  static let logProbTolerance = 2e-5
  /// Losses: sums of ≤ 32 f32 terms (~1e-7 relative each) of values ≤ ~2.
  static let lossTolerance = 2e-6
  /// LoRA gradients: the preference goldens' bound (the same f32 ops in another order).
  static let gradientNMSE = 1e-9, gradientMaxAbs = 1e-5

  func test_rolloutStep_matchesTRL_cpu() throws { try check(on: TestBackends.cpu) }
  func test_rolloutStep_matchesTRL_vulkan() throws { try check(on: try Tiny.vulkanOrSkip()) }

  private func model(on backend: Backend, _ file: SafetensorsFile, headScale: Float = 1) throws -> (DecoderModel, LoRAModel) {
    try GoldenLoRAModel.load(on: backend, file, headScale: headScale)
  }

  /// Log-probs at temperature T are those of logits / T: a step at T = 0.7 equals, loss and
  /// every LoRA gradient, a step at T = 1 of the model whose LM head is divided by 0.7.
  func test_temperature_equalsAHeadDividedByIt() throws {
    let (m, file) = try GRPOGoldenTests.load()
    let t: Float = 0.7
    let (hot, hotLoRA) = try model(on: TestBackends.cpu, file)
    let (scaled, scaledLoRA) = try model(on: TestBackends.cpu, file, headScale: 1 / t)
    let masks = m.completions.map { CompletionMask(completion: $0, eos: [m.eos_token_id], padID: m.pad_token_id) }
    var rollouts = GRPORollouts(prompts: m.prompt_of_row.map { m.prompts[$0] },
                                completions: zip(m.completions, masks).map { Array($0.prefix($1.length)) },
                                masks: masks, advantages: m.cases[0].advantages)
    var config = try GRPOGoldenTests.config(m.cases[0], m)
    let (ids, targets, _, positions) = rollouts.sequences(padID: m.pad_token_id)
    config.temperature = t
    let a = try GRPOTask(model: hot, lora: hotLoRA, loss: config, padID: m.pad_token_id)
    config.temperature = 1
    let b = try GRPOTask(model: scaled, lora: scaledLoRA, loss: config, padID: m.pad_token_id)
    let policy = try a.logProbs(ids: ids, targets: targets, rows: rollouts.rows, positions: positions)
    let divided = try b.logProbs(ids: ids, targets: targets, rows: rollouts.rows, positions: positions)
    for (x, y) in zip(policy.joined(), divided.joined()) { XCTAssertEqual(x, y, accuracy: Self.logProbTolerance) }
    rollouts.oldLogProbs = policy.enumerated().map { r, row in row.indices.map { row[$0] + m.old_logp_offsets[r][$0] } }
    let tokens = rollouts.lossTokens(config).reduce(0, +)
    try a.zeroGradients(); try b.zeroGradients()
    let la = try a.train(on: rollouts, stepTokens: tokens, microBatches: 1, dropoutSeed: 0)
    let lb = try b.train(on: rollouts, stepTokens: tokens, microBatches: 1, dropoutSeed: 0)
    XCTAssertEqual(la.loss, lb.loss, accuracy: Float(Self.lossTolerance))
    XCTAssertNotEqual(la.loss, 0)
    for (p, q) in zip(a.trainableTensors, b.trainableTensors) {
      if let why = Compare.check(try TestBackends.cpu.floats(q.gradient), try TestBackends.cpu.floats(p.gradient),
                                 nmse: Self.gradientNMSE, maxAbs: Self.gradientMaxAbs) {
        XCTFail("\(p.name): \(why)")
      }
    }
  }

  private func check(on backend: Backend) throws {
    let (m, file) = try GRPOGoldenTests.load()
    let (model, lora) = try model(on: backend, file)
    let masks = m.completions.map { CompletionMask(completion: $0, eos: [m.eos_token_id], padID: m.pad_token_id) }
    var rollouts = GRPORollouts(prompts: m.prompt_of_row.map { m.prompts[$0] },
                                completions: zip(m.completions, masks).map { Array($0.prefix($1.length)) },
                                masks: masks, advantages: [])
    let (ids, targets, t, positions) = rollouts.sequences(padID: m.pad_token_id)
    XCTAssertEqual(t, m.seq_length)
    XCTAssertEqual(ids, try file.floats("ids").map { Int32($0) }, "prompt + completion, right-padded")
    XCTAssertEqual(targets, try file.floats("targets").map { Int32($0) })

    let probe = try GRPOTask(model: model, lora: lora, loss: GRPOLossConfig(), padID: m.pad_token_id)
    let width = m.max_completion_length
    let policy = try probe.logProbs(ids: ids, targets: targets, rows: rollouts.rows, positions: positions)
    let want = try file.floats("policy_logps")
    lora.enabled = false
    let reference = try probe.logProbs(ids: ids, targets: targets, rows: rollouts.rows, positions: positions)
    lora.enabled = true
    let wantRef = try file.floats("ref_logps")
    for r in 0..<rollouts.rows {
      for j in policy[r].indices {
        XCTAssertEqual(policy[r][j], Double(want[r * width + j]), accuracy: Self.logProbTolerance, "policy \(r),\(j)")
        XCTAssertEqual(reference[r][j], Double(wantRef[r * width + j]), accuracy: Self.logProbTolerance, "ref \(r),\(j)")
      }
    }
    rollouts.oldLogProbs = policy.enumerated().map { r, row in row.indices.map { row[$0] + m.old_logp_offsets[r][$0] } }
    for (i, c) in m.cases.enumerated() where c.has_gradients {
      let config = try GRPOGoldenTests.config(c, m)
      let task = try GRPOTask(model: model, lora: lora, loss: config, padID: m.pad_token_id)
      rollouts.advantages = c.advantages
      try task.zeroGradients()
      let tokens = rollouts.lossTokens(config).reduce(0, +)
      let out = try task.train(on: rollouts, stepTokens: tokens, microBatches: 1, dropoutSeed: 0)
      let what = "case \(i + 1) \(c.loss_type) β \(c.beta) on \(backend.name)"
      XCTAssertEqual(Double(out.loss), c.loss, accuracy: Self.lossTolerance, what)
      for p in task.trainableTensors {
        if let why = Compare.check(try file.floats("case\(i + 1).grad." + p.name), try backend.floats(p.gradient),
                                   nmse: Self.gradientNMSE, maxAbs: Self.gradientMaxAbs) {
          XCTFail("\(what) \(p.name): \(why)")
        }
      }
    }
  }
}
