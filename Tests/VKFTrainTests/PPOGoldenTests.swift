// PPO against TRL 0.29.1's PPOTrainer (trl.experimental.ppo, its last release) run for one
// update on fixed rollouts (tools/make_ppo_golden.py): the rollout's log-probs, reference
// log-probs, values and reward-model scores from our passes; the per-token KL, rewards, GAE
// advantages and returns; then the whole update through the `Trainer` (num_ppo_epochs ×
// num_mini_batches AdamW steps in TRL's row order) — its logged metrics and the final adapter
// and value head — on the CPU and on Vulkan.
import Foundation
import XCTest
import VKFCore
import VKFData
import VKFModel
import VKFPEFT
import VKFTestSupport
@testable import VKFTrain

final class PPOGoldenTests: XCTestCase {
  /// Log-probs, values and scores: f32 forward passes of the 2-layer model in two libraries.
  static let passTolerance = 2e-5
  /// Rewards, advantages and returns: host math on those passes (whitening divides by a std
  /// of O(0.1–1)).
  static let advantageTolerance = 1e-4
  /// Averages of the update's losses, ratios and clip fractions: one clipped token flipping
  /// would move a fraction by ≥ 1/48, far outside this.
  static let metricTolerance = 2e-4
  /// Final parameters after 2–4 AdamW steps at lr 5e-3 from the same start (changes of
  /// ~1e-2): the two runs' f32 gradients differ in their last bits.
  static let parameterTolerance = 1e-4
  /// Case 0 steps on TRL's half-scaled micro-batch losses (see `config`): for the smallest
  /// gradients Adam's ε then shows (one element of ~6 000 moves 2e-4 on the CPU).
  static let halfScaledParameterTolerance = 5e-4

  struct Row: Decodable { var prompt: [Int], completion: [Int] }
  struct Settings: Decodable {
    var learning_rate: Double, per_device_train_batch_size: Int, gradient_accumulation_steps: Int
    var num_mini_batches: Int, num_ppo_epochs: Int, kl_estimator: String, kl_coef: Double, cliprange: Double
    var cliprange_value: Double, vf_coef: Double, gamma: Double, lam: Double, whiten_rewards: Bool
    var missing_eos_penalty: Double?, temperature: Double, rows: Int
  }
  struct Case: Decodable {
    var settings: Settings, row_order: [Int], permutations: [[Int]], metrics: [String: Double], optimizer_steps: Int
  }
  struct Meta: Decodable { var PAD: Int, EOS: Int, W: Int, ROWS: [Row], cases: [Case] }

  static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

  static func load() throws -> (Meta, SafetensorsFile) {
    let meta = try JSONDecoder().decode(Meta.self, from: Data(contentsOf: fixtures.appendingPathComponent("ppo_golden.json")))
    return (meta, try SafetensorsFile(contentsOf: fixtures.appendingPathComponent("ppo_golden.safetensors")))
  }

  /// A fixture row's kept completion: up to and including the first EOS, else all W ids.
  static func kept(_ row: Row, eos: Int) -> PPOCompletion {
    if let e = row.completion.firstIndex(of: eos) { return PPOCompletion(ids: Array(row.completion[...e]), endsWithEOS: true) }
    return PPOCompletion(ids: row.completion, endsWithEOS: false)
  }

  static func config(_ s: Settings) throws -> PPOConfig {
    var c = PPOConfig()
    c.klCoef = s.kl_coef; c.klEstimator = try XCTUnwrap(PPOKLEstimator(rawValue: s.kl_estimator))
    c.cliprange = s.cliprange; c.cliprangeValue = s.cliprange_value; c.vfCoef = s.vf_coef; c.gamma = s.gamma; c.lam = s.lam
    c.numPPOEpochs = s.num_ppo_epochs; c.whitenRewards = s.whiten_rewards; c.missingEOSPenalty = s.missing_eos_penalty
    c.temperature = Float(s.temperature)
    // TRL steps AdamW after every micro-batch of case 0: accelerate syncs at the end of its
    // one-batch dataloader, so gradient_accumulation_steps 2 never accumulates there. That is
    // our num_mini_batches 2 over the same row pairs; the ½ loss scale TRL keeps changes Adam's
    // step only through ε (1e-8 against gradients ≥ 1e-6).
    c.numMiniBatches = s.num_mini_batches * s.gradient_accumulation_steps
    return c
  }

  func test_eachCase_matchesTRL_cpu() throws { try check(on: TestBackends.cpu) }
  func test_eachCase_matchesTRL_vulkan() throws { try check(on: try Tiny.vulkanOrSkip()) }

  private func check(on backend: Backend) throws {
    let (m, file) = try Self.load()
    for (i, c) in m.cases.enumerated() {
      try checkCase(i, c, m, file, backend)
    }
  }

  private func checkCase(_ index: Int, _ c: Case, _ m: Meta, _ file: SafetensorsFile, _ backend: Backend) throws {
    let name = "case\(index)"
    let (model, lora) = try GoldenLoRAModel.load(on: backend, file)
    let head = try ScoreHead(values: try file.floats("value_head"), backend: backend)
    let task = try PPOTask(model: model, lora: lora, valueHead: head, config: try Self.config(c.settings),
                           microBatchRows: c.settings.per_device_train_batch_size, padID: m.PAD)
    // The reward model: the frozen base with its own score head.
    let rewardModel = try GoldenLoRAModel.base(on: backend)
    let scorer = RewardTask(model: rewardModel, head: try ScoreHead(values: try file.floats("reward_head"), backend: backend),
                            baseTrainables: [], headName: ScoreHead.parameterName, zero: {}, padID: m.PAD)
    let rows = Array(m.ROWS.prefix(c.settings.rows))
    func row(of prompt: [Int]) throws -> Int { try XCTUnwrap(rows.firstIndex { $0.prompt == prompt }, "\(prompt)") }
    task.source = PPORolloutSource(seed: 0, complete: { prompts, _, _ in
      try prompts.map { Self.kept(rows[try row(of: $0)], eos: m.EOS) }
    }, score: { sequences in
      let examples = sequences.map { TokenizedExample(inputIds: $0, targets: [Int](repeating: -100, count: $0.count)) }
      return try Batching.batches(examples, batchSize: sequences.count, padID: m.PAD).flatMap { try scorer.scores($0) }
    })
    // Our rows come in the trainer's order; TRL's permutations index its own (row_order).
    var ours: [[Int]] = []
    task.permutation = { _, epoch, n in
      c.permutations[epoch].map { trl in ours.firstIndex { $0 == rows[c.row_order[trl]].prompt } ?? n }
    }
    var config = TrainingConfig()
    config.learningRate = c.settings.learning_rate; config.lrSchedulerType = "linear"; config.warmupSteps = 0
    config.weightDecay = 0; config.maxGradNorm = 0  // TRL's PPO loop never clips
    config.perDeviceTrainBatchSize = c.settings.per_device_train_batch_size
    config.gradientAccumulationSteps = c.settings.gradient_accumulation_steps
    config.numTrainEpochs = 1; config.loggingSteps = 1; config.seed = 7
    let examples = rows.map { TokenizedExample(inputIds: $0.prompt, targets: Array($0.prompt.dropFirst()) + [-100]) }
    let trainer = try Trainer(task: task, config: config, train: examples, padID: m.PAD)
    XCTAssertEqual(trainer.totalSteps, 1, name)
    var logged: [String: Double] = [:]
    trainer.onEvent = { if case .progress(let p) = $0 { logged = p.extra } }
    // The trainer's rows, known once it hands the step's batches over.
    let plan = trainer.nextStepBatches()
    ours = plan.flatMap(GRPOTask.prompts)
    trainer.cursor = DataCursor()
    try trainer.train()

    // The rollout, row by row in TRL's order.
    let b = try XCTUnwrap(task.batch)
    // One AdamW step per micro-batch here (each mini-batch is one micro-batch), as TRL's count.
    XCTAssertEqual(task.updatesPerStep, c.optimizer_steps, name)
    XCTAssertEqual(task.updateStats.count, c.optimizer_steps, name)
    let order = try c.row_order.map { j in try XCTUnwrap(ours.firstIndex { $0 == rows[j].prompt }) }
    func compare(_ key: String, _ got: [[Double]], _ tolerance: Double, lengths: [Int]) throws {
      let want = try file.floats("\(name).\(key)")
      for (trlRow, r) in order.enumerated() {
        for t in 0..<lengths[r] {
          let w = Double(want[trlRow * m.W + t])
          XCTAssertEqual(got[r][t], w, accuracy: tolerance, "\(name) \(key)[\(trlRow), \(t)] on \(model.backend.name)")
        }
      }
    }
    let shape = b.shape
    XCTAssertEqual(shape.width, m.W)
    try compare("logprobs", b.logProbs, Self.passTolerance, lengths: shape.lengths)
    try compare("values", b.values, Self.passTolerance, lengths: shape.valueLengths)
    try compare("kl", b.advantages.kl, Self.passTolerance, lengths: shape.lengths)
    try compare("rewards", b.advantages.rewards, Self.advantageTolerance, lengths: shape.valueLengths)
    try compare("advantages", b.advantages.advantages, Self.advantageTolerance, lengths: shape.lengths)
    try compare("returns", b.advantages.returns, Self.advantageTolerance, lengths: shape.valueLengths)

    // The logged metrics. TRL's objective/entropy counts −1 for each padded slot (log-probs
    // filled with 1.0 there); ours sums the kept tokens only.
    let padded = Double(shape.lengths.reduce(0) { $0 + m.W - $1 }) / Double(shape.rows)
    for (key, want) in c.metrics {
      switch key {
      case "lr", "episode", "eps", "policy/entropy_avg": continue  // not ours / the sampler's entropy instead
      case "objective/entropy":
        XCTAssertEqual(try XCTUnwrap(logged[key]) - padded, want, accuracy: Self.metricTolerance, "\(name) \(key)")
      default:
        XCTAssertEqual(try XCTUnwrap(logged[key], "\(name): no \(key)"), want, accuracy: Self.metricTolerance,
                       "\(name) \(key) on \(model.backend.name)")
      }
    }
    // The adapter and value head after the update.
    for t in task.trainableTensors {
      let key = t.name == PPOTask.valueHeadName ? "\(name).final.value_head" : "\(name).final.\(t.name)"
      let want = try file.floats(key), got = try backend.floats(t.value)
      let worst = zip(got, want).map { abs(Double($0) - Double($1)) }.max() ?? 0
      XCTAssertLessThan(worst, index == 0 ? Self.halfScaledParameterTolerance : Self.parameterTolerance,
                        "\(name) \(t.name) on \(model.backend.name)")
    }
  }
}
