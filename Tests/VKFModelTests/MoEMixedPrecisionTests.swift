import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFTestSupport
import VKFVulkan

/// Mixed precision on the mixture-of-experts goldens: frozen experts stored 16-bit (read by
/// the grouped matmuls with f32 accumulation) equal f32 experts holding the rounded values,
/// and 16-bit saved activations (the expert rows' gate/up included) keep the f32 forward and
/// move the gradients by the rounding only.
final class MoEMixedPrecisionTests: XCTestCase {
  /// 16-bit vs rounded-f32 experts: the same f32 arithmetic, summed in another order where the
  /// widening matmul splits panels (CPU) or the shader stages tiles: ~1e-6 relative through
  /// two layers (MixedPrecisionTests' bound).
  static let sameValues = ModelTolerance(nmse: 1e-10, maxAbs: 1e-5)

  /// Weights of `source` with every frozen matrix (all but q_proj, which trains and keeps its
  /// f32 master) rounded to `dtype`, as f32.
  private final class Rounded: WeightSource {
    let source: WeightSource, dtype: DType
    init(_ source: WeightSource, _ dtype: DType) { self.source = source; self.dtype = dtype }
    var tensorNames: [String] { source.tensorNames }
    func shape(of name: String) throws -> [Int] { try source.shape(of: name) }
    func storedType(of name: String) throws -> String { try source.storedType(of: name) }
    func floats(_ name: String) throws -> [Float] {
      let v = try source.floats(name)
      return try source.shape(of: name).count == 2 && !name.hasSuffix("q_proj.weight") ? TestData.half(v, dtype).values : v
    }
  }

  /// Logits and per-token losses with only the attention's q_proj trained (everything else —
  /// every expert and router — frozen, so stored `frozen`).
  private func run(_ g: GoldenCase, _ source: WeightSource, frozen: DType, on be: Backend) throws -> [[Float]] {
    let trained = Set(g.shape.parameterShapes.map(\.name).filter { $0.hasSuffix("q_proj.weight") })
    let w = try DecoderWeights(from: source, shape: g.shape, backend: be, trainable: .named(trained), frozenStorage: frozen)
    let m = try DecoderModel(weights: w)
    try m.forward(ids: try g.ids, batch: g.batch)
    let logits = try be.floats(try XCTUnwrap(m.logits))
    try m.forward(ids: try g.ids, targets: try g.targets, batch: g.batch, computeGradients: true,
                  tokenMask: try g.expected.floats("mask"))
    try m.backward()
    let grads = try trained.sorted().flatMap { try be.floats(try XCTUnwrap(w.gradients[$0])) }
    return [logits, try m.tokenLosses(), grads]
  }

  private func checkFrozenExperts(on be: Backend) throws {
    for name in ["mixtral", "qwen3_moe"] {
      let g = try GoldenCase.load(name)
      for dtype in [DType.bf16, .f16] {
        let half = try run(g, g.weights, frozen: dtype, on: be)
        let rounded = try run(g, Rounded(g.weights, dtype), frozen: .f32, on: be)
        for (i, what) in ["logits", "losses", "q_proj gradients"].enumerated() {
          if let why = Compare.check(rounded[i], half[i], nmse: Self.sameValues.nmse, maxAbs: Self.sameValues.maxAbs) {
            XCTFail("\(name) \(dtype) experts, \(what) on \(be.name): \(why)")
          }
        }
        XCTAssertNotEqual(half[0], try run(g, g.weights, frozen: .f32, on: be)[0], "the experts really are rounded")
      }
    }
  }

  func test_halfExperts_equalRoundedF32Experts_cpu() throws { try checkFrozenExperts(on: TestBackends.cpu) }
  func test_halfExperts_equalRoundedF32Experts_vulkan() throws { try checkFrozenExperts(on: try ModelFixtures.vulkanOrSkip()) }

  /// bf16 saved activations: losses bit-equal to f32 (the forward is f32), gradients within
  /// HalfActivationTests' bf16 bound, and not equal (the backward read the rounded copies).
  func test_halfActivations_experts_cpu() throws {
    for name in ["mixtral", "qwen3_moe"] {
      let g = try GoldenCase.load(name)
      func run(_ type: DType) throws -> (losses: [Float], grads: [String: [Float]]) {
        let w = try DecoderWeights(from: g.weights, shape: g.shape, backend: TestBackends.cpu, trainable: .all)
        let m = try DecoderModel(weights: w, activationType: type)
        try m.forward(ids: try g.ids, targets: try g.targets, batch: g.batch, computeGradients: true,
                      tokenMask: try g.expected.floats("mask"))
        let losses = try m.tokenLosses()
        try m.backward()
        return (losses, try ModelFixtures.gradients(of: m))
      }
      let f32 = try run(.f32), bf16 = try run(.bf16)
      XCTAssertEqual(bf16.losses, f32.losses, name)
      var differs = false
      for (param, e) in f32.grads {
        let got = bf16.grads[param] ?? []
        differs = differs || got != e
        let tol = HalfActivationTests.bf16Gradients
        if let why = Compare.check(e, got, nmse: tol.nmse, maxAbs: tol.maxAbs) { XCTFail("\(name) \(param): \(why)") }
      }
      XCTAssertTrue(differs, name)
    }
  }
}
