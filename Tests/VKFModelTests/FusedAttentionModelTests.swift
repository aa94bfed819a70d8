import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFTestSupport

/// The model's attention through the fused op (the default) against the reference path
/// (scores → causal softmax → P·v with (B, NH, T, T) buffers): equal losses and gradients of
/// every parameter for the golden models (GQA and not, tied and untied heads), on the CPU and
/// on Vulkan, with and without checkpointing; and the arena without its T² terms.
final class FusedAttentionModelTests: XCTestCase {
  /// The two paths sum the same products in another order (blocked online softmax vs a full
  /// row), through two layers and the head: f32 reassociation, ~1e-6 relative.
  static let pathTolerance = ModelTolerance(nmse: 1e-10, maxAbs: 1e-5)

  func test_fusedEqualsUnfused_cpu() throws { try check(on: TestBackends.cpu) }

  func test_fusedEqualsUnfused_vulkan() throws { try check(on: try ModelFixtures.vulkanOrSkip()) }

  private func check(on backend: Backend) throws {
    for name in ["llama_untied", "llama_tied", "qwen2_tied"] {
      let g = try GoldenCase.load(name)
      for checkpointing in [false, true] {
        func run(_ fused: Bool) throws -> (losses: [Float], grads: [String: [Float]]) {
          let m = try g.model(on: backend, checkpointing: checkpointing, fusedAttention: fused)
          try m.forward(ids: try g.ids, targets: try g.targets, batch: g.batch, computeGradients: true)
          let losses = try m.tokenLosses()
          try m.backward()
          return (losses, try ModelFixtures.gradients(of: m))
        }
        let reference = try run(false), fused = try run(true)
        let what = "\(name) on \(backend.name), checkpointing \(checkpointing)"
        let tol = Self.pathTolerance
        if let why = Compare.check(reference.losses, fused.losses, nmse: tol.nmse, maxAbs: tol.maxAbs) {
          XCTFail("losses, \(what): \(why)")
        }
        XCTAssertEqual(Set(reference.grads.keys), Set(fused.grads.keys), what)
        for (param, e) in reference.grads.sorted(by: { $0.key < $1.key }) {
          if let why = Compare.check(e, fused.grads[param] ?? [], nmse: tol.nmse, maxAbs: tol.maxAbs) {
            XCTFail("\(param), \(what): \(why)")
          }
        }
      }
    }
  }

  /// Per layer the probabilities (B, NH, T, T) become one log-sum-exp per row (B, NH, T),
  /// and so does the scores scratch: the arena shrinks by exactly those floats (64-aligned).
  func test_fusedArena_dropsTheT2Terms() throws {
    let g = try GoldenCase.load("llama_untied")
    func bytes(_ fused: Bool) throws -> Int {
      let m = try g.model(on: TestBackends.cpu, fusedAttention: fused)
      try m.forward(ids: try g.ids, targets: try g.targets, batch: g.batch, computeGradients: true)
      return try XCTUnwrap(m.activationStorage).byteCount
    }
    let s = g.shape, b = g.batch, t = try g.ids.count / g.batch
    func aligned(_ x: Int) -> Int { (x + 63) / 64 * 64 }
    let perBuffer = aligned(b * s.heads * t * t) - aligned(b * s.heads * t)
    XCTAssertEqual(try bytes(false) - bytes(true), 4 * perBuffer * (s.layers + 1))
  }
}
