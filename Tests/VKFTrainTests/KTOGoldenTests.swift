// KTO on the tiny fixture model against TRL 1.16's KTOTrainer (tools/make_kto_golden.py):
// the KL estimate from rotated answers, the loss, TRL's logged rewards/logps and every LoRA
// gradient, on the CPU and on Vulkan.
import Foundation
import XCTest
import VKFCore
import VKFData
import VKFModel
import VKFPEFT
import VKFTestSupport
@testable import VKFTrain

final class KTOGoldenTests: XCTestCase {
  /// Losses, KL and rewards: f32 log-softmax sums of ≤ 5 terms (PreferenceGoldenTests' bound).
  static let valueTolerance = 2e-5
  /// LoRA gradients: the preference goldens' bound (the same f32 ops in another order).
  static let gradientNMSE = 1e-9, gradientMaxAbs = 1e-5

  struct Case: Decodable {
    var loss_type: String, beta: Double, desirable_weight: Double, undesirable_weight: Double
    var has_gradients: Bool, loss: Double, kl: Double, metrics: [String: Double]
  }
  struct Meta: Decodable { var prompts: [[Int]], completions: [[Int]], labels: [Bool], cases: [Case] }

  private static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("Fixtures")

  func test_kto_matchesTRL_cpu() throws { try check(on: TestBackends.cpu) }
  func test_kto_matchesTRL_vulkan() throws { try check(on: try Tiny.vulkanOrSkip()) }

  private func check(on backend: Backend) throws {
    let m = try JSONDecoder().decode(Meta.self, from: Data(contentsOf: Self.fixtures.appendingPathComponent("kto_golden.json")))
    let file = try SafetensorsFile(contentsOf: Self.fixtures.appendingPathComponent("kto_golden.safetensors"))
    let (model, lora) = try GoldenLoRAModel.load(on: backend, file)
    let initial = try GoldenLoRAModel.initial(lora, file)
    let examples = (0..<m.labels.count).map {
      UnpairedExample(prompt: m.prompts[$0], answer: m.completions[$0], desirable: m.labels[$0])
    }
    let batch = try XCTUnwrap(Batching.batches(examples.map(\.example), batchSize: examples.count, padID: 0).first)
    XCTAssertEqual(try SFTTask.int32(batch).ids, try file.floats("ids").map { Int32($0) }, "prompt + answer, right-padded")
    for (i, c) in m.cases.enumerated() {
      try lora.load(initial)
      let config = KTOLossConfig(lossType: try XCTUnwrap(KTOLossType(rawValue: c.loss_type)), beta: c.beta,
                                 desirableWeight: c.desirable_weight, undesirableWeight: c.undesirable_weight)
      let task = try KTOTask(model: model, lora: lora, loss: config, examples: examples)
      try task.zeroGradients()
      let loss = try task.forwardBackward(batch, lossNormalizer: task.lossNormalizer(for: [batch]), dropoutSeed: 0)
      let what = "case \(i + 1) \(c.loss_type) on \(backend.name)"
      XCTAssertEqual(Double(loss), c.loss, accuracy: Self.valueTolerance, what)
      let metrics = task.takeMetrics(training: true)
      for key in ["kl", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"] {
        let want = try XCTUnwrap(c.metrics[key], key)
        XCTAssertEqual(try XCTUnwrap(metrics[key], "\(what): no \(key)"), want,
                       accuracy: Self.valueTolerance * max(1, abs(want)), "\(what) \(key)")
      }
      guard c.has_gradients else { continue }
      for p in task.trainableTensors {
        if let why = Compare.check(try file.floats("case\(i + 1).grad." + p.name), try backend.floats(p.gradient),
                                   nmse: Self.gradientNMSE, maxAbs: Self.gradientMaxAbs) {
          XCTFail("\(what) \(p.name): \(why)")
        }
      }
      // Evaluation: the same loss per example, no gradients.
      let e = try task.evaluate(batch)
      XCTAssertEqual(e.lossSum / Double(e.tokens), c.loss, accuracy: Self.valueTolerance, "\(what) evaluation")
    }
  }

  func test_labels_conflictingForOneSequence_refused() throws {
    let weights = try DecoderWeights(from: Tiny.weights, shape: Tiny.shape, backend: TestBackends.cpu)
    let lora = try LoRAModel(weights: weights, config: LoRAConfig(r: 4, alpha: 8), seed: 3)
    let e = UnpairedExample(prompt: [1, 2], answer: [3], desirable: true)
    var other = e
    other.desirable = false
    XCTAssertThrowsError(try KTOTask(model: try DecoderModel(weights: weights), lora: lora, loss: KTOLossConfig(),
                                     examples: [e, other]))
  }
}
