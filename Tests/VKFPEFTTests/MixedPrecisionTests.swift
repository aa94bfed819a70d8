import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFTestSupport
@testable import VKFPEFT

/// Mixed precision's frozen weights: DecoderWeights(frozenStorage: .bf16 / .f16) keeps the frozen
/// matrices 16-bit and every kernel widens them exactly, so a LoRA / DoRA / QLoRA step over a
/// 16-bit base equals the f32 step over the same weights rounded to 16 bits — the only
/// difference mixed precision makes here is that rounding, which happens once, at load.
final class MixedPrecisionTests: XCTestCase {
  /// The 16-bit and the rounded-f32 models run the same f32 arithmetic in the same order up to
  /// the widening matmul's panels (CPU) or tiles (Vulkan): f32 reassociation through two
  /// layers, ~1e-6 relative.
  static let sameValues = PEFTTolerance(nmse: 1e-10, maxAbs: 1e-5)
  /// CPU vs Vulkan over a 16-bit base: LoRAModelTests' f32 parity bound (different summation
  /// orders, OpenBLAS vs tiled shaders; widening itself is exact on both).
  static let backends = PEFTTolerance(nmse: LoRAModelTests.parityNMSE, maxAbs: LoRAModelTests.parityMaxAbs)

  /// The tiny model's weights with every matrix rounded to `dtype` (what a 16-bit base holds);
  /// for QLoRA not the projections, which are quantised to NF4 from the file's values.
  private func roundedSource(_ dtype: DType, qlora: Bool) -> LoRATestWeights {
    let src = LoRATestWeights(shape: LoRATiny.shape, seed: 5)
    for (name, t) in src.tensors where t.shape.count == 2 && !(qlora && name.contains("_proj.")) {
      src.tensors[name] = (t.shape, TestData.half(t.values, dtype).values)
    }
    return src
  }

  /// Loss, per-token losses and adapter gradients of one step of `config` over weights loaded
  /// from `source` with `frozenStorage`, adapters seeded identically.
  private func step(_ source: WeightSource, frozenStorage: DType, config: LoRAConfig, qlora: Bool = false,
                    on be: Backend) throws -> (losses: [Float], grads: [String: [Float]]) {
    var report = QuantizationReport()
    let w = qlora
      ? try QLoRA.load(from: source, shape: LoRATiny.shape, backend: be, frozenStorage: frozenStorage, report: &report)
      : try DecoderWeights(from: source, shape: LoRATiny.shape, backend: be, frozenStorage: frozenStorage)
    let lora = try LoRAModel(weights: w, config: config, seed: 3)
    try lora.load(LoRATiny.randomAdapterValues(lora, seed: 9))
    let model = try DecoderModel(weights: w)
    try model.forward(ids: LoRATiny.ids, targets: LoRATiny.targets, batch: LoRATiny.batch, computeGradients: true)
    let losses = try model.tokenLosses()
    try model.backward()
    return (losses, try LoRATiny.gradients(lora))
  }

  private func assertClose(_ a: (losses: [Float], grads: [String: [Float]]),
                           _ b: (losses: [Float], grads: [String: [Float]]), _ tol: PEFTTolerance,
                           _ what: String, file: StaticString = #filePath, line: UInt = #line) {
    if let why = Compare.check(a.losses, b.losses, nmse: tol.nmse, maxAbs: tol.maxAbs) {
      XCTFail("losses, \(what): \(why)", file: file, line: line)
    }
    XCTAssertEqual(Set(a.grads.keys), Set(b.grads.keys), what, file: file, line: line)
    for (k, e) in a.grads.sorted(by: { $0.key < $1.key }) {
      if let why = Compare.check(e, b.grads[k] ?? [], nmse: tol.nmse, maxAbs: tol.maxAbs) {
        XCTFail("\(k), \(what): \(why)", file: file, line: line)
      }
    }
  }

  private static let configs: [(String, LoRAConfig, Bool)] = [
    ("lora", LoRAConfig(r: 4, alpha: 8), false),
    ("dora", LoRAConfig(r: 4, alpha: 8, useDoRA: true), false),
    ("qlora", LoRAConfig(r: 4, alpha: 8), true),
  ]

  /// A 16-bit base equals the f32 base holding the same rounded values, on each backend.
  private func checkEqualsRounded(on be: Backend) throws {
    for dtype in [DType.bf16, .f16] {
      for (name, config, qlora) in Self.configs {
        let half = try step(LoRATestWeights(shape: LoRATiny.shape, seed: 5), frozenStorage: dtype,
                            config: config, qlora: qlora, on: be)
        let rounded = try step(roundedSource(dtype, qlora: qlora), frozenStorage: .f32, config: config, qlora: qlora, on: be)
        assertClose(rounded, half, Self.sameValues, "\(name) \(dtype) base on \(be.name)")
      }
    }
  }

  func test_halfBase_equalsRoundedF32Base_cpu() throws { try checkEqualsRounded(on: TestBackends.cpu) }

  func test_halfBase_equalsRoundedF32Base_vulkan() throws { try checkEqualsRounded(on: try LoRATiny.vulkanOrSkip()) }

  /// A bf16 step on Vulkan matches the same step on the CPU (the ground truth).
  func test_bf16Step_vulkanMatchesCPU() throws {
    let vk = try LoRATiny.vulkanOrSkip()
    for (name, config, qlora) in Self.configs {
      let source = LoRATestWeights(shape: LoRATiny.shape, seed: 5)
      let cpu = try step(source, frozenStorage: .bf16, config: config, qlora: qlora, on: TestBackends.cpu)
      let gpu = try step(source, frozenStorage: .bf16, config: config, qlora: qlora, on: vk)
      assertClose(cpu, gpu, Self.backends, "\(name) bf16, CPU vs Vulkan")
    }
  }

  /// Which tensors are 16-bit: frozen matrices only; norms, biases and (full fine-tuning)
  /// trained matrices stay f32, and an untied LM head is stored like the embedding.
  func test_storage_frozenMatricesOnly() throws {
    let be = TestBackends.cpu
    let w = try DecoderWeights(from: LoRATestWeights(shape: LoRATiny.shape, seed: 5), shape: LoRATiny.shape,
                             backend: be, trainable: .named(["model.layers.1.mlp.up_proj.weight"]),
                             frozenStorage: .bf16)
    XCTAssertEqual(w.frozenStorage, .bf16)
    XCTAssertEqual(w.embedding.dtype, .bf16)
    XCTAssertEqual(w.lmHead.denseWeight?.dtype, .bf16)
    XCTAssertEqual(w.layers[0].q.denseWeight?.dtype, .bf16)
    XCTAssertEqual(w.layers[0].q.bias?.dtype, .f32)
    XCTAssertEqual(w.layers[0].inputNorm.dtype, .f32)
    XCTAssertEqual(w.finalNorm.dtype, .f32)
    XCTAssertEqual(w.layers[1].up?.denseWeight?.dtype, .f32, "a trained matrix keeps its f32 master")
    XCTAssertEqual(try DecoderWeights(from: LoRATestWeights(shape: LoRATiny.shape, seed: 5), shape: LoRATiny.shape,
                                    backend: be).frozenStorage, .f32)
  }

  /// fp16 holds ±65504: a larger frozen weight is refused by name instead of becoming inf.
  func test_f16_refusesOutOfRangeWeightByName() throws {
    let src = LoRATestWeights(shape: LoRATiny.shape, seed: 5)
    let name = "model.layers.0.self_attn.k_proj.weight"
    src.tensors[name]?.values[3] = 70_000
    XCTAssertThrowsError(try DecoderWeights(from: src, shape: LoRATiny.shape, backend: TestBackends.cpu,
                                          frozenStorage: .f16)) { e in
      XCTAssertTrue("\(e)".hasPrefix(name), "\(e)")
      XCTAssertTrue("\(e)".contains("bf16"), "\(e)")
    }
    XCTAssertNoThrow(try DecoderWeights(from: src, shape: LoRATiny.shape, backend: TestBackends.cpu,
                                      frozenStorage: .bf16))
  }

  /// Merging into a 16-bit base would round the update to 16 bits: refused before anything
  /// changes, naming the module.
  func test_merge_refusesHalfBase() throws {
    let w = try DecoderWeights(from: LoRATestWeights(shape: LoRATiny.shape, seed: 5), shape: LoRATiny.shape,
                             backend: TestBackends.cpu, frozenStorage: .bf16)
    let lora = try LoRAModel(weights: w, config: LoRAConfig(r: 2, alpha: 4, targetModules: ["q_proj"]), seed: 1)
    XCTAssertThrowsError(try Merge.merge(lora)) { e in
      XCTAssertTrue("\(e)".contains("q_proj") && "\(e)".contains("bf16"), "\(e)")
    }
    XCTAssertFalse(lora.adapters.isEmpty, "still attached")
  }
}
