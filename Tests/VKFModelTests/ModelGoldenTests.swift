import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFTestSupport
import VKFVulkan

/// The whole model (2 layers, GQA, RoPE, SwiGLU, tied/untied head, Qwen2 qkv bias) against
/// transformers in f32: logits, loss and the gradient of every parameter, on each backend.
/// Fixtures: tools/make_fixtures.py (llm.c's debug-state pattern).
final class ModelGoldenTests: XCTestCase {
  /// Logits vs PyTorch: the same f32 math in another summation order through ~30 dependent
  /// ops (k ≤ 96); measured ≤ 2.5e-13 NMSE, 1.5e-6 max abs on CPU and lavapipe. 40× headroom;
  /// a wrong head order or RoPE layout gives NMSE > 1e-3.
  static let logitsTolerance = ModelTolerance(nmse: 1e-11, maxAbs: 1e-5)
  /// Loss: one reduction more than the logits; relative error measured ≤ 1e-7 (1 ulp).
  static let lossRelativeTolerance: Float = 1e-6
  /// Gradients: the backward chain is twice as long and small gradients (k/v biases,
  /// layer-0 norms) come from sums with cancellation; measured ≤ 2e-12 NMSE on CPU and
  /// lavapipe. 50× headroom.
  static let gradientTolerance = ModelTolerance(nmse: 1e-10, maxAbs: 1e-5)
  /// Gemma 3's gradients: its sandwich norms renormalise small attention and MLP outputs and
  /// the √hidden scale multiplies the embedding gradient by 8, so the last-bit differences of
  /// the shaders' exp/tanh against libm's grow to 1.4e-5 absolute on |g| ≈ 0.27 (5e-5
  /// relative, lavapipe); NMSE stays within the common bound. 5e-5 leaves 3.5×.
  static let gemma3GradientTolerance = ModelTolerance(nmse: 1e-10, maxAbs: 5e-5)

  func test_golden_llamaUntied_cpu() throws { try check("llama_untied", on: TestBackends.cpu) }
  func test_golden_llamaTied_cpu() throws { try check("llama_tied", on: TestBackends.cpu) }
  func test_golden_qwen2TiedBias_cpu() throws { try check("qwen2_tied", on: TestBackends.cpu) }
  /// Sliding-window attention (T 7 > window 3) against transformers' masks: every layer
  /// (mistral), and qwen2's layers from max_window_layers on (layer 0 full, layer 1 windowed).
  func test_golden_mistralSlidingWindow_cpu() throws { try check("mistral_window", on: TestBackends.cpu) }
  func test_golden_qwen2SlidingWindowUpperLayers_cpu() throws { try check("qwen2_window", on: TestBackends.cpu) }
  func test_golden_mistralSlidingWindow_vulkan() throws { try check("mistral_window", on: try ModelFixtures.vulkanOrSkip()) }
  func test_golden_qwen2SlidingWindowUpperLayers_vulkan() throws {
    try check("qwen2_window", on: try ModelFixtures.vulkanOrSkip())
  }
  /// Qwen3: per-head q/k RMSNorm (weights and gradients), head_dim 64 ≠ hidden / heads (16).
  func test_golden_qwen3QKNorm_cpu() throws { try check("qwen3_qknorm", on: TestBackends.cpu) }
  func test_golden_qwen3QKNorm_vulkan() throws { try check("qwen3_qknorm", on: try ModelFixtures.vulkanOrSkip()) }
  /// Gemma: GeGLU, (1 + w) RMSNorms (their gradients are those of w), embeddings × √hidden
  /// (the tied head uses the table as stored).
  func test_golden_gemma_cpu() throws { try check("gemma", on: TestBackends.cpu) }
  func test_golden_gemma_vulkan() throws { try check("gemma", on: try ModelFixtures.vulkanOrSkip()) }
  /// Gemma 3 (text): sandwich norms, (1 + w) q/k norms, query_pre_attn_scalar, a windowed
  /// layer with the local RoPE base beside a full one with θ 10⁶.
  func test_golden_gemma3_cpu() throws { try check("gemma3", on: TestBackends.cpu) }
  func test_golden_gemma3_vulkan() throws {
    try check("gemma3", on: try ModelFixtures.vulkanOrSkip(), gradients: Self.gemma3GradientTolerance)
  }
  /// Gemma 2: sandwich norms, query_pre_attn_scalar, the alternating window (layer 0), and
  /// soft-capped attention scores (cap 1) and logits (cap 0.8): the caps' tanh in the fused
  /// attention forward and backward and in the fused cross-entropy, and their derivatives.
  func test_golden_gemma2_cpu() throws { try check("gemma2", on: TestBackends.cpu) }
  func test_golden_gemma2_vulkan() throws {
    try check("gemma2", on: try ModelFixtures.vulkanOrSkip(), gradients: Self.gemma3GradientTolerance)
  }
  /// The caps are what make Gemma 2 match: without either one the logits move far off.
  func test_golden_gemma2_ignoringASoftcapFails() throws {
    let g = try GoldenCase.load("gemma2")
    XCTAssertEqual(g.shape.attentionSoftcap, 1)
    XCTAssertEqual(g.shape.finalLogitSoftcap, 0.8)
    XCTAssertEqual(g.shape.slidingWindows, [3, 0])
    for uncap in [\TransformerShape.attentionSoftcap, \TransformerShape.finalLogitSoftcap] {
      var shape = g.shape
      shape[keyPath: uncap] = 0
      let model = try GoldenCase(name: g.name, shape: shape, weights: g.weights, expected: g.expected)
        .model(on: TestBackends.cpu)
      try model.forward(ids: try g.ids, batch: g.batch)
      let e = try g.expected.floats("logits"), a = try TestBackends.cpu.floats(try XCTUnwrap(model.logits))
      XCTAssertGreaterThan(Compare.nmse(e, a), 1e-3, "\(uncap) at 0 should not match the capped golden")
    }
  }
  /// Phi-3: q/k/v and gate/up run as row views of the fused qkv_proj / gate_up_proj (whose
  /// gradients are compared whole), every layer windowed.
  func test_golden_phi3_cpu() throws { try check("phi3", on: TestBackends.cpu) }
  func test_golden_phi3_vulkan() throws { try check("phi3", on: try ModelFixtures.vulkanOrSkip()) }

  /// The unfused reference path keeps no capped scores for its backward: it refuses a cap.
  func test_unfusedAttention_refusesSoftcap() throws {
    let g = try GoldenCase.load("gemma2")
    let model = try g.model(on: TestBackends.cpu, fusedAttention: false)
    XCTAssertThrowsError(try model.forward(ids: try g.ids, batch: g.batch)) {
      XCTAssertTrue("\($0)".contains("soft-capping runs on the fused attention only"), "\($0)")
    }
  }
  /// The unfused reference path (scores → windowed causal softmax → P·v) on the same goldens.
  func test_golden_slidingWindow_unfusedAttention_cpu() throws {
    try check("mistral_window", on: TestBackends.cpu, fusedAttention: false)
    try check("qwen2_window", on: TestBackends.cpu, fusedAttention: false)
  }
  /// The window is what makes these match: without it the logits move far past tolerance.
  func test_golden_slidingWindow_ignoringTheWindowFails() throws {
    var g = try GoldenCase.load("mistral_window")
    XCTAssertEqual(g.shape.slidingWindows, [3, 3])
    XCTAssertEqual(try GoldenCase.load("qwen2_window").shape.slidingWindows, [0, 3])
    g = GoldenCase(name: g.name, shape: { var s = g.shape; s.slidingWindows = []; return s }(),
                   weights: g.weights, expected: g.expected)
    let model = try g.model(on: TestBackends.cpu)
    try model.forward(ids: try g.ids, batch: g.batch)
    let e = try g.expected.floats("logits"), a = try TestBackends.cpu.floats(try XCTUnwrap(model.logits))
    XCTAssertGreaterThan(Compare.nmse(e, a), 1e-4, "full attention should not match the windowed golden")
  }
  func test_golden_llamaUntied_vulkan() throws { try check("llama_untied", on: try ModelFixtures.vulkanOrSkip()) }
  func test_golden_llamaTied_vulkan() throws { try check("llama_tied", on: try ModelFixtures.vulkanOrSkip()) }
  func test_golden_qwen2TiedBias_vulkan() throws { try check("qwen2_tied", on: try ModelFixtures.vulkanOrSkip()) }

  /// Logits (inference forward), loss and every gradient (training forward + backward).
  private func check(_ name: String, on backend: Backend, fusedAttention: Bool = true,
                     gradients gradientTolerance: ModelTolerance = ModelGoldenTests.gradientTolerance) throws {
    let g = try GoldenCase.load(name)
    let model = try g.model(on: backend, fusedAttention: fusedAttention)
    let ids = try g.ids, targets = try g.targets
    var report: [String] = []
    func compare(_ what: String, _ e: [Float], _ a: [Float], _ tol: ModelTolerance) {
      report.append(String(format: "%@ nmse %.2e maxAbs %.2e", what, Compare.nmse(e, a), Compare.maxAbs(e, a)))
      if let why = Compare.check(e, a, nmse: tol.nmse, maxAbs: tol.maxAbs) {
        XCTFail("\(name) \(what) on \(backend.name): \(why)")
      }
    }

    try model.forward(ids: ids, batch: g.batch)
    let logits = try XCTUnwrap(model.logits)
    compare("logits", try g.expected.floats("logits"), try backend.floats(logits), Self.logitsTolerance)

    try model.forward(ids: ids, targets: targets, batch: g.batch, computeGradients: true)
    let loss = try model.loss()
    let expectedLoss = try g.expected.floats("loss")[0]
    XCTAssertEqual(loss, expectedLoss, accuracy: expectedLoss * Self.lossRelativeTolerance, "\(name) loss")
    report.append("loss \(loss) vs \(expectedLoss)")
    try model.backward()

    let worst = try ModelFixtures.checkGradients(of: model, against: g.expected, gradientTolerance, "\(name) on \(backend.name)")
    report.append(String(format: "worst gradient nmse %.2e (%@)", worst.nmse, worst.name))
    print("golden \(name) on \(backend.name): " + report.joined(separator: "; "))
    if let vk = backend as? VulkanBackend {
      XCTAssertEqual(vk.validationMessages, []); vk.clearValidationMessages()
    }
  }
}
