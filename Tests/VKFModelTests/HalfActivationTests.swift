import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFTestSupport

/// Mixed precision's saved activations: DecoderModel(activationType: .bf16 / .f16) runs every
/// layer in f32 and keeps 16-bit copies of its matmul inputs and outputs for the backward.
/// The forward is the f32 forward exactly; the gradients differ only by those roundings.
final class HalfActivationTests: XCTestCase {
  /// Gradients from activations rounded to bf16 (relative rounding ≤ 2⁻⁹ per element): most
  /// parameters' NMSE is ~(2⁻⁹)² ≈ 4e-6, but q/k projections' gradients pass through the
  /// softmax backward's cancellation P ⊙ (dP − rowsum(dP ⊙ P)), which amplifies the rounding
  /// of q and k: measured worst 2.4e-4 (qwen2 k_proj bias). 1e-3 leaves 4×, while reading a
  /// wrong or stale buffer gives NMSE ≳ 1e-1.
  static let bf16Gradients = ModelTolerance(nmse: 1e-3, maxAbs: 5e-2)
  /// f16 rounds at 2⁻¹² (3 more mantissa bits than bf16, 64× smaller squared error): measured
  /// worst 2.65e-6 on the same k_proj bias; 1e-5 leaves 4×.
  static let f16Gradients = ModelTolerance(nmse: 1e-5, maxAbs: 1e-2)
  /// Gemma 3 amplifies the rounding: its sandwich norms renormalise rounded attention and MLP
  /// outputs, its (1 + w) q/k norms sit before RoPE, and the √hidden scale multiplies the
  /// embedding gradient ×8. Measured bf16: NMSE 2.6e-4, max 5.3e-2 on |g| ≈ 1.8 (embedding);
  /// f16: NMSE 1.23e-5, max 1.3e-2. About 4× headroom each; a stale buffer still gives ≳ 1e-1.
  static let gemma3BF16Gradients = ModelTolerance(nmse: 1e-3, maxAbs: 0.2)
  static let gemma3F16Gradients = ModelTolerance(nmse: 5e-5, maxAbs: 5e-2)
  /// CPU vs Vulkan with 16-bit activations: the backends' f32 forwards differ in the last
  /// bits, so a few values round to neighbouring 16-bit numbers; bf16's bound applies.
  static let backendParity = ModelTolerance(nmse: 1e-3, maxAbs: 5e-2)

  private func run(_ g: GoldenCase, on be: Backend, type: DType, checkpointing: Bool = false)
    throws -> (losses: [Float], grads: [String: [Float]]) {
    let w = try DecoderWeights(from: g.weights, shape: g.shape, backend: be, trainable: .all)
    let m = try DecoderModel(weights: w, checkpointing: checkpointing, activationType: type)
    try m.forward(ids: try g.ids, targets: try g.targets, batch: g.batch, computeGradients: true)
    let losses = try m.tokenLosses()
    try m.backward()
    return (losses, try ModelFixtures.gradients(of: m))
  }

  private func check(on be: Backend) throws {
    for name in GoldenCase.names {
      let g = try GoldenCase.load(name)
      let reference = try run(g, on: be, type: .f32)
      let gemma3 = name == "gemma3" || name == "gemma2"  // sandwich norms
      for (type, tol) in [(DType.bf16, gemma3 ? Self.gemma3BF16Gradients : Self.bf16Gradients),
                          (.f16, gemma3 ? Self.gemma3F16Gradients : Self.f16Gradients)] {
        let half = try run(g, on: be, type: type)
        let what = "\(name) \(type) activations on \(be.name)"
        XCTAssertEqual(half.losses, reference.losses, "the forward is f32 either way: \(what)")
        var differs = false
        for (param, e) in reference.grads.sorted(by: { $0.key < $1.key }) {
          let got = half.grads[param] ?? []
          differs = differs || got != e
          if let why = Compare.check(e, got, nmse: tol.nmse, maxAbs: tol.maxAbs) { XCTFail("\(param), \(what): \(why)") }
        }
        XCTAssertTrue(differs, "the backward must read the rounded copies: \(what)")
        // Checkpointing recomputes each layer in f32: nothing is rounded.
        let recomputed = try run(g, on: be, type: type, checkpointing: true)
        let f32Recomputed = try run(g, on: be, type: .f32, checkpointing: true)
        XCTAssertEqual(recomputed.losses, f32Recomputed.losses, what)
        XCTAssertEqual(recomputed.grads, f32Recomputed.grads, "checkpointing keeps f32: \(what)")
      }
    }
  }

  func test_halfActivations_cpu() throws { try check(on: TestBackends.cpu) }

  /// A pass without gradients (DPO's reference pass, evaluation during training) keeps no
  /// 16-bit copies: it runs exactly the ops of a frozen model's pass, and the same losses.
  func test_passWithoutGradients_skipsTheRoundedCopies() throws {
    let g = try GoldenCase.load("llama_tied"), be = TestBackends.cpu
    func pass(_ trainable: TrainableParameters) throws -> (dispatches: Int, losses: [Float]) {
      let m = try DecoderModel(weights: try DecoderWeights(from: g.weights, shape: g.shape, backend: be,
                                                       trainable: trainable), activationType: .bf16)
      try m.forward(ids: try g.ids, targets: try g.targets, batch: g.batch)  // warm-up: arena made
      let before = be.statistics.dispatches
      try m.forward(ids: try g.ids, targets: try g.targets, batch: g.batch)
      return (be.statistics.dispatches - before, try m.tokenLosses())
    }
    let trained = try pass(.all), frozen = try pass(.none)
    XCTAssertEqual(trained.dispatches, frozen.dispatches, "no cast of saved activations without gradients")
    XCTAssertEqual(trained.losses, frozen.losses)
  }

  func test_halfActivations_vulkan() throws { try check(on: try ModelFixtures.vulkanOrSkip()) }

  /// bf16 activations on Vulkan against the same on the CPU (the ground truth).
  func test_bf16Activations_vulkanMatchesCPU() throws {
    let vk = try ModelFixtures.vulkanOrSkip()
    for name in GoldenCase.names {
      let g = try GoldenCase.load(name)
      let cpu = try run(g, on: TestBackends.cpu, type: .bf16), gpu = try run(g, on: vk, type: .bf16)
      let tol = Self.backendParity
      if let why = Compare.check(cpu.losses, gpu.losses, nmse: tol.nmse, maxAbs: tol.maxAbs) {
        XCTFail("losses, \(name): \(why)")
      }
      for (param, e) in cpu.grads.sorted(by: { $0.key < $1.key }) {
        if let why = Compare.check(e, gpu.grads[param] ?? [], nmse: tol.nmse, maxAbs: tol.maxAbs) {
          XCTFail("\(param), \(name): \(why)")
        }
      }
    }
  }
}
