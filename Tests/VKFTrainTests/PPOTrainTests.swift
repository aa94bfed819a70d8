// PPO through the Trainer on the tiny model: completions sampled in the loop raise a
// learnable score, TRL's metrics are logged, resuming equals an uninterrupted run, and the
// loop runs on Vulkan.
import Foundation
import XCTest
import VKFCore
import VKFData
import VKFModel
import VKFPEFT
import VKFTestSupport
@testable import VKFTrain

final class PPOTrainTests: XCTestCase {
  /// How much the mean score of the last 10 of 60 steps must exceed the first 10's (chance:
  /// 1/40 per token; measured 0.027 → 0.208 with these seeds).
  static let learnedMargin = 0.08

  /// Eight 3-token prompts as trainer examples (the PPO task reads only their ids).
  static let prompts: [[Int]] = GRPOTrainTests.prompts
  static var examples: [TokenizedExample] { GRPOTrainTests.examples }

  /// The "reward model": the share of the completion's tokens that are id 7.
  static func score(_ rows: [[Int]], promptLength: Int = 3) -> [Double] {
    rows.map { row in
      let c = row.dropFirst(promptLength)
      return Double(c.filter { $0 == 7 }.count) / Double(max(c.count, 1))
    }
  }

  static func task(on backend: Backend = TestBackends.cpu, config: PPOConfig? = nil) throws -> PPOTask {
    let weights = try DecoderWeights(from: Tiny.weights, shape: Tiny.shape, backend: backend)
    let lora = try LoRAModel(weights: weights, config: LoRAConfig(r: 4, alpha: 8), seed: 3)
    let model = try DecoderModel(weights: weights)
    var c = PPOConfig()
    c.numPPOEpochs = 2; c.numMiniBatches = 2; c.temperature = 1; c.vfCoef = 0.5; c.klCoef = 0.02
    let head = try ScoreHead(values: [Float](repeating: 0, count: Tiny.shape.hidden), backend: backend)
    let task = try PPOTask(model: model, lora: lora, valueHead: head, config: config ?? c, microBatchRows: 2, padID: 0)
    let generator = BatchGenerator(model: model, decoder: GRPOTrainTests.Decoder(), eosTokenIDs: [39],
                                   sharesActivationMemory: true)
    task.source = PPORolloutSource.sampling(generator, temperature: 1, maxNewTokens: 6, seed: 5) { Self.score($0) }
    return task
  }

  func test_ppo_raisesTheScore_andLogsTRLMetrics() throws {
    let task = try Self.task()
    let trainer = try Trainer(task: task, config: GRPOTrainTests.config(steps: 60), train: Self.examples)
    var scores: [Double] = [], last: [String: Double] = [:]
    trainer.onEvent = { e in
      if case .progress(let p) = e { scores.append(p.extra["objective/scores"] ?? .nan); last = p.extra }
    }
    try trainer.train()
    XCTAssertEqual(scores.count, 60)
    // 4 prompts × 2 accumulation = 8 rows per step: 2 epochs × 2 mini-batches of 4 rows.
    XCTAssertEqual(task.updatesPerStep, 4)
    for key in ["objective/kl", "objective/entropy", "objective/non_score_reward", "objective/rlhf_reward",
                "objective/scores", "policy/approxkl_avg", "policy/clipfrac_avg", "loss/policy_avg", "loss/value_avg",
                "val/clipfrac_avg", "val/ratio", "val/ratio_var", "val/num_eos_tokens", "completions/mean_length", "entropy"] {
      XCTAssertNotNil(last[key], "no \(key) logged")
    }
    let before = scores.prefix(10).reduce(0, +) / 10, after = scores.suffix(10).reduce(0, +) / 10
    print("PPO tiny: mean score of the first 10 steps \(before), of the last 10 \(after)")
    XCTAssertGreaterThan(after, before + Self.learnedMargin, "the share of sevens grows")
  }

  func test_resume_equalsUninterrupted() throws {
    var c = GRPOTrainTests.config(steps: 4)
    c.saveSteps = 2
    let full = try Self.task()
    let dir = try Tiny.temporaryDirectory("ppo-resume")
    defer { try? FileManager.default.removeItem(at: dir) }
    try Trainer(task: full, config: c, train: Self.examples, outputDirectory: dir).train()
    // The curve draws the mean score under the loss.
    let svg = try String(contentsOf: dir.appendingPathComponent("loss-curve.svg"), encoding: .utf8)
    XCTAssertTrue(svg.contains("<polyline id=\"reward\""), svg)
    let resumed = try Self.task()
    let out = try Tiny.temporaryDirectory("ppo-resumed")
    defer { try? FileManager.default.removeItem(at: out) }
    let trainer = try Trainer(task: resumed, config: c, train: Self.examples, outputDirectory: out)
    _ = try trainer.resume(from: dir.appendingPathComponent("checkpoint-2"))
    try trainer.train()
    let a = try Tiny.values(full), b = try Tiny.values(resumed)
    XCTAssertNotNil(a[PPOTask.valueHeadName], "the value head is checkpointed with the adapter")
    for (name, v) in a { XCTAssertTrue(b[name] == v, "\(name) differs after resuming") }
  }

  /// A rollout batch of 8 rows refuses 3 mini-batches, naming the key.
  func test_miniBatchesMustDivideTheBatch() throws {
    var c = PPOConfig()
    c.numMiniBatches = 3
    let trainer = try Trainer(task: try Self.task(config: c), config: GRPOTrainTests.config(steps: 1), train: Self.examples)
    XCTAssertThrowsError(try trainer.train()) { XCTAssertTrue("\($0)".contains("num_mini_batches"), "\($0)") }
  }

  /// On Vulkan: the same loop runs (sampling on the device, the cache in the arena) and logs.
  func test_ppo_runsOnVulkan() throws {
    let task = try Self.task(on: try Tiny.vulkanOrSkip())
    let trainer = try Trainer(task: task, config: GRPOTrainTests.config(steps: 1), train: Self.examples)
    var losses: [Double] = [], scores: [Double] = []
    trainer.onEvent = { e in if case .progress(let p) = e { losses.append(p.loss); scores.append(p.extra["objective/scores"] ?? .nan) } }
    try trainer.train()
    XCTAssertEqual(losses.count, 1)
    XCTAssertTrue(losses.allSatisfy(\.isFinite) && scores.allSatisfy(\.isFinite), "\(losses) \(scores)")
  }
}
