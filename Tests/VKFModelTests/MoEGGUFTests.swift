import Foundation
import XCTest
import VKFCore
@testable import VKFModel
import VKFTestSupport

/// Mixture-of-experts GGUF files as llama.cpp defines them (tools/make_moe_gguf_fixtures.py,
/// whose tensors are byte-identical to llama.cpp's own convert_hf_to_gguf.py output and which
/// llama.cpp itself loads and runs to the same logits):
/// - mixtral.{f32,q8_0}.gguf: architecture "llama" with `llama.expert_count` 4 and
///   `expert_used_count` 2, q/k rows permuted, experts stacked in `blk.N.ffn_*_exps`.
/// - qwen3moe.{f32,q8_0}.gguf: "qwen3moe", 4 experts of `expert_feed_forward_length` 32, top-3
///   renormalised, q/k norms.
/// - qwen2moe.{f32,q8_0}.gguf: "qwen2moe", 4 experts of 64, top-2 not renormalised, q/k/v
///   biases, a shared expert (`ffn_*_shexp`, `ffn_gate_inp_shexp`).
/// Each loads to the shape of the config.json transformers saved and to transformers' logits.
final class MoEGGUFTests: XCTestCase {
  /// Logits against transformers: the dense decoders' bound. The Q8_0 files are compared with
  /// transformers run on the dequantised weights (`logits_q8_0`), and this reader dequantises
  /// Q8_0 exactly as gguf-py does (GGUFSyntheticTests), so both sides hold the same f32 weights.
  static let logitsTolerance = ModelGoldenTests.logitsTolerance

  func test_mixtralGGUF_f32_loadsTheConfigShapeAndTheTransformersLogits() throws {
    let shape = try checkLoads("mixtral", "f32")
    XCTAssertEqual(shape.moe, MoEShape(style: .mixtral, experts: 4, topK: 2, intermediate: 32, normalizeTopK: true,
                                       sparseLayers: [true, true], auxLossCoefficient: 0,
                                       declaredAuxLossCoefficient: 0.001))
    XCTAssertEqual(shape.headDim, 16)
  }

  func test_mixtralGGUF_q8_0_matchesTheDequantisedTransformersLogits() throws {
    _ = try checkLoads("mixtral", "q8_0", logits: "logits_q8_0")
  }

  func test_qwen3MoEGGUF_f32_loadsTheConfigShapeAndTheTransformersLogits() throws {
    let shape = try checkLoads("qwen3moe", "f32")
    XCTAssertEqual(shape.moe, MoEShape(style: .qwen3, experts: 4, topK: 3, intermediate: 32, normalizeTopK: true,
                                       sparseLayers: [true, true], auxLossCoefficient: 0,
                                       declaredAuxLossCoefficient: 0.001))
    XCTAssertTrue(shape.qkNorm)
    XCTAssertEqual(shape.intermediate, 64, "feed_forward_length is the dense width")
  }

  func test_qwen3MoEGGUF_q8_0_matchesTheDequantisedTransformersLogits() throws {
    _ = try checkLoads("qwen3moe", "q8_0", logits: "logits_q8_0")
  }

  /// qwen2moe: 4 experts of 64, top-2 not renormalised (llama.cpp's qwen2moe), q/k/v biases, and a
  /// shared expert of `expert_shared_feed_forward_length` 96 with its f32 scalar gate.
  func test_qwen2MoEGGUF_f32_loadsTheConfigShapeAndTheTransformersLogits() throws {
    let shape = try checkLoads("qwen2moe", "f32")
    XCTAssertEqual(shape.moe, MoEShape(style: .qwen2, experts: 4, topK: 2, intermediate: 64, normalizeTopK: false,
                                       sparseLayers: [true, true], auxLossCoefficient: 0,
                                       declaredAuxLossCoefficient: 0.001, sharedIntermediate: 96))
    XCTAssertTrue(shape.qkvBias)
    let source = try GGUFWeightSource(path: Self.fixture("qwen2moe", "f32").path)
    XCTAssertEqual(try source.shape(of: "model.layers.1.mlp.shared_expert.down_proj.weight"), [32, 96])
    XCTAssertEqual(try source.shape(of: "model.layers.0.mlp.shared_expert_gate.weight"), [1, 32])
    XCTAssertTrue(source.unmappedTensorNames.isEmpty, "\(source.unmappedTensorNames)")
  }

  func test_qwen2MoEGGUF_q8_0_matchesTheDequantisedTransformersLogits() throws {
    _ = try checkLoads("qwen2moe", "q8_0", logits: "logits_q8_0")
  }

  /// Each expert's HF tensor is its block of rows of the stacked tensor, in either stored type,
  /// and `dequantizedRows` counts rows within the expert.
  func test_expertTensors_areRowBlocksOfTheStackedTensor() throws {
    for type in ["f32", "q8_0"] {
      let source = try GGUFWeightSource(path: Self.fixture("mixtral", type).path)
      let info = try XCTUnwrap(source.file.tensor(named: "blk.1.ffn_down_exps.weight"))
      XCTAssertEqual(info.dimensions, [32, 32, 4])
      let whole = try GGUFWeightSource.dequantize(info, in: source.file)
      for e in 0 ..< 4 {
        let name = "model.layers.1.block_sparse_moe.experts.\(e).w2.weight"
        XCTAssertEqual(try source.shape(of: name), [32, 32])
        XCTAssertEqual(try source.storedType(of: name), type.uppercased())
        XCTAssertEqual(try source.expertIndex(of: name), e)
        let block = Array(whole[e * 1024 ..< (e + 1) * 1024])
        XCTAssertEqual(try source.floats(name), block, "\(type) expert \(e)")
        XCTAssertEqual(try source.dequantizedRows(name, [31, 0]), Array(block[992...] + block[..<32]))
      }
      XCTAssertFalse(source.tensorNames.contains { $0.contains("_exps") })
      XCTAssertEqual(source.tensorNames.filter { $0.contains(".experts.") }.count, 2 * 3 * 4)
      XCTAssertTrue(source.unmappedTensorNames.isEmpty, "\(source.unmappedTensorNames)")
    }
  }

  /// The golden Mixtral (hidden 64, experts 48 wide, so gate/up and down differ in shape)
  /// written as llama.cpp's converter would — q/k permuted, experts stacked — loads back to
  /// the transformers golden's logits.
  func test_goldenMixtral_writtenAsLlamaCppDoes_matchesTheTransformersGolden() throws {
    let g = try GoldenCase.load("mixtral")
    let s = g.shape, m = try XCTUnwrap(s.moe)
    var writer = GGUFWriter(architecture: "llama")
    for (key, value) in [("block_count", s.layers), ("context_length", 64), ("embedding_length", s.hidden),
                         ("feed_forward_length", m.intermediate), ("attention.head_count", s.heads),
                         ("attention.head_count_kv", s.kvHeads), ("attention.key_length", s.headDim),
                         ("attention.value_length", s.headDim), ("expert_count", m.experts),
                         ("expert_used_count", m.topK), ("vocab_size", s.vocab), ("rope.dimension_count", s.headDim)] {
      writer.set("llama.\(key)", .uint32(UInt32(value)))
    }
    writer.set("llama.rope.freq_base", .float32(10_000))
    writer.set("llama.attention.layer_norm_rms_epsilon", .float32(s.rmsNormEps))
    let block = GGUFNameMap.blockMap(architecture: "llama")
    for hf in g.weights.tensorNames where !hf.contains(".experts.") {
      let stem = String(hf.dropLast(".weight".count))
      var name: String
      if let global = GGUFNameMap.global.first(where: { $0.value == stem }) {
        name = global.key
      } else {
        let layer = try XCTUnwrap(stem.split(separator: ".").dropFirst(2).first.flatMap { Int($0) })
        let gguf = try XCTUnwrap(block.first { stem == "model.layers.\(layer).\($0.value)" }, hf)
        name = "blk.\(layer).\(gguf.key)"
      }
      var values = try g.weights.floats(hf)
      let shape = try g.weights.shape(of: hf)
      if name.hasSuffix("attn_q") { values = Self.permuteRows(values, rows: shape[0], heads: s.heads) }
      if name.hasSuffix("attn_k") { values = Self.permuteRows(values, rows: shape[0], heads: s.kvHeads) }
      try writer.addTensor(name + ".weight", shape: shape, values: values)
    }
    for layer in 0 ..< s.layers {
      for projection in GGUFNameMap.ExpertProjection.allCases {
        let names = (0 ..< m.experts).map {
          GGUFNameMap.expertName(layer: layer, projection: projection, expert: $0, style: .mixtral)
        }
        let values = try names.flatMap { try g.weights.floats($0) }
        try writer.addTensor("blk.\(layer).\(projection.rawValue).weight",
                             shape: [m.experts] + (try g.weights.shape(of: names[0])), values: values)
      }
    }
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("vkf-mixtral-\(UUID()).gguf").path
    try writer.write(to: path)
    defer { try? FileManager.default.removeItem(atPath: path) }

    let source = try GGUFWeightSource(path: path)
    let shape = try TransformerShape(gguf: try GGUFModelFacts(file: source.file), weights: source)
    XCTAssertNil(shape.firstDifference(from: g.shape), "GGUF shape vs the golden config's")
    XCTAssertEqual(try source.shape(of: "model.layers.0.block_sparse_moe.experts.3.w2.weight"), [64, 48])
    XCTAssertEqual(try source.shape(of: "model.layers.0.block_sparse_moe.experts.3.w1.weight"), [48, 64])
    try compareLogits(source, shape, ids: try g.ids, expected: try g.expected.floats("logits"), label: "golden mixtral")
  }

  // MARK: - Through ModelLoader

  /// A bare GGUF builds shape and tokenizer from its metadata alone.
  func test_bareMoEGGUF_loadsThroughModelLoader() throws {
    for name in ["mixtral", "qwen3moe", "qwen2moe"] {
      let loaded = try ModelLoader.load(.gguf(Self.fixture(name, "q8_0")), useSiblingFiles: false)
      XCTAssertNotNil(loaded.shape.moe, name)
      XCTAssertEqual(loaded.tokenizer.vocabularySize, 97, name)
      XCTAssertNil(loaded.config)
    }
  }

  /// config.json beside the GGUF must describe the same experts; the config's norm_topk_prob,
  /// which no GGUF key carries, is taken from it.
  func test_siblingConfig_mustAgreeOnExperts_andSuppliesNormTopKProb() throws {
    let (gguf, config) = try Self.siblingPair("qwen3moe")
    defer { try? FileManager.default.removeItem(at: gguf.deletingLastPathComponent()) }
    let loaded = try ModelLoader.load(.gguf(gguf))
    XCTAssertNotNil(loaded.config)
    XCTAssertEqual(loaded.shape.moe?.topK, 3)

    try Self.editJSON(config) { $0["norm_topk_prob"] = false }
    XCTAssertEqual(try ModelLoader.load(.gguf(gguf)).shape.moe?.normalizeTopK, false)

    for (key, value, difference) in [("num_experts_per_tok", 2, "experts per token (top-k) 2 vs 3"),
                                     ("num_local_experts", 8, "experts 8 vs 4")] {
      try Self.editJSON(config) { $0["norm_topk_prob"] = true; $0["num_experts_per_tok"] = 3; $0["num_local_experts"] = 4 }
      try Self.editJSON(config) { $0[key] = value }
      XCTAssertThrowsError(try ModelLoader.load(.gguf(gguf)), key) { error in
        let text = "\(error)"
        XCTAssertTrue(text.hasPrefix(config.path + ": "), text)
        XCTAssertTrue(text.contains("model.gguf") && text.contains(difference), text)
      }
    }
  }

  // MARK: - Helpers

  /// A fixture file of Tests/VKFModelTests/Fixtures/gguf.
  static func fixture(_ name: String, _ type: String) -> URL {
    GGUFFixtures.directory.appendingPathComponent("\(name).\(type).gguf")
  }

  /// Loads fixture `name`.`type`.gguf, checks its shape against `name`.config.json and its
  /// logits against `name`.expected.safetensors[`logits`].
  private func checkLoads(_ name: String, _ type: String, logits: String = "logits",
                          file: StaticString = #filePath, line: UInt = #line) throws -> TransformerShape {
    let source = try GGUFWeightSource(path: Self.fixture(name, type).path)
    let shape = try TransformerShape(gguf: try GGUFModelFacts(file: source.file), weights: source)
    let configURL = GGUFFixtures.directory.appendingPathComponent("\(name).config.json")
    let fromConfig = try TransformerShape(config: try DecoderConfig.load(from: configURL), file: configURL.path)
    XCTAssertNil(shape.firstDifference(from: fromConfig), "GGUF shape vs config.json", file: file, line: line)
    let expected = try SafetensorsFile(contentsOf: GGUFFixtures.directory.appendingPathComponent("\(name).expected.safetensors"))
    try compareLogits(source, shape, ids: try expected.floats("ids").map { Int32($0) },
                      expected: try expected.floats(logits), label: "\(name).\(type)", file: file, line: line)
    return shape
  }

  private func compareLogits(_ source: GGUFWeightSource, _ shape: TransformerShape, ids: [Int32], expected: [Float],
                             label: String, file: StaticString = #filePath, line: UInt = #line) throws {
    let backend = TestBackends.cpu
    let model = try DecoderModel(weights: try DecoderWeights(from: source, shape: shape, backend: backend, trainable: .none))
    try model.forward(ids: ids, batch: 2)
    let actual = try backend.floats(try XCTUnwrap(model.logits))
    print(String(format: "%@ logits: nmse %.2e maxAbs %.2e", label, Compare.nmse(expected, actual),
                 Compare.maxAbs(expected, actual)))
    XCTAssertNil(Compare.check(expected, actual, nmse: Self.logitsTolerance.nmse, maxAbs: Self.logitsTolerance.maxAbs),
                 label, file: file, line: line)
  }

  /// convert_hf_to_gguf.py `DecoderModel.permute` on a row-major (rows, cols) matrix: stored row
  /// h·hd + 2i + s holds original row h·hd + s·hd/2 + i.
  static func permuteRows(_ values: [Float], rows: Int, heads: Int) -> [Float] {
    let columns = values.count / rows, headDim = rows / heads, half = headDim / 2
    var out = values
    for h in 0 ..< heads {
      for i in 0 ..< half {
        for s in 0 ..< 2 {
          let stored = h * headDim + 2 * i + s, original = h * headDim + s * half + i
          out[stored * columns ..< (stored + 1) * columns] = values[original * columns ..< (original + 1) * columns]
        }
      }
    }
    return out
  }

  /// A fresh directory holding fixture `name`'s f32 GGUF as model.gguf and its config.json.
  static func siblingPair(_ name: String) throws -> (gguf: URL, config: URL) {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vkf-moe-\(UUID())")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let gguf = dir.appendingPathComponent("model.gguf"), config = dir.appendingPathComponent("config.json")
    try FileManager.default.copyItem(at: fixture(name, "f32"), to: gguf)
    try FileManager.default.copyItem(at: GGUFFixtures.directory.appendingPathComponent("\(name).config.json"), to: config)
    return (gguf, config)
  }

  /// Rewrites a JSON object file through `edit`.
  static func editJSON(_ url: URL, _ edit: (inout [String: Any]) -> Void) throws {
    var object = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
    edit(&object)
    try JSONSerialization.data(withJSONObject: object).write(to: url)
  }
}
