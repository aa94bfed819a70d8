import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFPEFT
import VKFTestSupport

/// LoRA on the experts (PEFT's target_parameters) vs PEFT 0.21 + transformers
/// (tools/make_moe_lora_fixtures.py): the fixture adapters (q/v projections plus
/// mlp.experts.gate_up_proj and mlp.experts.down_proj, r 4) load from PEFT's own files onto the
/// tiny Mixtral and Qwen3-MoE, and give PEFT's logits, loss (with the load-balancing term) and
/// the gradient of every adapter tensor in PEFT's layout; saving writes PEFT's bytes back;
/// merging adds PEFT's per-expert deltas and gives its merged logits.
final class MoELoRAGoldenTests: XCTestCase {
  /// Logits and merged logits: the dense decoders' bound (ModelGoldenTests.logitsTolerance);
  /// the expert adapters add two rank-4 grouped products per projection.
  static let logitsTolerance = PEFTTolerance(nmse: 1e-11, maxAbs: 1e-5)
  /// Loss: one reduction more than the logits, plus the load-balancing term (MoEGoldenTests).
  static let lossRelativeTolerance: Float = 1e-6
  /// Adapter gradients: the dense decoders' gradient bound (ModelGoldenTests.gradientTolerance).
  static let gradientTolerance = PEFTTolerance(nmse: 1e-10, maxAbs: 1e-5)
  /// Merged expert weights − base = PEFT's delta: one rank-4 product in f32 each side.
  static let deltaMaxAbs = 1e-6

  private static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("Fixtures/moe_lora")

  func test_mixtral_cpu() throws { try check("mixtral", on: TestBackends.cpu) }
  func test_qwen3MoE_cpu() throws { try check("qwen3_moe", on: TestBackends.cpu) }
  /// lavapipe: the adapters' grouped products in shaders on the dispatched expert rows.
  func test_mixtral_vulkan() throws { try check("mixtral", on: try LoRATiny.vulkanOrSkip()) }
  func test_qwen3MoE_vulkan() throws { try check("qwen3_moe", on: try LoRATiny.vulkanOrSkip()) }

  private func compare(_ what: String, _ e: [Float], _ a: [Float], _ tol: PEFTTolerance) {
    if let why = Compare.check(e, a, nmse: tol.nmse, maxAbs: tol.maxAbs) { XCTFail("\(what): \(why)") }
  }

  private func check(_ name: String, on be: Backend) throws {
    let g = try MoEQLoRATests.golden(name)
    let dir = Self.fixtures.appendingPathComponent(name)
    let expected = try SafetensorsFile(contentsOf: dir.appendingPathComponent("expected.safetensors"))
    let weights = try DecoderWeights(from: g.source, shape: g.shape, backend: be, trainable: .none)
    let lora = try PEFTAdapterFiles.load(dir, into: weights)
    XCTAssertEqual(lora.config.resolvedTargetParameters, ["gate_up_proj", "down_proj"])
    XCTAssertEqual(lora.expertAdapters.count, g.shape.moe?.sparseLayerCount)
    let model = try DecoderModel(weights: weights)
    let what = "\(name) on \(be.name)"
    let batch = 2, mask = try expected.floats("mask")

    try model.forward(ids: g.ids, batch: batch)
    compare("\(what) logits", try expected.floats("logits"), try be.floats(try XCTUnwrap(model.logits)), Self.logitsTolerance)
    try model.forward(ids: g.ids, targets: g.targets, batch: batch, computeGradients: true, tokenMask: mask)
    let loss = try expected.floats("loss")[0]
    XCTAssertEqual(try model.loss(), loss, accuracy: loss * Self.lossRelativeTolerance, "\(what) loss")
    try model.backward()
    var seen = 0
    for t in lora.trainableTensors {
      let values = try be.floats(t.gradient)
      let peft = lora.peftLayout(t.name, values)?.values ?? values
      compare("\(what) grad \(t.name)", try expected.floats("grad." + t.name), peft, Self.gradientTolerance)
      seen += 1
    }
    XCTAssertEqual(seen, try SafetensorsFile(contentsOf: dir.appendingPathComponent("adapter_model.safetensors")).tensorNames.count)

    // Saving writes PEFT's tensors back exactly (the expert B columns interleaved again).
    let out = FileManager.default.temporaryDirectory.appendingPathComponent("vkf-moe-lora-\(UUID())")
    defer { try? FileManager.default.removeItem(at: out) }
    try PEFTAdapterFiles.save(lora, baseModel: name, to: out)
    let original = try SafetensorsFile(contentsOf: dir.appendingPathComponent("adapter_model.safetensors"))
    let saved = try SafetensorsFile(contentsOf: out.appendingPathComponent("adapter_model.safetensors"))
    XCTAssertEqual(Set(saved.tensorNames), Set(original.tensorNames))
    for key in original.tensorNames {
      XCTAssertEqual(try saved.shape(of: key), try original.shape(of: key), key)
      XCTAssertEqual(try saved.floats(key), try original.floats(key), "\(what): saved \(key)")
    }
    let config = try XCTUnwrap(try JSONSerialization.jsonObject(
      with: Data(contentsOf: out.appendingPathComponent("adapter_config.json"))) as? [String: Any])
    XCTAssertEqual(config["target_parameters"] as? [String], ["mlp.experts.down_proj", "mlp.experts.gate_up_proj"])

    // Merging: each expert's weight moves by PEFT's delta, and the model gives the merged logits.
    try Merge.merge(lora)
    XCTAssertTrue(lora.expertAdapters.isEmpty || weights.layers.allSatisfy { $0.experts?.adapter == nil })
    guard let moe = g.shape.moe else { return XCTFail("\(name) has no experts") }
    for i in 0..<g.shape.layers where g.shape.isSparse(layer: i) {
      for e in 0..<moe.experts {
        let names = moe.expertNames(i, e)
        for (kind, tensor) in [("gate", names.gate), ("up", names.up), ("down", names.down)] {
          let merged = try be.floats(try XCTUnwrap(weights.parameters[tensor], tensor))
          let delta = zip(merged, try g.source.floats(tensor)).map { $0 - $1 }
          let peft = try expected.floats("delta.\(i).\(kind).\(e)")
          XCTAssertLessThanOrEqual(Compare.maxAbs(peft, delta), Self.deltaMaxAbs, "\(what) delta \(tensor)")
        }
      }
    }
    try model.forward(ids: g.ids, batch: batch)
    compare("\(what) merged logits", try expected.floats("merged_logits"), try be.floats(try XCTUnwrap(model.logits)),
            Self.logitsTolerance)
  }
}
