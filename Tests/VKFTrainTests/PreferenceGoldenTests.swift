// DPO (every loss type, and rpo) and reward-model steps on the tiny fixture model vs PyTorch +
// PEFT + transformers (tools/make_preference_golden.py), on the CPU and on Vulkan.
import Foundation
import XCTest
import VKFCore
import VKFData
import VKFModel
import VKFPEFT
import VKFTestSupport
@testable import VKFTrain

final class PreferenceGoldenTests: XCTestCase {
  /// Loss and summed log-probs: f32 logits and log-softmax in both; sums of ≤ 7 terms.
  static let lossRelativeTolerance = 1e-5
  /// LoRA / score gradients: the same f32 ops in another order, as the SFT LoRA golden test
  /// (PEFTGoldenLoRATests: measured NMSE ≤ 4e-12 there).
  static let gradientNMSE = 1e-9, gradientMaxAbs = 1e-5

  private struct Meta: Decodable {
    struct Case: Decodable { var name, type: String; var beta, label_smoothing: Double; var rpo_alpha: Double? }
    var cases: [Case]
    var margin: Double
    var seq_length: Int
  }

  private static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("Fixtures")

  private func load() throws -> (Meta, SafetensorsFile) {
    let meta = try JSONDecoder().decode(Meta.self, from: Data(contentsOf: Self.fixtures.appendingPathComponent("preference_golden.json")))
    return (meta, try SafetensorsFile(contentsOf: Self.fixtures.appendingPathComponent("preference_golden.safetensors")))
  }

  private func model(on backend: Backend) throws -> DecoderModel { try GoldenLoRAModel.base(on: backend) }

  private func lora(_ model: DecoderModel, _ file: SafetensorsFile) throws -> LoRAModel {
    try GoldenLoRAModel.lora(model, file)
  }

  private func batch(_ file: SafetensorsFile, _ t: Int) throws -> Batch {
    let ids = try file.floats("ids").map { Int($0) }, targets = try file.floats("targets").map { Int($0) }
    let examples = (0..<(ids.count / t)).map { r in
      TokenizedExample(inputIds: Array(ids[(r * t)..<((r + 1) * t)]), targets: Array(targets[(r * t)..<((r + 1) * t)]))
    }
    return try XCTUnwrap(Batching.batches(examples, batchSize: examples.count, padID: 0).first)
  }

  private func close(_ a: Double, _ e: Double, _ what: String) {
    XCTAssertLessThanOrEqual(abs(a - e), Self.lossRelativeTolerance * max(1, abs(e)), "\(what): \(a) vs \(e)")
  }

  private func checkGradients(_ task: TrainingTask, _ file: SafetensorsFile, prefix: String, _ what: String) throws {
    for t in task.trainableTensors {
      let expected = try file.floats(prefix + t.name)
      if let why = Compare.check(expected, try task.backend.floats(t.gradient), nmse: Self.gradientNMSE,
                                 maxAbs: Self.gradientMaxAbs) {
        XCTFail("\(what) \(t.name): \(why)")
      }
    }
  }

  /// One DPO step's loss, logged metrics (pairs 0/1 and 2/3) and gradients against case `c`.
  private func checkStep(_ task: DPOTask, loss: Float, _ file: SafetensorsFile, _ c: Meta.Case, _ what: String) throws {
    close(Double(loss), Double(try file.floats(c.name + ".loss")[0]), "\(what) loss")
    let policy = try file.floats(c.name + ".policy_logps").map(Double.init)
    let reference = try file.floats(c.name + ".reference_logps").map(Double.init)
    let metrics = task.takeMetrics(training: true)
    close(metrics["logps/chosen"] ?? .nan, (policy[0] + policy[2]) / 2, "\(what) logps/chosen")
    close(metrics["logps/rejected"] ?? .nan, (policy[1] + policy[3]) / 2, "\(what) logps/rejected")
    let rewardChosen = c.beta * ((policy[0] - reference[0]) + (policy[2] - reference[2])) / 2
    close(metrics["rewards/chosen"] ?? .nan, rewardChosen, "\(what) rewards/chosen")
    let rewardRejected = c.beta * ((policy[1] - reference[1]) + (policy[3] - reference[3])) / 2
    close(metrics["rewards/rejected"] ?? .nan, rewardRejected, "\(what) rewards/rejected")
    try checkGradients(task, file, prefix: c.name + ".grad.", what)
  }

  func test_dpo_everyLossType_matchesTorch_cpu() throws { try checkDPO(on: TestBackends.cpu) }
  func test_dpo_everyLossType_matchesTorch_vulkan() throws { try checkDPO(on: try Tiny.vulkanOrSkip()) }

  private func checkDPO(on backend: Backend) throws {
    let (meta, file) = try load()
    XCTAssertEqual(Set(meta.cases.map(\.type)), Set(DPOLossType.allCases.map(\.rawValue)))
    let b = try batch(file, meta.seq_length)
    for c in meta.cases {
      let m = try model(on: backend)
      let l = try lora(m, file)
      let config = DPOLossConfig(type: try XCTUnwrap(DPOLossType(rawValue: c.type)), beta: c.beta,
                                 labelSmoothing: c.label_smoothing, rpoAlpha: c.rpo_alpha)
      let task = try DPOTask(model: m, lora: l, loss: config)
      try task.zeroGradients()
      let normalizer = task.lossNormalizer(for: [b])
      XCTAssertEqual(normalizer, 2)
      let loss = try task.forwardBackward(b, lossNormalizer: normalizer, dropoutSeed: 0)
      try checkStep(task, loss: loss, file, c, "\(c.name) on \(backend.name)")
    }
  }

  func test_reward_scoresLossAndGradients_matchTransformers_cpu() throws { try checkReward(on: TestBackends.cpu) }
  func test_reward_scoresLossAndGradients_matchTransformers_vulkan() throws { try checkReward(on: try Tiny.vulkanOrSkip()) }

  private func checkReward(on backend: Backend) throws {
    let (meta, file) = try load()
    let b = try batch(file, meta.seq_length)
    let m = try model(on: backend)
    let l = try lora(m, file)
    let head = try ScoreHead(values: try file.floats("reward.init_score"), backend: backend)
    let task = RewardTask(model: m, lora: l, head: head, padID: 0, margin: meta.margin)
    let scores = try task.scores(b)
    for (i, (s, e)) in zip(scores, try file.floats("reward.scores")).enumerated() {
      close(s, Double(e), "score of row \(i) on \(backend.name)")
    }
    try task.zeroGradients()
    let loss = try task.forwardBackward(b, lossNormalizer: task.lossNormalizer(for: [b]), dropoutSeed: 0)
    close(Double(loss), Double(try file.floats("reward.loss")[0]), "reward loss on \(backend.name)")
    try checkGradients(task, file, prefix: "reward.grad.", "reward on \(backend.name)")
  }

  func test_reward_replayedStep_matchesTransformers_cpu() throws { try checkReplayedReward(on: TestBackends.cpu) }
  func test_reward_replayedStep_matchesTransformers_vulkan() throws {
    try checkReplayedReward(on: try Tiny.vulkanOrSkip())
  }

  /// The replayed reward step — trunk, scalar head, Bradley–Terry loss on the device, the
  /// backward through the head, AdamW at lr 0 — in one recording with rows padded to 64
  /// tokens, matches the same goldens: loss, gradients (head included) and the logged
  /// rewards (the pairs' mean scores, read back with the loss).
  private func checkReplayedReward(on backend: Backend) throws {
    let (meta, file) = try load()
    let b = try batch(file, meta.seq_length)
    XCTAssertLessThan(b.seqLength, StepShape.granularity, "the step pads the rows")
    let m = try model(on: backend)
    let l = try lora(m, file)
    let head = try ScoreHead(values: try file.floats("reward.init_score"), backend: backend)
    let task = RewardTask(model: m, lora: l, head: head, padID: 0, margin: meta.margin)
    let optimizer = try AdamW(parameters: task.trainableTensors, backend: backend)
    let engine = try ReplayedSteps(task: task, optimizer: optimizer, maxTokens: StepShape.granularity,
                                   shapeGranularity: StepShape.granularity)
    let what = "replayed reward step on \(backend.name)"
    let out = try engine.step([b], dropoutSeeds: [0], lossNormalizer: task.lossNormalizer(for: [b]), lr: 0)
    XCTAssertEqual(engine.recordedShapes, [StepShape(batch: b.batchSize, tokens: StepShape.granularity)], what)
    close(Double(out.loss), Double(try file.floats("reward.loss")[0]), what + " loss")
    try checkGradients(task, file, prefix: "reward.grad.", what)
    task.absorbStepMetrics(out.taskMetrics)
    let metrics = task.takeMetrics(training: true)
    let scores = try file.floats("reward.scores").map(Double.init)
    let chosen = stride(from: 0, to: scores.count, by: 2).map { scores[$0] }
    let rejected = stride(from: 1, to: scores.count, by: 2).map { scores[$0] }
    close(metrics["rewards/chosen"] ?? .nan, chosen.reduce(0, +) / Double(chosen.count), what + " rewards/chosen")
    close(metrics["rewards/rejected"] ?? .nan, rejected.reduce(0, +) / Double(rejected.count), what + " rewards/rejected")
    let correct = zip(chosen, rejected).filter { $0 > $1 }.count
    XCTAssertEqual(metrics["rewards/accuracies"] ?? .nan, Double(correct) / Double(chosen.count), what)
  }

  func test_dpo_replayedStep_matchesTorch_cpu() throws { try checkReplayedDPO(on: TestBackends.cpu) }
  func test_dpo_replayedStep_matchesTorch_vulkan() throws { try checkReplayedDPO(on: try Tiny.vulkanOrSkip()) }

  /// The replayed step — reference forward (adapter off) or precomputed reference log-probs,
  /// policy forward, the loss on the device (`preferenceLoss`), the weighted backward, AdamW
  /// at lr 0 — in one recording, rows padded to 64 tokens, matches the same goldens: loss,
  /// logged metrics (read back with the loss) and gradients.
  private func checkReplayedDPO(on backend: Backend) throws {
    let (meta, file) = try load()
    let b = try batch(file, meta.seq_length)
    XCTAssertLessThan(b.seqLength, StepShape.granularity, "the step pads the rows")
    for c in meta.cases {
      for precompute in [false, true] {
        let m = try model(on: backend)
        let l = try lora(m, file)
        var precomputed: ReferenceLogProbs?
        if precompute {
          l.enabled = false
          precomputed = try ReferenceLogProbs.compute(
            model: m, examples: (0..<b.batchSize).map { ReferenceLogProbs.rowExample(b, $0) }, batchSize: 4, padID: 0)
          l.enabled = true
        }
        let config = DPOLossConfig(type: try XCTUnwrap(DPOLossType(rawValue: c.type)), beta: c.beta,
                                   labelSmoothing: c.label_smoothing, rpoAlpha: c.rpo_alpha)
        let task = try DPOTask(model: m, lora: l, loss: config, precomputed: precomputed)
        let optimizer = try AdamW(parameters: task.trainableTensors, backend: backend)
        let engine = try ReplayedSteps(task: task, optimizer: optimizer, maxTokens: StepShape.granularity,
                                       shapeGranularity: StepShape.granularity)
        let what = "\(c.name), reference \(precompute ? "precomputed" : "adapter off") on \(backend.name)"
        let out = try engine.step([b], dropoutSeeds: [0], lossNormalizer: task.lossNormalizer(for: [b]), lr: 0)
        XCTAssertEqual(engine.recordedShapes, [StepShape(batch: b.batchSize, tokens: StepShape.granularity)], what)
        task.absorbStepMetrics(out.taskMetrics)
        try checkStep(task, loss: out.loss, file, c, what)
      }
    }
  }

  /// Evaluation computes the reference log-probs of its rows once: a second evaluation after
  /// the adapter moved runs no reference pass and gives what an uncached task gives.
  func test_dpoEvaluation_reusesReferenceLogProbs() throws {
    let (meta, file) = try load()
    let b = try batch(file, meta.seq_length)
    let m = try model(on: TestBackends.cpu)
    let l = try lora(m, file)
    let task = try DPOTask(model: m, lora: l, loss: DPOLossConfig())
    let first = try task.evaluate(b)
    XCTAssertEqual(task.evaluationReferencePasses, 1)
    // Move the adapter: the policy changes, the reference must not.
    try task.zeroGradients()
    _ = try task.forwardBackward(b, lossNormalizer: task.lossNormalizer(for: [b]), dropoutSeed: 0)
    let optimizer = try AdamW(parameters: task.trainableTensors, backend: TestBackends.cpu)
    try optimizer.update(lr: 1e-2)
    let second = try task.evaluate(b)
    XCTAssertEqual(task.evaluationReferencePasses, 1, "the second evaluation reused the cache")
    XCTAssertNotEqual(second.lossSum, first.lossSum, "the adapter moved")
    let uncached = try DPOTask(model: m, lora: l, loss: DPOLossConfig())
    XCTAssertEqual(try uncached.evaluate(b).lossSum, second.lossSum)
  }

  /// A fresh adapter (B = 0) is the reference: policy and reference log-probs are equal bit
  /// for bit, so the first sigmoid loss is exactly log 2 and every reward 0.
  func test_freshAdapter_firstSigmoidLossIsLog2_cpu() throws { try checkFresh(on: TestBackends.cpu) }
  func test_freshAdapter_firstSigmoidLossIsLog2_vulkan() throws { try checkFresh(on: try Tiny.vulkanOrSkip()) }

  private func checkFresh(on backend: Backend) throws {
    let (meta, file) = try load()
    let b = try batch(file, meta.seq_length)
    let m = try model(on: backend)
    let l = try LoRAModel(weights: m.weights, config: LoRAConfig(r: 4, alpha: 8), seed: 9)
    let task = try DPOTask(model: m, lora: l, loss: DPOLossConfig())
    try task.zeroGradients()
    let loss = try task.forwardBackward(b, lossNormalizer: 2, dropoutSeed: 0)
    XCTAssertEqual(Double(loss), log(2), accuracy: 1e-7)
    let metrics = task.takeMetrics(training: true)
    XCTAssertEqual(metrics["rewards/chosen"], 0, "policy = reference exactly")
    XCTAssertEqual(metrics["rewards/rejected"], 0)
    XCTAssertEqual(metrics["rewards/accuracies"], 0, "no pair is ranked yet")
  }
}
