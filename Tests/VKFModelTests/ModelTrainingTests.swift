import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFTestSupport

/// Training mechanics of `DecoderModel` beyond the golden values: gradient accumulation,
/// activation checkpointing, trainable subsets, arena reuse and weight-shape errors.
final class ModelTrainingTests: XCTestCase {
  /// Two micro-batches vs the whole batch: the same per-token terms summed in another
  /// grouping (parameter gradients accumulate over 7 vs 14 tokens); f32 reassociation only.
  static let accumulationTolerance = ModelTolerance(nmse: 1e-11, maxAbs: 1e-6)

  /// Two identical steps vs twice one step: exact except the tied embedding, whose two
  /// contributions per step (LM head, lookup) are added in another order (last-ulp).
  static let repeatTolerance = ModelTolerance(nmse: 1e-13, maxAbs: 1e-7)

  func test_accumulation_twoMicroBatches_equalWholeBatch_cpu() throws {
    try checkAccumulation(on: TestBackends.cpu)
  }

  func test_accumulation_twoMicroBatches_equalWholeBatch_vulkan() throws {
    try checkAccumulation(on: try ModelFixtures.vulkanOrSkip())
  }

  /// Rows 0 and 1 as two micro-batches of B = 1, normalised by the whole batch's target
  /// count, accumulate to the B = 2 gradient normalised by its own count.
  private func checkAccumulation(on backend: Backend) throws {
    let g = try GoldenCase.load("qwen2_tied")
    let ids = try g.ids, targets = try g.targets, t = ids.count / g.batch
    let whole = try g.model(on: backend)
    try whole.forward(ids: ids, targets: targets, batch: g.batch, computeGradients: true)
    let wholeLoss = try whole.loss()
    try whole.backward()
    let expected = try ModelFixtures.gradients(of: whole)

    let micro = try g.model(on: backend)
    let count = Float(targets.filter { $0 != DecoderModel.ignoreIndex }.count)
    var loss: Float = 0
    for row in 0..<g.batch {
      let r = (row * t)..<((row + 1) * t)
      try micro.forward(ids: Array(ids[r]), targets: Array(targets[r]), batch: 1,
                        lossNormalizer: count, computeGradients: true)
      loss += try micro.loss()
      try micro.backward()
    }
    XCTAssertEqual(loss, wholeLoss, accuracy: wholeLoss * 1e-6)
    let actual = try ModelFixtures.gradients(of: micro)
    for (name, e) in expected.sorted(by: { $0.key < $1.key }) {
      let tol = Self.accumulationTolerance
      if let why = Compare.check(e, actual[name] ?? [], nmse: tol.nmse, maxAbs: tol.maxAbs) {
        XCTFail("accumulated \(name) on \(backend.name): \(why)")
      }
    }
  }

  func test_checkpointing_gradientsIdentical_cpu() throws { try checkCheckpointing(on: TestBackends.cpu) }
  func test_checkpointing_gradientsIdentical_vulkan() throws { try checkCheckpointing(on: try ModelFixtures.vulkanOrSkip()) }

  /// Recomputing each layer in the backward pass replays the same ops on the same inputs,
  /// so the gradients are bit-identical, not merely close.
  private func checkCheckpointing(on backend: Backend) throws {
    let g = try GoldenCase.load("llama_untied")
    var results: [[String: [Float]]] = []
    for checkpointing in [false, true] {
      let m = try g.model(on: backend, checkpointing: checkpointing)
      try m.forward(ids: try g.ids, targets: try g.targets, batch: g.batch, computeGradients: true)
      try m.backward()
      results.append(try ModelFixtures.gradients(of: m))
    }
    XCTAssertEqual(results[0].count, 21)
    for (name, e) in results[0] { XCTAssertTrue(results[1][name] == e, "\(name) on \(backend.name)") }
  }

  /// Training a subset (layer 1's v projection and the final norm) gives exactly the full
  /// run's gradients for those parameters, and allocates no others; the backward stops
  /// above layer 0.
  func test_trainableSubset_matchesFullGradients() throws {
    let g = try GoldenCase.load("qwen2_tied")
    let names: Set = ["model.layers.1.self_attn.v_proj.weight", "model.layers.1.self_attn.v_proj.bias",
                      ParameterNames.finalNorm]
    var results: [[String: [Float]]] = []
    for trainable in [TrainableParameters.all, .named(names)] {
      let m = try g.model(on: TestBackends.cpu, trainable: trainable)
      try m.forward(ids: try g.ids, targets: try g.targets, batch: g.batch, computeGradients: true)
      try m.backward()
      results.append(try ModelFixtures.gradients(of: m))
    }
    XCTAssertEqual(Set(results[1].keys), names)
    for name in names { XCTAssertTrue(results[1][name] == results[0][name], name) }
  }

  /// Gradients accumulate over backward calls until zeroGradients; the arena is reused
  /// while (B, T) stays the same.
  func test_repeatedSteps_accumulateAndReuseArena() throws {
    let g = try GoldenCase.load("llama_tied")
    let m = try g.model(on: TestBackends.cpu)
    var once: [String: [Float]] = [:]
    var storage: ObjectIdentifier?
    for step in 0..<2 {
      try m.forward(ids: try g.ids, targets: try g.targets, batch: g.batch, computeGradients: true)
      try m.backward()
      let s = ObjectIdentifier(try XCTUnwrap(m.activationStorage))
      if step == 0 { once = try ModelFixtures.gradients(of: m); storage = s } else { XCTAssertEqual(s, storage) }
    }
    for (name, twice) in try ModelFixtures.gradients(of: m) {
      let tol = Self.repeatTolerance
      if let why = Compare.check((once[name] ?? []).map { $0 + $0 }, twice, nmse: tol.nmse, maxAbs: tol.maxAbs) {
        XCTFail("\(name) after two steps: \(why)")
      }
    }
    try m.zeroGradients()
    XCTAssertTrue(try ModelFixtures.gradients(of: m).values.allSatisfy { $0.allSatisfy { $0 == 0 } })
  }

  func test_backwardWithoutTrainableParameters_throws() throws {
    let g = try GoldenCase.load("llama_untied")
    let m = try g.model(on: TestBackends.cpu, trainable: .none)
    try m.forward(ids: try g.ids, targets: try g.targets, batch: g.batch)
    XCTAssertGreaterThan(try m.loss(), 0)
    XCTAssertThrowsError(try m.backward())
    XCTAssertThrowsError(try m.forward(ids: try g.ids, targets: try g.targets, batch: g.batch,
                                       computeGradients: true))
  }

  /// A config that disagrees with the checkpoint names the tensor.
  func test_loadWeights_wrongShape_namesTensor() throws {
    let g = try GoldenCase.load("llama_untied")
    var shape = g.shape
    shape.intermediate = 128
    XCTAssertThrowsError(try DecoderWeights(from: g.weights, shape: shape, backend: TestBackends.cpu)) {
      XCTAssertEqual(($0 as? ModelWeightsError)?.tensor, "model.layers.0.mlp.gate_proj.weight", "\($0)")
    }
    shape = g.shape
    shape.tiedEmbeddings = false
    shape.qkvBias = true
    XCTAssertThrowsError(try DecoderWeights(from: g.weights, shape: shape, backend: TestBackends.cpu)) {
      XCTAssertEqual(($0 as? ModelWeightsError)?.tensor, "model.layers.0.self_attn.q_proj.bias", "\($0)")
    }
    XCTAssertThrowsError(try DecoderWeights(from: g.weights, shape: g.shape, backend: TestBackends.cpu,
                                          trainable: .named(["model.layers.9.mlp.up_proj.weight"])))
  }
}
