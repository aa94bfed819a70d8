import XCTest
import VKFCore
import VKFModel
import VKFTestSupport
@testable import VKFPEFT

/// LoRA attached to the tiny model: identity at init, disabling, training mechanics
/// (checkpointing, dropout determinism), finite differences through the whole model, loading,
/// and CPU/Vulkan parity.
final class LoRAModelTests: XCTestCase {
  /// Central differences of the whole model's loss in f32 along a random direction v of one
  /// adapter tensor: h = 1e-2 keeps f32 rounding of the loss (~3e-7 / 2h ≈ 2e-5) and the
  /// h² truncation (curvature through softmax and SwiGLU, ~1e-5) well under this relative
  /// bound on ⟨∇, v⟩.
  static let directionalRelative = 5e-3
  /// CPU vs lavapipe, one LoRA step's gradients: different summation orders through the
  /// model; the model goldens measure ≤ 2e-12 NMSE, 50× headroom as there.
  static let parityNMSE = 1e-10
  static let parityMaxAbs = 1e-5

  func test_loraForward_zeroB_equalsBase_cpu() throws { try checkZeroB(on: TestBackends.cpu) }
  func test_loraForward_zeroB_equalsBase_vulkan() throws { try checkZeroB(on: try LoRATiny.vulkanOrSkip()) }

  /// B = 0 adds exactly 0·s to every output: the logits are bit-identical to the base model's.
  private func checkZeroB(on be: Backend) throws {
    let w = try LoRATiny.weights(on: be)
    let base = try LoRATiny.logits(try DecoderModel(weights: w))
    let lora = try LoRAModel(weights: w, config: LoRAConfig(r: 4, alpha: 8, dropout: 0.1), seed: 7)
    XCTAssertEqual(lora.adapters.count, 14)
    lora.training = false
    XCTAssertEqual(try LoRATiny.logits(try DecoderModel(weights: w)), base)
    // A is U(−1/√in, 1/√in), not zero.
    let a0 = try be.floats(lora.adapters[0].adapter.a)
    XCTAssertTrue(a0.contains { $0 != 0 } && a0.allSatisfy { abs($0) <= 1 / Float(16).squareRoot() })
  }

  /// enabled = false gives the base logits exactly even with nonzero B; enabled = true differs.
  func test_disabled_equalsBase() throws {
    let w = try LoRATiny.weights(on: TestBackends.cpu)
    let base = try LoRATiny.logits(try DecoderModel(weights: w))
    let lora = try LoRAModel(weights: w, config: LoRAConfig(r: 4, alpha: 8), seed: 7)
    try lora.load(LoRATiny.randomAdapterValues(lora, seed: 1))
    let model = try DecoderModel(weights: w)
    XCTAssertNotEqual(try LoRATiny.logits(model), base)
    lora.enabled = false
    XCTAssertFalse(lora.enabled)
    XCTAssertEqual(try LoRATiny.logits(model), base)
    lora.enabled = true
    lora.detach()
    XCTAssertEqual(try LoRATiny.logits(model), base)
    // Detached: a new LoRAModel may attach again.
    XCTAssertNoThrow(try LoRAModel(weights: w, config: LoRAConfig(r: 2), seed: 1))
  }

  /// rsLoRA scales the same update by α/√r instead of α/r: the change of the output of one
  /// projection is √r times larger.
  func test_rsLoRA_scalesUpdateBySqrtR() throws {
    XCTAssertEqual(LoRAConfig(r: 16, alpha: 32).scaling, 2)
    XCTAssertEqual(LoRAConfig(r: 16, alpha: 32, useRSLoRA: true).scaling, 8)
    let be = TestBackends.cpu
    var deltas: [[Float]] = []
    for rs in [false, true] {
      let w = try LoRATiny.weights(on: be)
      let lora = try LoRAModel(weights: w, config: LoRAConfig(r: 4, alpha: 8, targetModules: ["v_proj"],
                                                              useRSLoRA: rs), seed: 7)
      try lora.load(LoRATiny.randomAdapterValues(lora, seed: 2))
      XCTAssertEqual(lora.adapters[0].adapter.scaling, rs ? 4 : 2)
      let p = LoRATestMiniProjection(w.layers[0].v, backend: be)
      let withLoRA = try p.output()
      lora.enabled = false
      let plain = try p.output()
      deltas.append(zip(withLoRA, plain).map { $0 - $1 })
    }
    // The update is computed in f32 and added to O(1) outputs: ~1e-7 absolute error each.
    for (a, b) in zip(deltas[0], deltas[1]) { XCTAssertEqual(b, 2 * a, accuracy: 1e-5) }
  }

  /// Directional derivatives of the loss along random directions of A and B (B nonzero, DoRA
  /// off) through the whole model on the CPU, vs the backward pass.
  func test_loraGradients_matchFiniteDifferences_cpu() throws {
    let be = TestBackends.cpu
    let w = try LoRATiny.weights(on: be)
    let lora = try LoRAModel(weights: w, config: LoRAConfig(r: 3, alpha: 6), seed: 9)
    try lora.load(LoRATiny.randomAdapterValues(lora, seed: 3))
    let model = try DecoderModel(weights: w)
    try LoRATiny.step(model)
    let grads = try LoRATiny.gradients(lora)
    let h: Float = 1e-2
    for (k, t) in lora.trainableTensors.enumerated() where k % 3 == 0 || k == 1 {
      let v = TestData.uniform(t.count, seed: 100 + UInt64(k))
      let norm = v.reduce(0) { $0 + $1 * $1 }.squareRoot()
      let dir = v.map { $0 / norm }
      let original = try be.floats(t.value)
      func loss(at eps: Float) throws -> Double {
        try be.upload(zip(original, dir).map { $0 + eps * $1 }, to: t.value)
        return Double(try LoRATiny.loss(model))
      }
      let fd = (try loss(at: h) - loss(at: -h)) / Double(2 * h)
      try be.upload(original, to: t.value)
      let analytic = zip(try XCTUnwrap(grads[t.name]), dir).reduce(0.0) { $0 + Double($1.0) * Double($1.1) }
      XCTAssertEqual(fd, analytic, accuracy: Self.directionalRelative * max(abs(analytic), 1e-2), t.name)
    }
  }

  /// Recomputing layers in the backward pass replays the same ops, dropout masks included:
  /// adapter gradients are bit-identical with checkpointing on and off.
  func test_checkpointing_identicalLoRAGradients_cpu() throws { try checkCheckpointing(on: TestBackends.cpu) }
  func test_checkpointing_identicalLoRAGradients_vulkan() throws { try checkCheckpointing(on: try LoRATiny.vulkanOrSkip()) }

  private func checkCheckpointing(on be: Backend) throws {
    var results: [[String: [Float]]] = []
    for checkpointing in [false, true] {
      let w = try LoRATiny.weights(on: be)
      let lora = try LoRAModel(weights: w, config: LoRAConfig(r: 4, alpha: 8, dropout: 0.2, useDoRA: true), seed: 4)
      try lora.load(LoRATiny.randomAdapterValues(lora, seed: 4))
      try lora.setDropoutSeed(77)
      let model = try DecoderModel(weights: w, checkpointing: checkpointing)
      try LoRATiny.step(model)
      try LoRATiny.step(model)  // a second micro-batch: the next masks
      results.append(try LoRATiny.gradients(lora))
    }
    XCTAssertEqual(results[0].count, 14 * 3)
    for (name, g) in results[0] {
      XCTAssertTrue(g.contains { $0 != 0 }, name)
      XCTAssertTrue(results[1][name] == g, "\(name) on \(be.name)")
    }
  }

  /// The same dropout seed gives the same loss and gradients; another seed another loss;
  /// training = false turns dropout off (the loss of a dropout-free model).
  func test_dropout_deterministicPerSeed() throws {
    let be = TestBackends.cpu
    func run(seed: UInt64?, dropout: Float = 0.3) throws -> (Float, [String: [Float]]) {
      let w = try LoRATiny.weights(on: be)
      let lora = try LoRAModel(weights: w, config: LoRAConfig(r: 4, alpha: 8, dropout: dropout), seed: 5)
      try lora.load(LoRATiny.randomAdapterValues(lora, seed: 5))
      if let seed { try lora.setDropoutSeed(seed) } else { lora.training = false }
      let model = try DecoderModel(weights: w)
      let loss = try LoRATiny.step(model) + LoRATiny.step(model)
      return (loss, try LoRATiny.gradients(lora))
    }
    let (l1, g1) = try run(seed: 1), (l1b, g1b) = try run(seed: 1), (l2, _) = try run(seed: 2)
    XCTAssertEqual(l1, l1b)
    XCTAssertTrue(g1 == g1b)
    XCTAssertNotEqual(l1, l2)
    let (lEval, _) = try run(seed: nil), (lNoDropout, _) = try run(seed: 1, dropout: 0)
    XCTAssertEqual(lEval, lNoDropout)
    XCTAssertNotEqual(lEval, l1)
  }

  /// Names and shapes as PEFT writes them; one gradient allocation zeroed at once.
  func test_trainableTensors_peftKeysAndZeroing() throws {
    let w = try LoRATiny.weights(on: TestBackends.cpu)
    let lora = try LoRAModel(weights: w, config: LoRAConfig(r: 2, targetModules: ["q_proj", "down_proj"],
                                                            useDoRA: true), seed: 1)
    XCTAssertEqual(lora.adapters.map(\.module), ["model.layers.0.self_attn.q_proj", "model.layers.0.mlp.down_proj",
                                                 "model.layers.1.self_attn.q_proj", "model.layers.1.mlp.down_proj"])
    let t = lora.trainableTensors
    XCTAssertEqual(t.prefix(3).map(\.name), [
      "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight",
      "base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight",
      "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector"])
    XCTAssertEqual(t.prefix(3).map(\.value.shape), [[2, 16], [16, 2], [16]])
    XCTAssertEqual(t[3].value.shape, [2, 24])
    let model = try DecoderModel(weights: w)
    try LoRATiny.step(model)
    XCTAssertTrue(try LoRATiny.gradients(lora).values.contains { $0.contains { $0 != 0 } })
    try lora.zeroGradients()
    XCTAssertTrue(try LoRATiny.gradients(lora).values.allSatisfy { $0.allSatisfy { $0 == 0 } })
  }

  func test_load_rejectsMissingExtraAndMisshapen() throws {
    let w = try LoRATiny.weights(on: TestBackends.cpu)
    let lora = try LoRAModel(weights: w, config: LoRAConfig(r: 2, targetModules: ["v_proj"]), seed: 1)
    var values = LoRATiny.randomAdapterValues(lora, seed: 1)
    XCTAssertNoThrow(try lora.load(values))
    XCTAssertEqual(try TestBackends.cpu.floats(lora.adapters[0].adapter.b),
                   values["base_model.model.model.layers.0.self_attn.v_proj.lora_B.weight"])
    let key = "base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight"
    var bad = values; bad[key] = nil
    XCTAssertThrowsError(try lora.load(bad)) { XCTAssertTrue("\($0)".contains("missing"), "\($0)") }
    bad = values; bad[key]?.append(0)
    XCTAssertThrowsError(try lora.load(bad)) { XCTAssertTrue("\($0)".contains("[2, 16]"), "\($0)") }
    values["base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight"] = [0]
    XCTAssertThrowsError(try lora.load(values)) { XCTAssertTrue("\($0)".contains("unexpected"), "\($0)") }
  }

  func test_init_rejectsBadConfigAndDoubleAttach() throws {
    let w = try LoRATiny.weights(on: TestBackends.cpu)
    XCTAssertThrowsError(try LoRAModel(weights: w, config: LoRAConfig(r: 0), seed: 1)) {
      XCTAssertTrue($0 is PEFTError)
    }
    let first = try LoRAModel(weights: w, config: LoRAConfig(r: 2, targetModules: ["q_proj"]), seed: 1)
    XCTAssertThrowsError(try LoRAModel(weights: w, config: LoRAConfig(r: 2, targetModules: ["q_proj"]), seed: 1)) {
      XCTAssertTrue("\($0)".contains("already has an adapter"), "\($0)")
    }
    first.detach()
    let trained = try LoRATiny.weights(on: TestBackends.cpu, trainable: .all)
    XCTAssertThrowsError(try LoRAModel(weights: trained, config: LoRAConfig(useDoRA: true), seed: 1)) {
      XCTAssertTrue("\($0)".contains("frozen"), "\($0)")
    }
  }

  /// One LoRA step's adapter gradients on the CPU and on lavapipe (dropout included: the
  /// masks are drawn by the same integer hash on both).
  func test_loraStep_cpuVulkanParity() throws {
    let vk = try LoRATiny.vulkanOrSkip()
    var results: [[String: [Float]]] = []
    for be in [TestBackends.cpu as Backend, vk] {
      let w = try LoRATiny.weights(on: be)
      let lora = try LoRAModel(weights: w, config: LoRAConfig(r: 4, alpha: 8, dropout: 0.1), seed: 6)
      try lora.load(LoRATiny.randomAdapterValues(lora, seed: 6))
      try lora.setDropoutSeed(3)
      try LoRATiny.step(try DecoderModel(weights: w))
      results.append(try LoRATiny.gradients(lora))
    }
    for (name, e) in results[0] {
      if let why = Compare.check(e, results[1][name] ?? [], nmse: Self.parityNMSE, maxAbs: Self.parityMaxAbs) {
        XCTFail("\(name): \(why)")
      }
    }
  }
}

/// Runs one projection of the tiny model on fixed inputs (for per-projection comparisons).
struct LoRATestMiniProjection {
  let linear: Linear
  let backend: Backend
  init(_ linear: Linear, backend: Backend) { self.linear = linear; self.backend = backend }

  /// y for 3 fixed rows of x.
  func output() throws -> [Float] {
    let x = try backend.tensor(TestData.uniform(3 * linear.inFeatures, seed: 61), shape: [3, linear.inFeatures])
    let y = try backend.allocate([3, linear.outFeatures])
    try linear.forward(backend, x, into: y)
    return try backend.floats(y)
  }
}
