import Foundation
import XCTest
import VKFCore
import VKFModel
import VKFTestSupport
@testable import VKFPEFT

/// Hugging Face model directories: written weights and config read back through
/// `SafetensorsCheckpoint` + `DecoderConfig` + `DecoderWeights` bit for bit.
final class HFModelWriterTests: XCTestCase {
  private var dir: PEFTTestDirectory!
  override func setUpWithError() throws { dir = try PEFTTestDirectory() }
  override func tearDown() { dir = nil }
  private let cpu: Backend = TestBackends.cpu

  /// Reads `out` back as a model and checks every parameter against `weights` bitwise.
  private func assertRoundTrips(_ out: URL, _ weights: DecoderWeights, file: StaticString = #filePath,
                                line: UInt = #line) throws {
    let config = try DecoderConfig.load(from: out)
    let shape = try TransformerShape(config: config)
    XCTAssertNil(shape.firstDifference(from: weights.shape), "config.json describes the model", file: file, line: line)
    let back = try DecoderWeights(from: try SafetensorsCheckpoint.open(directory: out), shape: shape, backend: cpu)
    XCTAssertEqual(Set(back.parameters.keys), Set(weights.parameters.keys), file: file, line: line)
    for (name, t) in weights.parameters {
      XCTAssertEqual(try cpu.floats(try XCTUnwrap(back.parameters[name])).map(\.bitPattern),
                     try weights.backend.floats(t).map(\.bitPattern), "\(name) bitwise", file: file, line: line)
    }
  }

  private func configJSON(_ out: URL) throws -> [String: Any] {
    try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("config.json")))
                  as? [String: Any])
  }

  func test_write_untiedAndTied_roundTripBitwise_tiedOmitsLMHead() throws {
    for tied in [false, true] {
      let weights = try PEFTFixture.base(on: cpu, tied: tied)
      var config = try DecoderConfig.load(from: PEFTFixture.baseDirectory)
      config.tieWordEmbeddings = tied
      let out = dir.path(tied ? "tied" : "untied")
      let written = try HFModelWriter.write(weights: weights, config: config, tokenizerSource: nil, to: out)
      XCTAssertEqual(written.weightFiles, ["model.safetensors"])
      try assertRoundTrips(out, weights)
      let file = try SafetensorsFile(contentsOf: out.appendingPathComponent("model.safetensors"))
      XCTAssertEqual(file.tensorNames.contains("lm_head.weight"), !tied, "lm_head present only when untied")
      XCTAssertEqual(file.metadata, ["format": "pt"])
      let json = try configJSON(out)
      XCTAssertEqual(json["architectures"] as? [String], ["LlamaForCausalLM"])
      XCTAssertEqual(json["torch_dtype"] as? String, "float32")
      XCTAssertEqual(json["model_type"] as? String, "llama")
      XCTAssertEqual(json["tie_word_embeddings"] as? Bool, tied)
    }
  }

  func test_write_sharded_matchesTransformersNamesAndIndex() throws {
    let weights = try PEFTFixture.base(on: cpu)
    let out = dir.path("sharded")
    // The embedding and LM head are 61·32·4 = 7808 bytes each; 20000 bytes gives several shards.
    let written = try HFModelWriter.write(weights: weights, config: try DecoderConfig.load(from: PEFTFixture.baseDirectory),
                                          tokenizerSource: nil, to: out, shardBytes: 20_000)
    XCTAssertGreaterThan(written.weightFiles.count, 1)
    let n = written.weightFiles.count
    XCTAssertEqual(written.weightFiles, (1...n).map { String(format: "model-%05d-of-%05d.safetensors", $0, n) })
    XCTAssertFalse(FileManager.default.fileExists(atPath: out.appendingPathComponent("model.safetensors").path))
    let index = try XCTUnwrap(try JSONSerialization.jsonObject(
      with: Data(contentsOf: out.appendingPathComponent("model.safetensors.index.json"))) as? [String: Any])
    let map = try XCTUnwrap(index["weight_map"] as? [String: String])
    XCTAssertEqual(Set(map.keys), Set(weights.parameters.keys))
    let meta = try XCTUnwrap(index["metadata"] as? [String: Any])
    let count = weights.parameters.values.reduce(0) { $0 + $1.count }
    XCTAssertEqual(meta["total_size"] as? Int, count * 4)
    XCTAssertEqual(meta["total_parameters"] as? Int, count)
    for f in written.weightFiles {
      let size = try SafetensorsFile(contentsOf: out.appendingPathComponent(f)).tensorNames
        .reduce(0) { $0 + (try weights.parameters[$1]?.count ?? 0) * 4 }
      XCTAssertLessThanOrEqual(size, 20_000, "\(f) within the shard size")
    }
    try assertRoundTrips(out, weights)
  }

  func test_write_copiesTokenizerFiles_refusesExistingDirectory() throws {
    let source = dir.path("source")
    try FileManager.default.createDirectory(at: source, withIntermediateDirectories: false)
    let files = ["tokenizer.json": "{\"t\": 1}", "tokenizer_config.json": "{}", "chat_template.jinja": "{{ x }}",
                 "generation_config.json": "{\"eos_token_id\": 2}"]
    for (name, text) in files { try Data(text.utf8).write(to: source.appendingPathComponent(name)) }
    try Data("ignored".utf8).write(to: source.appendingPathComponent("notes.txt"))
    let weights = try PEFTFixture.base(on: cpu)
    let out = dir.path("model")
    // A file inside the source directory (as a .gguf path would be) names the directory.
    let written = try HFModelWriter.write(weights: weights, config: nil,
                                          tokenizerSource: source.appendingPathComponent("model.gguf"), to: out)
    XCTAssertEqual(Set(written.copiedFiles), Set(files.keys))
    for (name, text) in files {
      XCTAssertEqual(try String(contentsOf: out.appendingPathComponent(name), encoding: .utf8), text, name)
    }
    XCTAssertFalse(FileManager.default.fileExists(atPath: out.appendingPathComponent("notes.txt").path))
    XCTAssertThrowsError(try HFModelWriter.write(weights: weights, config: nil, tokenizerSource: nil, to: out)) {
      XCTAssertTrue("\($0)".contains("already exists"), "\($0)")
    }
    try HFModelWriter.write(weights: weights, config: nil, tokenizerSource: nil, to: out, overwrite: true)
    XCTAssertFalse(FileManager.default.fileExists(atPath: out.appendingPathComponent("tokenizer.json").path),
                   "overwrite replaces the whole directory")
    XCTAssertEqual(try dir.contents(), ["model", "source"], "no temporary directory left")
  }

  func test_synthesizedConfig_fromShapeAlone_roundTripsAndRecoversTheta() throws {
    let weights = try PEFTFixture.base(on: cpu)
    let out = dir.path("synth")
    let written = try HFModelWriter.write(weights: weights, config: nil, tokenizerSource: nil, to: out,
                                          bosTokenID: 1, eosTokenIDs: [2])
    XCTAssertEqual(written.config.ropeTheta, 10000, "θ recovered exactly from the f32 RoPE table")
    XCTAssertEqual(written.config.bosTokenId, 1)
    XCTAssertEqual(written.config.eosTokenIds, [2])
    try assertRoundTrips(out, weights)
  }

  /// Per-head q/k RMSNorm (a Qwen3 GGUF alone) is described as qwen3, and the config it
  /// writes gives back the same shape; with q/k/v biases too no config type fits.
  func test_synthesizedConfig_qkNorm_isQwen3() throws {
    var shape = try PEFTFixture.shape()
    shape.qkNorm = true
    let config = try HFModelWriter.synthesizedConfig(shape: shape, facts: nil, bosTokenID: nil, eosTokenIDs: [])
    XCTAssertEqual(config.modelType, "qwen3")
    XCTAssertTrue(config.hasQKNorm)
    XCTAssertNil(try TransformerShape(config: config).firstDifference(from: shape))
    shape.qkvBias = true
    XCTAssertThrowsError(try HFModelWriter.synthesizedConfig(shape: shape, facts: nil, bosTokenID: nil, eosTokenIDs: []))
  }

  /// Experts (a Mixtral, Qwen2-MoE or Qwen3-MoE GGUF alone) are mixtral, qwen2_moe with a shared
  /// expert and q/k/v biases, or qwen3_moe with q/k norms, with
  /// the routing keys each spells; each config gives back the same shape. Dense layers beside
  /// sparse ones (which no GGUF key describes) are refused.
  func test_synthesizedConfig_experts_isMixtralOrQwen3MoE() throws {
    var shape = try PEFTFixture.shape()
    shape.moe = MoEShape(style: .mixtral, experts: 4, topK: 2, intermediate: shape.intermediate, normalizeTopK: true,
                         sparseLayers: Array(repeating: true, count: shape.layers))
    let mixtral = try HFModelWriter.synthesizedConfig(shape: shape, facts: nil, bosTokenID: nil, eosTokenIDs: [])
    XCTAssertEqual(mixtral.modelType, "mixtral")
    XCTAssertNil(try TransformerShape(config: mixtral).firstDifference(from: shape))
    shape.qkNorm = true
    shape.moe?.style = .qwen3; shape.moe?.intermediate = 24; shape.moe?.normalizeTopK = false
    let qwen = try HFModelWriter.synthesizedConfig(shape: shape, facts: nil, bosTokenID: nil, eosTokenIDs: [])
    XCTAssertEqual(qwen.modelType, "qwen3_moe")
    XCTAssertEqual(qwen.moe?.expertIntermediateSize, 24)
    XCTAssertNil(try TransformerShape(config: qwen).firstDifference(from: shape))
    // A shared expert with q/k/v biases (a qwen2moe GGUF alone) is qwen2_moe.
    var qwen2 = shape
    qwen2.qkNorm = false; qwen2.qkvBias = true
    qwen2.moe?.style = .qwen2; qwen2.moe?.sharedIntermediate = 40
    let q2 = try HFModelWriter.synthesizedConfig(shape: qwen2, facts: nil, bosTokenID: nil, eosTokenIDs: [])
    XCTAssertEqual(q2.modelType, "qwen2_moe")
    XCTAssertEqual(q2.moe?.sharedExpertIntermediateSize, 40)
    XCTAssertNil(try TransformerShape(config: q2).firstDifference(from: qwen2))
    shape.moe?.sparseLayers[0] = false
    XCTAssertThrowsError(try HFModelWriter.synthesizedConfig(shape: shape, facts: nil, bosTokenID: nil, eosTokenIDs: []))
  }

  /// Sandwich norms (a Gemma 2/3 GGUF alone) are gemma2, or gemma3_text with q/k norms: the
  /// windows as layer_types, the scale as query_pre_attn_scalar, the caps (null when off)
  /// and Gemma 3's local RoPE base; each config gives back the same shape.
  func test_synthesizedConfig_sandwichNorms_isGemma2OrGemma3() throws {
    var shape = try PEFTFixture.shape()
    shape.activation = .geluTanh
    shape.normWeightOffset = 1
    shape.embeddingScale = Float(Double(shape.hidden).squareRoot())
    shape.sandwichNorms = true
    shape.attentionScaleOverride = 1 / 12  // query_pre_attn_scalar 144 (Gemma 2 27B's)
    shape.attentionSoftcap = 50
    shape.finalLogitSoftcap = 30
    shape.slidingWindows = (0..<shape.layers).map { $0 % 2 == 0 ? 7 : 0 }
    let gemma2 = try HFModelWriter.synthesizedConfig(shape: shape, facts: nil, bosTokenID: nil, eosTokenIDs: [])
    XCTAssertEqual(gemma2.modelType, "gemma2")
    XCTAssertEqual(gemma2.queryPreAttnScalar, 144)
    XCTAssertEqual(gemma2.slidingWindow, 7)
    XCTAssertEqual(gemma2.attnLogitSoftcapping, 50)
    let back = try TransformerShape(config: gemma2)
    XCTAssertNil(back.firstDifference(from: shape))
    XCTAssertEqual(back.slidingWindows, shape.slidingWindows)
    XCTAssertEqual(back.attentionScale, shape.attentionScale)
    shape.qkNorm = true
    shape.attentionSoftcap = 0
    shape.localInvFreq = RoPE.inverseFrequencies(headDim: shape.headDim, theta: 10_000)
    let gemma3 = try HFModelWriter.synthesizedConfig(shape: shape, facts: nil, bosTokenID: nil, eosTokenIDs: [])
    XCTAssertEqual(gemma3.modelType, "gemma3_text")
    XCTAssertNil(gemma3.attnLogitSoftcapping)
    XCTAssertEqual(gemma3.localRopeTheta, 10_000)
    XCTAssertNil(try TransformerShape(config: gemma3).firstDifference(from: shape))
    shape.activation = .silu
    XCTAssertThrowsError(try HFModelWriter.synthesizedConfig(shape: shape, facts: nil, bosTokenID: nil, eosTokenIDs: []))
  }

  /// Fused projections (a Phi-3 GGUF alone) are phi3, its window spelled out.
  func test_synthesizedConfig_fusedProjections_isPhi3() throws {
    var shape = try PEFTFixture.shape()
    shape.fusedProjections = true
    shape.slidingWindows = Array(repeating: 5, count: shape.layers)
    let config = try HFModelWriter.synthesizedConfig(shape: shape, facts: nil, bosTokenID: nil, eosTokenIDs: [])
    XCTAssertEqual(config.modelType, "phi3")
    XCTAssertEqual(try config.layerWindows(), shape.slidingWindows)
    XCTAssertNil(try TransformerShape(config: config).firstDifference(from: shape))
  }

  /// Every model type the loader accepts can be written back (causal LM and reward model).
  func test_everySupportedModelType_hasTransformersClasses() {
    for type in DecoderConfig.supportedModelTypes {
      XCTAssertNotNil(HFModelWriter.architectureNames[type], type)
      XCTAssertNotNil(HFModelWriter.sequenceClassificationNames[type], type)
    }
  }

  /// GeGLU + (1 + w) norms + √hidden embedding scale (a Gemma GGUF alone) is gemma; one of
  /// them alone is no config type.
  func test_synthesizedConfig_gemmaFeatures_isGemma() throws {
    var shape = try PEFTFixture.shape()
    shape.activation = .geluTanh
    shape.normWeightOffset = 1
    shape.embeddingScale = Float(Double(shape.hidden).squareRoot())
    let config = try HFModelWriter.synthesizedConfig(shape: shape, facts: nil, bosTokenID: nil, eosTokenIDs: [])
    XCTAssertEqual(config.modelType, "gemma")
    XCTAssertNil(try TransformerShape(config: config).firstDifference(from: shape))
    shape.embeddingScale = 1
    XCTAssertThrowsError(try HFModelWriter.synthesizedConfig(shape: shape, facts: nil, bosTokenID: nil, eosTokenIDs: []))
  }

  func test_synthesizedConfig_linearScaledRoPE_writesFactor_llama3TableRefused() throws {
    var shape = try PEFTFixture.shape()
    shape.invFreq = RoPE.inverseFrequencies(headDim: shape.headDim, theta: 500_000).map { $0 / 4 }
    let linear = try HFModelWriter.synthesizedConfig(shape: shape, facts: nil, bosTokenID: nil, eosTokenIDs: [])
    XCTAssertEqual(linear.ropeTheta, 500_000)
    XCTAssertEqual(linear.ropeScaling?.kind, .linear)
    XCTAssertEqual(linear.ropeScaling?.factor, 4)
    XCTAssertNil(try TransformerShape(config: linear).firstDifference(from: shape))

    var bent = shape
    bent.invFreq[bent.invFreq.count - 2] *= 0.5  // one band rescaled, as llama3 / rope_freqs do
    XCTAssertThrowsError(try HFModelWriter.synthesizedConfig(shape: bent, facts: nil, bosTokenID: nil, eosTokenIDs: [])) {
      XCTAssertTrue("\($0)".contains("config.json beside the .gguf"), "\($0)")
    }
  }

  func test_synthesizedConfig_fromSharedGGUFMetadata_matchesItsConfigJSON() throws {
    let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .appendingPathComponent("../../../shared/models/smollm2-135m-instruct").standardized
    let gguf = path.appendingPathComponent("model.Q4_1.gguf")
    guard FileManager.default.fileExists(atPath: gguf.path) else {
      throw XCTSkip("shared SmolLM2 model absent at \(path.path); GGUF config synthesis not checked")
    }
    let source = try GGUFWeightSource(path: gguf.path)
    let facts = try GGUFModelFacts(file: source.file)
    let shape = try TransformerShape(gguf: facts, weights: source)
    let synthesized = try HFModelWriter.synthesizedConfig(shape: shape, facts: facts, bosTokenID: 1, eosTokenIDs: [2])
    let real = try DecoderConfig.load(from: path)
    XCTAssertEqual(synthesized.modelType, real.modelType)
    XCTAssertEqual(synthesized.hiddenSize, real.hiddenSize)
    XCTAssertEqual(synthesized.numKeyValueHeads, real.numKeyValueHeads)
    XCTAssertEqual(synthesized.ropeTheta, real.ropeTheta)
    XCTAssertEqual(synthesized.maxPositionEmbeddings, real.maxPositionEmbeddings)
    XCTAssertEqual(synthesized.tieWordEmbeddings, real.tieWordEmbeddings)
    XCTAssertEqual(synthesized.rmsNormEps, real.rmsNormEps, accuracy: real.rmsNormEps * 1e-6)
    XCTAssertNil(try TransformerShape(config: synthesized).firstDifference(from: shape))
  }

  func test_write_refusesUnmergedAdapterAndNF4Base() throws {
    let weights = try PEFTFixture.base(on: cpu)
    let lora = try LoRAModel(weights: weights, config: LoRAConfig(r: 2, targetModules: ["k_proj"]), seed: 1)
    XCTAssertThrowsError(try HFModelWriter.write(weights: weights, config: nil, tokenizerSource: nil,
                                                 to: dir.path("a"))) {
      XCTAssertTrue("\($0)".contains("model.layers.0.self_attn.k_proj still has an adapter"), "\($0)")
    }
    lora.detach()
    try weights.updateProjections { name, linear in
      guard name == "model.layers.0.mlp.up_proj", let w = linear.denseWeight else { return }
      linear.base = .nf4(try NF4Weight.quantizing(try cpu.floats(w), rows: linear.outFeatures,
                                                  cols: linear.inFeatures, on: cpu))
    }
    XCTAssertThrowsError(try HFModelWriter.write(weights: weights, config: nil, tokenizerSource: nil,
                                                 to: dir.path("b"))) {
      XCTAssertTrue("\($0)".contains("up_proj has an NF4"), "\($0)")
    }
    XCTAssertEqual(try dir.contents(), [], "nothing written by a refused write")
  }

  func test_write_configOfAnotherModel_refused() throws {
    let weights = try PEFTFixture.base(on: cpu)
    var config = try DecoderConfig.load(from: PEFTFixture.baseDirectory)
    config.intermediateSize += 2
    XCTAssertThrowsError(try HFModelWriter.write(weights: weights, config: config, tokenizerSource: nil,
                                                 to: dir.path("x"))) {
      XCTAssertTrue("\($0)".contains("intermediate"), "\($0)")
    }
  }
}
