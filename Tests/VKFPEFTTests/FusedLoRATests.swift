import XCTest
import VKFCore
import VKFModel
import VKFTestSupport
@testable import VKFPEFT

/// LoRA on Phi-3's fused projections (qkv_proj, gate_up_proj) as PEFT has it: one A per
/// fused linear shared by its parts, one B whose row blocks are the parts'. Checked against
/// the chain rule through the merged weight W' = W + s·B·A: with G = dL/dW' (full
/// fine-tuning of the merged model), dL/dB = s·G·Aᵀ and dL/dA = s·Bᵀ·G for every module —
/// which only holds when the parts really share A and the fused B lines up with the rows.
final class FusedLoRATests: XCTestCase {
  /// LoRA vs merged model: the same f32 math grouped differently (x·Aᵀ then ·Bᵀ vs x·W'ᵀ)
  /// through 2 layers; the model goldens' gradient bound applies with its headroom.
  static let nmse = 1e-10
  static let maxAbs = 1e-5

  /// 2 layers, GQA, hidden 64 (fused parts are 64-aligned views), untied head.
  static let shape: TransformerShape = {
    var s = TransformerShape(hidden: 64, layers: 2, heads: 4, kvHeads: 2, headDim: 16, intermediate: 96, vocab: 19,
                             rmsNormEps: 1e-5, ropeTheta: 10000, tiedEmbeddings: false, qkvBias: false)
    s.fusedProjections = true
    return s
  }()

  private func weights(_ trainable: TrainableParameters) throws -> DecoderWeights {
    try DecoderWeights(from: LoRATestWeights(shape: Self.shape, seed: 5), shape: Self.shape,
                     backend: TestBackends.cpu, trainable: trainable)
  }

  func test_fusedLoRA_gradientsAreTheMergedWeightsChainRule() throws {
    let be = TestBackends.cpu
    let config = LoRAConfig(r: 4, alpha: 8, targetModules: ["all-linear"])
    let w1 = try weights(.none)
    let lora = try LoRAModel(weights: w1, config: config, seed: 3)
    // PEFT's keys and shapes: one A and one stacked B per fused module.
    let shapes = Dictionary(uniqueKeysWithValues: lora.trainableTensors.map { ($0.name, $0.value.shape) })
    let key = { (m: String, part: String) in LoRAModel.peftKey(module: "model.layers.0." + m, part) }
    XCTAssertEqual(shapes[key("self_attn.qkv_proj", LoRAModel.loraAKey)], [4, 64])
    XCTAssertEqual(shapes[key("self_attn.qkv_proj", LoRAModel.loraBKey)], [64 + 2 * 32, 4])
    XCTAssertEqual(shapes[key("mlp.gate_up_proj", LoRAModel.loraBKey)], [2 * 96, 4])
    XCTAssertNil(shapes[key("self_attn.q_proj", LoRAModel.loraAKey)])
    XCTAssertEqual(shapes.count, 2 * 2 * 4, "2 layers × (qkv, o, gate_up, down) × (A, B)")
    XCTAssertEqual(lora.adapters.count, 2 * 7, "the model still runs the seven projections")
    XCTAssertEqual(config.peftTargetModules(fusedProjections: true), ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"])
    let values = LoRATiny.randomAdapterValues(lora, seed: 9)
    try lora.load(values)
    let loraLoss = try LoRATiny.step(try DecoderModel(weights: w1))
    let loraGrads = try LoRATiny.gradients(lora)

    // The merged model, every weight trained: G = dL/dW' by HF (fused) name.
    let w2 = try weights(.all)
    let merging = try LoRAModel(weights: w2, config: config, seed: 3)
    try merging.load(values)
    try Merge.merge(merging)
    let mergedLoss = try LoRATiny.step(try DecoderModel(weights: w2))
    XCTAssertEqual(loraLoss, mergedLoss, accuracy: 1e-5 * abs(mergedLoss))

    let s = config.scaling, r = config.r
    for group in lora.parameterGroups {
      let g = try be.floats(try XCTUnwrap(w2.gradients[group.module + ".weight"]))
      let a = try be.floats(group.a), b = try be.floats(group.b)
      let (outF, inF) = (group.b.shape[0], group.a.shape[1])
      // dB (out, r) = s·G (out, in)·Aᵀ; dA (r, in) = s·Bᵀ (r, out)·G
      var dB = [Float](repeating: 0, count: outF * r), dA = [Float](repeating: 0, count: r * inF)
      for o in 0..<outF {
        for k in 0..<r {
          var t = 0.0
          for i in 0..<inF { t += Double(g[o * inF + i]) * Double(a[k * inF + i]) }
          dB[o * r + k] = Float(Double(s) * t)
        }
      }
      for k in 0..<r {
        for i in 0..<inF {
          var t = 0.0
          for o in 0..<outF { t += Double(b[o * r + k]) * Double(g[o * inF + i]) }
          dA[k * inF + i] = Float(Double(s) * t)
        }
      }
      for (part, expected) in [(LoRAModel.loraBKey, dB), (LoRAModel.loraAKey, dA)] {
        let name = LoRAModel.peftKey(module: group.module, part)
        if let why = Compare.check(expected, try XCTUnwrap(loraGrads[name]), nmse: Self.nmse, maxAbs: Self.maxAbs) {
          XCTFail("\(name): \(why)")
        }
      }
    }
  }

  /// Targets name whole fused projections on Phi-3, and fused names only there.
  func test_targets_partOfAFusedProjection_orAFusedNameElsewhere_areRefused() throws {
    XCTAssertThrowsError(try LoRAModel(weights: try weights(.none), config: LoRAConfig(targetModules: ["q_proj"]), seed: 1)) {
      XCTAssertTrue("\($0)".contains("target qkv_proj"), "\($0)")
    }
    XCTAssertNoThrow(try LoRAModel(weights: try weights(.none), config: LoRAConfig(targetModules: ["qkv_proj"]), seed: 1))
    XCTAssertEqual(LoRAConfig(targetModules: ["gate_up_proj"]).resolvedTargetModules, ["gate_proj", "up_proj"])
    XCTAssertThrowsError(try LoRAConfig(targetModules: ["qkv_proj"]).checkTargets(fusedProjections: false))
  }

  /// QLoRA on fused projections: quantising each part after loading equals quantising the
  /// parts as they are read (the model's logits are identical), and the dense fused tensor
  /// is released with its last part.
  func test_qlora_fusedParts_quantiseAtLoadOrAfter_alike_andReleaseTheFusedTensor() throws {
    let after = try weights(.none)
    _ = try QLoRA.quantize(after)
    XCTAssertNil(after.parameters["model.layers.0.self_attn.qkv_proj.weight"])
    XCTAssertNil(after.parameters["model.layers.1.mlp.gate_up_proj.weight"])
    var report = QuantizationReport()
    let atLoad = try QLoRA.load(from: LoRATestWeights(shape: Self.shape, seed: 5), shape: Self.shape,
                                backend: TestBackends.cpu, report: &report)
    XCTAssertEqual(report.projections, 2 * 7)
    XCTAssertEqual(try LoRATiny.logits(try DecoderModel(weights: atLoad)), try LoRATiny.logits(try DecoderModel(weights: after)))
  }
}
