import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFTestSupport
@testable import VKFPEFT

/// QLoRA on the mixture-of-experts goldens (VKFModelTests' mixtral / qwen3_moe fixtures): every
/// frozen expert stack is one NF4 weight (double-quantised scales), read by the grouped NF4
/// matmul; the model equals the f32 model holding the dequantised values, with LoRA on the
/// attention trained the same.
final class MoEQLoRATests: XCTestCase {
  /// NF4 model vs f32 model of the dequantised weights: the same products, the CPU's summed per
  /// panel / the shader's per tile in another order: ~1e-6 relative through two layers
  /// (MixedPrecisionTests' bound).
  static let sameValues = PEFTTolerance(nmse: 1e-10, maxAbs: 1e-5)

  static func golden(_ name: String) throws -> (source: SafetensorsFile, shape: TransformerShape, ids: [Int32], targets: [Int32]) {
    let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../VKFModelTests/Fixtures/golden")
    let config = dir.appendingPathComponent("\(name).config.json")
    let expected = try SafetensorsFile(contentsOf: dir.appendingPathComponent("\(name).expected.safetensors"))
    return (try SafetensorsFile(contentsOf: dir.appendingPathComponent("\(name).weights.safetensors")),
            try TransformerShape(config: try DecoderConfig.load(from: config), file: config.path),
            try expected.floats("ids").map { Int32($0) }, try expected.floats("targets").map { Int32($0) })
  }

  /// A weight source: `base` with the named tensors replaced.
  private final class Replaced: WeightSource {
    let base: WeightSource, values: [String: [Float]]
    init(_ base: WeightSource, _ values: [String: [Float]]) { self.base = base; self.values = values }
    var tensorNames: [String] { base.tensorNames }
    func shape(of name: String) throws -> [Int] { try base.shape(of: name) }
    func storedType(of name: String) throws -> String { try base.storedType(of: name) }
    func floats(_ name: String) throws -> [Float] { try values[name] ?? base.floats(name) }
  }

  /// Every NF4 weight of `w` dequantised, by the Hugging Face names of its parts.
  private func dequantised(_ w: DecoderWeights, _ be: Backend) throws -> [String: [Float]] {
    var out: [String: [Float]] = [:]
    func values(_ q: NF4Weight) throws -> [Float] {
      let t = try be.allocate([q.rows, q.cols]); try be.dequantizeNF4(q, into: t); return try be.floats(t)
    }
    try w.updateProjections { module, linear in
      if case .nf4(let q) = linear.base { out[module + ".weight"] = try values(q) }
    }
    guard let m = w.shape.moe else { return out }
    for (i, layer) in w.layers.enumerated() {
      guard let ex = layer.experts else { continue }
      for (kind, weight) in [(0, ex.gate), (1, ex.up), (2, ex.down)] {
        guard case .nf4(let q) = weight else { XCTFail("layer \(i) experts not NF4"); continue }
        let all = try values(q), per = all.count / m.experts
        for e in 0..<m.experts {
          let n = m.expertNames(i, e)
          out[[n.gate, n.up, n.down][kind]] = Array(all[(e * per)..<((e + 1) * per)])
        }
      }
    }
    return out
  }

  private func check(on be: Backend) throws {
    for name in ["mixtral", "qwen3_moe"] {
      let g = try Self.golden(name)
      var report = QuantizationReport()
      let q = try QLoRA.load(from: g.source, shape: g.shape, backend: be, report: &report)
      let layers = g.shape.moe?.sparseLayerCount ?? 0
      XCTAssertEqual(report.projections, 4 * g.shape.layers + 3 * layers + (name == "qwen3_moe" ? 3 : 0),
                     "\(name): attention, a stack per expert kind, the dense layer's MLP")
      let f = try DecoderWeights(from: Replaced(g.source, try dequantised(q, be)), shape: g.shape, backend: be)
      let config = LoRAConfig(r: 4, alpha: 8, targetModules: ["q_proj", "k_proj", "v_proj", "o_proj"])
      var results: [[[Float]]] = []
      for w in [q, f] {
        let lora = try LoRAModel(weights: w, config: config, seed: 3)
        try lora.load(LoRATiny.randomAdapterValues(lora, seed: 9))
        let model = try DecoderModel(weights: w)
        try model.forward(ids: g.ids, targets: g.targets, batch: 2, computeGradients: true)
        let losses = try model.tokenLosses()
        try model.backward()
        results.append([losses] + (try lora.trainableTensors.map { try be.floats($0.gradient) }))
      }
      for (i, (a, b)) in zip(results[0], results[1]).enumerated() {
        if let why = Compare.check(b, a, nmse: Self.sameValues.nmse, maxAbs: Self.sameValues.maxAbs) {
          XCTFail("\(name) on \(be.name), output \(i): \(why)")
        }
      }
    }
  }

  /// Adapters on a mixture-of-experts model's MLP names are refused with what to target (PEFT
  /// adapts experts through target_parameters) — also when loading an adapter written with them.
  func test_mlpTargets_onExperts_refusedWithWhatToTarget() throws {
    let g = try Self.golden("mixtral")
    let w = try DecoderWeights(from: g.source, shape: g.shape, backend: TestBackends.cpu)
    XCTAssertThrowsError(try LoRAModel(weights: w, config: LoRAConfig(targetModules: ["q_proj", "up_proj"]), seed: 1)) {
      XCTAssertTrue("\($0)".contains("adapted through target_parameters (mlp.experts.gate_up_proj"), "\($0)")
    }
    XCTAssertEqual(try LoRAModel(weights: w, config: LoRAConfig(targetModules: ["all-linear"]), seed: 1).adapters.count,
                   4 * g.shape.layers, "all-linear means the attention on an experts model")
  }

  func test_nf4Experts_equalDequantisedF32_cpu() throws { try check(on: TestBackends.cpu) }
  func test_nf4Experts_equalDequantisedF32_vulkan() throws { try check(on: try LoRATiny.vulkanOrSkip()) }
}
