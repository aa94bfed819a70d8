import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFTestSupport

/// The hooks sequence-level objectives use: per-token losses, per-token weights on the logit
/// gradients (DPO), and a backward from the final hidden states (reward models).
final class SequenceObjectiveTests: XCTestCase {
  /// Two ways of summing the same f32 per-token terms (a masked row vs a zero weight, chunks
  /// of 5 rows vs one): reassociation only — a few ulps on gradient elements up to ~16.
  static let weightingTolerance = ModelTolerance(nmse: 1e-11, maxAbs: 1e-5)

  func test_tokenLosses_sumToLoss_andScaleRows_equalsMaskedRow_cpu() throws {
    try checkWeighting(on: TestBackends.cpu)
  }

  func test_tokenLosses_sumToLoss_andScaleRows_equalsMaskedRow_vulkan() throws {
    try checkWeighting(on: try ModelFixtures.vulkanOrSkip())
  }

  /// Weighting row 1's tokens by 0 and row 0's by 2 equals 2× the gradient of a forward whose
  /// row-1 targets are all ignored — with the head trained (its chunks redone with the
  /// weights) and frozen (the forward's dL/dhidden scaled), in chunks of 5 rows.
  private func checkWeighting(on backend: Backend) throws {
    for trainable in [TrainableParameters.all, HeadChunkTests.frozenHead] {
      try checkWeighting(on: backend, trainable: trainable)
    }
  }

  private func checkWeighting(on backend: Backend, trainable: TrainableParameters) throws {
    let g = try GoldenCase.load("qwen2_tied")
    let ids = try g.ids, targets = try g.targets, t = ids.count / g.batch
    let model = try g.model(on: backend, trainable: trainable, headChunkTokens: HeadChunkTests.oddChunk)
    try model.forward(ids: ids, targets: targets, batch: g.batch, lossNormalizer: 1, computeGradients: true,
                      weightedLater: true)
    let losses = try model.tokenLosses()
    XCTAssertEqual(losses.count, ids.count)
    XCTAssertEqual(Double(losses.reduce(0, +)), Double(try model.loss()), accuracy: 1e-4)
    for (i, target) in targets.enumerated() where target == DecoderModel.ignoreIndex {
      XCTAssertEqual(losses[i], 0, "ignored target \(i) has no loss")
    }
    let weights = (0..<ids.count).map { $0 < t ? Float(2) : 0 }
    try model.backward(tokenWeights: weights)
    let weighted = try ModelFixtures.gradients(of: model)

    let masked = try g.model(on: backend, trainable: trainable)
    var rowZero = targets
    for i in t..<ids.count { rowZero[i] = DecoderModel.ignoreIndex }
    try masked.forward(ids: ids, targets: rowZero, batch: g.batch, lossNormalizer: 0.5, computeGradients: true)
    try masked.backward()
    let expected = try ModelFixtures.gradients(of: masked)
    for (name, e) in expected.sorted(by: { $0.key < $1.key }) {
      let tol = Self.weightingTolerance
      if let why = Compare.check(e, weighted[name] ?? [], nmse: tol.nmse, maxAbs: tol.maxAbs) {
        XCTFail("\(name) on \(backend.name): \(why)")
      }
    }
    XCTAssertThrowsError(try model.backward(tokenWeights: weights), "no backward pending any more")
  }

  /// f(θ) = Σ_rows hidden·u (a fixed scalar head): the backward from hidden states must match
  /// central differences of f along a parameter direction. Computed on the CPU in f32, so the
  /// step and tolerance follow f32 rounding of f (≈1e-6 relative).
  func test_backwardFromHidden_matchesFiniteDifferences_cpu() throws {
    let backend = TestBackends.cpu
    let g = try GoldenCase.load("llama_untied")
    let ids = try g.ids
    let model = try g.model(on: backend)
    let c = model.shape.hidden, n = ids.count
    var rng = SplitMix64(seed: 3)
    let u = (0..<c).map { _ in Float(rng.nextUnitDouble() * 2 - 1) }
    func f() throws -> Double {
      let h = try backend.floats(try model.forwardHidden(ids: ids, batch: g.batch))
      var s = 0.0
      for i in 0..<n { for j in 0..<c { s += Double(h[i * c + j]) * Double(u[j]) } }
      return s
    }
    try model.zeroGradients()
    _ = try model.forwardHidden(ids: ids, batch: g.batch, computeGradients: true)
    let dh = try XCTUnwrap(model.hiddenGradient)
    try backend.upload((0..<n).flatMap { _ in u }, to: dh)
    try model.backwardFromHidden()
    let name = "model.layers.0.mlp.down_proj.weight"
    let grad = try XCTUnwrap(try ModelFixtures.gradients(of: model)[name])
    let param = try XCTUnwrap(model.weights.parameters[name])
    let original = try backend.floats(param)
    let direction = (0..<original.count).map { _ in Float(rng.nextUnitDouble() * 2 - 1) }
    let eps: Float = 1e-2
    try backend.upload(zip(original, direction).map { $0 + eps * $1 }, to: param)
    let plus = try f()
    try backend.upload(zip(original, direction).map { $0 - eps * $1 }, to: param)
    let minus = try f()
    try backend.upload(original, to: param)
    let numeric = (plus - minus) / (2 * Double(eps))
    let analytic = zip(grad, direction).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
    XCTAssertEqual(analytic, numeric, accuracy: 2e-3 * max(1, abs(numeric)), "directional derivative")
    XCTAssertThrowsError(try model.backwardFromHidden(), "no hidden backward pending any more")
  }
}
