// The model every TRL / PEFT golden of this target runs: tools/make_fixtures.py's
// llama_untied with a PEFT LoRA (r 4, alpha 8, the seven projections) at a fixture's
// initial adapter.
import Foundation
import VKFCore
import VKFModel
import VKFPEFT

enum GoldenLoRAModel {
  static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("VKFModelTests/Fixtures/golden")

  static let shape = TransformerShape(hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 96, vocab: 97,
                                      rmsNormEps: 1e-6, ropeTheta: 10000, tiedEmbeddings: false, qkvBias: false)

  /// The frozen base on `backend`; `headScale` multiplies its (untied) LM head.
  static func base(on backend: Backend, headScale: Float = 1) throws -> DecoderModel {
    let source = try SafetensorsFile(contentsOf: directory.appendingPathComponent("llama_untied.weights.safetensors"))
    let model = try DecoderModel(weights: try DecoderWeights(from: source, shape: shape, backend: backend, trainable: .none))
    if headScale != 1, case .dense(let w) = model.weights.lmHead.base { try backend.scale(w, by: headScale, into: w) }
    return model
  }

  /// `model`'s LoRA set to the fixture's `init.<PEFT key>` tensors.
  static func lora(_ model: DecoderModel, _ file: SafetensorsFile) throws -> LoRAModel {
    let lora = try LoRAModel(weights: model.weights, config: LoRAConfig(r: 4, alpha: 8), seed: 1)
    try lora.load(try initial(lora, file))
    return lora
  }

  /// The fixture's initial adapter, by our tensor names.
  static func initial(_ lora: LoRAModel, _ file: SafetensorsFile) throws -> [String: [Float]] {
    var out: [String: [Float]] = [:]
    for t in lora.trainableTensors { out[t.name] = try file.floats("init." + t.name) }
    return out
  }

  /// The base and its LoRA at once.
  static func load(on backend: Backend, _ file: SafetensorsFile, headScale: Float = 1) throws -> (DecoderModel, LoRAModel) {
    let model = try base(on: backend, headScale: headScale)
    return (model, try lora(model, file))
  }
}
