import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFPEFT
import VKFTestSupport

/// LoRA on BERT's projections (PEFT's names: query, key, value, dense — the pooler's too):
/// with B = 0 the adapted model is the base model, and the adapters' gradients are the chain
/// rule through the merged weight: dB = s·G·Aᵀ, dA = s·Bᵀ·G = 0, with G the full fine-tuning
/// gradient of that weight — on the transformers golden of the classifier.
final class BertLoRATests: XCTestCase {
  /// The chain rule in f32 through two different reduction orders; measured ≤ 1e-12 NMSE.
  static let chainRuleNMSE = 1e-9

  private func golden() throws -> (config: BertConfig, weights: SafetensorsFile) {
    let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .appendingPathComponent("../VKFModelTests/Fixtures/bert").standardized
    return (try BertConfig.load(from: dir.appendingPathComponent("tiny.config.json")),
            try SafetensorsFile(contentsOf: dir.appendingPathComponent("tiny.weights.safetensors")))
  }

  private let ids: [Int32] = [2, 5, 9, 17, 30, 44, 0, 2, 60, 61, 0, 0, 0, 0]
  private let lengths: [Int32] = [6, 4]
  private let labels: [Int32] = [2, 0]

  func test_gradients_areTheChainRuleThroughTheMergedWeight() throws {
    let g = try golden(), be = TestBackends.cpu
    let full = try BertWeights(source: g.weights, config: g.config, numLabels: 3, backend: be, trainable: true, seed: 0)
    let fullModel = BertModel(weights: full)
    try fullModel.forward(ids: ids, lengths: lengths, batch: 2, labels: labels, computeGradients: true)
    let fullLogits = try fullModel.logits()
    try fullModel.backward()
    var fullGrads: [String: [Float]] = [:]
    for p in full.named { if let grad = p.gradient { fullGrads[p.name] = try be.floats(grad) } }

    let frozen = try BertWeights(source: g.weights, config: g.config, numLabels: 3, backend: be, trainable: false, seed: 0)
    let lora = try LoRAModel(weights: frozen, config: LoRAConfig(r: 4, alpha: 8, targetModules: ["query", "dense"]),
                             seed: 3)
    // query in both layers, three dense per layer, the pooler's dense.
    XCTAssertEqual(lora.adapters.count, 2 * 4 + 1)
    XCTAssertTrue(lora.adapters.contains { $0.module == "bert.pooler.dense" })
    let model = BertModel(weights: frozen)
    try model.forward(ids: ids, lengths: lengths, batch: 2, labels: labels, computeGradients: true)
    XCTAssertEqual(try model.logits(), fullLogits, "B = 0: the adapted model is the base model")
    try model.backward()
    let s = lora.config.scaling
    for group in lora.parameterGroups {
      let a = try be.floats(group.a), dB = try be.floats(group.bGrad), dA = try be.floats(group.aGrad)
      let grad = try XCTUnwrap(fullGrads[group.module + ".weight"], group.module)
      let (out, r) = (group.b.shape[0], group.b.shape[1]), inF = a.count / r
      var expected = [Float](repeating: 0, count: out * r)
      for i in 0..<out {
        for j in 0..<r {
          var acc = 0.0
          for k in 0..<inF { acc += Double(grad[i * inF + k]) * Double(a[j * inF + k]) }
          expected[i * r + j] = Float(Double(s) * acc)
        }
      }
      XCTAssertLessThan(Compare.nmse(expected, dB), Self.chainRuleNMSE, group.module)
      XCTAssertEqual(dA.map(abs).max() ?? 1, 0, group.module)
    }
    // The classifier trains in full: its gradient is the full fine-tuning one.
    let cg = try be.floats(try XCTUnwrap(frozen.classifier?.weightGrad))
    XCTAssertLessThan(Compare.nmse(try XCTUnwrap(fullGrads["classifier.weight"]), cg), Self.chainRuleNMSE)
  }

  func test_unknownTarget_namesBertsModules() throws {
    let g = try golden()
    let w = try BertWeights(source: g.weights, config: g.config, numLabels: 3, backend: TestBackends.cpu,
                            trainable: false, seed: 0)
    XCTAssertThrowsError(try LoRAModel(weights: w, config: LoRAConfig(targetModules: ["q_proj"]), seed: 0)) {
      XCTAssertEqual("\($0)", "unknown LoRA target module \"q_proj\"; valid ones are query, key, value, dense and \"all-linear\"")
    }
  }
}
