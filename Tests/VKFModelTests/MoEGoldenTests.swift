import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFTestSupport
import VKFVulkan

/// The mixture-of-experts decoders against transformers in f32 (tools/make_moe_fixtures.py):
/// logits, the loss with the load-balancing term (router_aux_loss_coef 0.5, padding masked
/// out of it) and the gradient of every parameter — routers and each expert's projections
/// included — on each backend.
/// - mixtral: 4 experts, top-2 renormalised, both layers sparse.
/// - qwen3_moe: q/k norm, layer 0 dense (mlp_only_layers), layer 1 with 6 experts, top-3
///   probabilities not renormalised.
final class MoEGoldenTests: XCTestCase {
  /// Logits: the dense decoders' bound (`ModelGoldenTests.logitsTolerance`) — routing adds a
  /// softmax and a weighted sum of K rows, no long reduction.
  static let logitsTolerance = ModelGoldenTests.logitsTolerance
  /// Loss: cross-entropy plus the load-balancing term (a sum of E products of means).
  static let lossRelativeTolerance: Float = 1e-6
  /// Gradients: the dense bound; router gradients gather terms through two softmaxes
  /// (routing weights, load balance) but stay short sums.
  static let gradientTolerance = ModelGoldenTests.gradientTolerance

  func test_golden_mixtral_cpu() throws { try check("mixtral", on: TestBackends.cpu) }
  func test_golden_qwen3MoE_cpu() throws { try check("qwen3_moe", on: TestBackends.cpu) }
  /// Qwen2-MoE: q/k/v biases, 4 experts top-2 not renormalised, and a shared expert (width 48)
  /// gated by σ(shared_expert_gate) in both layers.
  func test_golden_qwen2MoE_cpu() throws { try check("qwen2_moe", on: TestBackends.cpu) }
  func test_golden_qwen2MoE_vulkan() throws { try check("qwen2_moe", on: try ModelFixtures.vulkanOrSkip()) }
  /// lavapipe: routing, dispatch into unpadded expert segments (row tiles spanning experts), grouped matmuls and the
  /// load-balancing loss in shaders.
  func test_golden_mixtral_vulkan() throws { try check("mixtral", on: try ModelFixtures.vulkanOrSkip()) }
  func test_golden_qwen3MoE_vulkan() throws { try check("qwen3_moe", on: try ModelFixtures.vulkanOrSkip()) }
  /// Gradient checkpointing: each layer's forward (routing, dispatch, experts) runs again in
  /// the backward from its input; the load-balancing sums are counted once, in the forward.
  func test_golden_checkpointing_cpu() throws {
    try check("mixtral", on: TestBackends.cpu, checkpointing: true)
    try check("qwen3_moe", on: TestBackends.cpu, checkpointing: true)
    try check("qwen2_moe", on: TestBackends.cpu, checkpointing: true)
  }

  /// The configs load as the fixtures intend: experts, K, widths, which layers are sparse,
  /// the renormalisation and the load-balancing coefficient (output_router_logits true).
  func test_fixtureShapes() throws {
    let mixtral = try XCTUnwrap(try GoldenCase.load("mixtral").shape.moe)
    XCTAssertEqual(mixtral, MoEShape(style: .mixtral, experts: 4, topK: 2, intermediate: 48, normalizeTopK: true,
                                     sparseLayers: [true, true], auxLossCoefficient: 0.5))
    let qwen = try GoldenCase.load("qwen3_moe").shape
    XCTAssertEqual(qwen.moe, MoEShape(style: .qwen3, experts: 6, topK: 3, intermediate: 32, normalizeTopK: false,
                                      sparseLayers: [false, true], auxLossCoefficient: 0.5))
    XCTAssertTrue(qwen.qkNorm)
    XCTAssertEqual(qwen.intermediate, 96)
    let qwen2 = try GoldenCase.load("qwen2_moe").shape
    XCTAssertEqual(qwen2.moe, MoEShape(style: .qwen2, experts: 4, topK: 2, intermediate: 32, normalizeTopK: false,
                                       sparseLayers: [true, true], auxLossCoefficient: 0.5, sharedIntermediate: 48))
    XCTAssertTrue(qwen2.qkvBias)
    XCTAssertFalse(qwen2.qkNorm)
  }

  /// Without the load-balancing term the loss is the cross-entropy alone, and the routers'
  /// gradients change: the term is really part of the loss and of its gradient.
  func test_auxLossOff_givesCrossEntropyAlone() throws {
    let g = try GoldenCase.load("mixtral")
    var shape = g.shape
    shape.moe?.auxLossCoefficient = 0
    let model = try GoldenCase(name: g.name, shape: shape, weights: g.weights, expected: g.expected).model(on: TestBackends.cpu)
    try model.forward(ids: try g.ids, targets: try g.targets, batch: g.batch, computeGradients: true,
                      tokenMask: try g.expected.floats("mask"))
    let ce = try g.expected.floats("ce")[0]
    XCTAssertEqual(try model.loss(), ce, accuracy: ce * Self.lossRelativeTolerance)
    try model.backward()
    let router = "model.layers.0.block_sparse_moe.gate.weight"
    let e = try g.expected.floats("grad." + router)
    let a = try TestBackends.cpu.floats(try XCTUnwrap(model.weights.gradients[router]))
    XCTAssertGreaterThan(Compare.nmse(e, a), 1e-4, "the router gradient should include the load-balancing term")
  }

  /// Logits (inference forward), loss and every gradient (training forward + backward).
  private func check(_ name: String, on backend: Backend, checkpointing: Bool = false) throws {
    let g = try GoldenCase.load(name)
    let model = try g.model(on: backend, checkpointing: checkpointing)
    let ids = try g.ids, targets = try g.targets, mask = try g.expected.floats("mask")
    var report: [String] = []
    func compare(_ what: String, _ e: [Float], _ a: [Float], _ tol: ModelTolerance) {
      report.append(String(format: "%@ nmse %.2e maxAbs %.2e", what, Compare.nmse(e, a), Compare.maxAbs(e, a)))
      if let why = Compare.check(e, a, nmse: tol.nmse, maxAbs: tol.maxAbs) {
        XCTFail("\(name) \(what) on \(backend.name): \(why)")
      }
    }
    try model.forward(ids: ids, batch: g.batch)
    compare("logits", try g.expected.floats("logits"), try backend.floats(try XCTUnwrap(model.logits)), Self.logitsTolerance)

    try model.forward(ids: ids, targets: targets, batch: g.batch, computeGradients: true, tokenMask: mask)
    let loss = try model.loss(), expectedLoss = try g.expected.floats("loss")[0]
    XCTAssertEqual(loss, expectedLoss, accuracy: expectedLoss * Self.lossRelativeTolerance, "\(name) loss")
    report.append("loss \(loss) vs \(expectedLoss)")
    try model.backward()
    let worst = try ModelFixtures.checkGradients(of: model, against: g.expected, Self.gradientTolerance,
                                                 "\(name) on \(backend.name)")
    report.append(String(format: "worst gradient nmse %.2e (%@)", worst.nmse, worst.name))
    print("golden \(name) on \(backend.name): " + report.joined(separator: "; "))
    if let vk = backend as? VulkanBackend {
      XCTAssertEqual(vk.validationMessages, []); vk.clearValidationMessages()
    }
  }
}
