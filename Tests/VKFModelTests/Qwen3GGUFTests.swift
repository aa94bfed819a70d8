import Foundation
import XCTest
import VKFCore
@testable import VKFModel
import VKFTestSupport

/// A Qwen3 GGUF (llama.cpp's `qwen3` architecture: `blk.N.attn_q_norm` / `attn_k_norm`, rows
/// stored unpermuted) written from the transformers golden and loaded back: the shape has the
/// per-head q/k RMSNorm and head_dim from `attention.key_length`, and the logits equal the
/// golden's.
final class Qwen3GGUFTests: XCTestCase {
  func test_qwen3GGUF_loadsWithQKNorm_andMatchesTheTransformersGolden() throws {
    let g = try GoldenCase.load("qwen3_qknorm")
    let s = g.shape
    var writer = GGUFWriter(architecture: "qwen3")
    for (key, value) in [("block_count", s.layers), ("embedding_length", s.hidden), ("feed_forward_length", s.intermediate),
                         ("attention.head_count", s.heads), ("attention.head_count_kv", s.kvHeads),
                         ("attention.key_length", s.headDim), ("attention.value_length", s.headDim),
                         ("vocab_size", s.vocab), ("context_length", 64)] {
      writer.set("qwen3.\(key)", .uint32(UInt32(value)))
    }
    writer.set("qwen3.rope.freq_base", .float32(10_000))  // tools/make_fixtures.py COMMON
    writer.set("qwen3.attention.layer_norm_rms_epsilon", .float32(s.rmsNormEps))
    // HF → GGUF names: the loader's own map, inverted.
    var ggufName: [String: String] = [:]
    for hf in g.weights.tensorNames {
      let stem = hf.hasSuffix(".weight") ? String(hf.dropLast(7)) : String(hf.dropLast(5))
      let suffix = hf.hasSuffix(".weight") ? ".weight" : ".bias"
      if let global = GGUFNameMap.global.first(where: { $0.value == stem }) {
        ggufName[hf] = global.key + suffix
      } else if let layer = stem.split(separator: ".").dropFirst(2).first.flatMap({ Int($0) }),
                let block = GGUFNameMap.block.first(where: { stem == "model.layers.\(layer).\($0.value)" }) {
        ggufName[hf] = "blk.\(layer).\(block.key)\(suffix)"
      }
    }
    XCTAssertEqual(ggufName.count, g.weights.tensorNames.count, "every golden tensor has a GGUF name")
    XCTAssertEqual(ggufName["model.layers.1.self_attn.k_norm.weight"], "blk.1.attn_k_norm.weight")
    for (hf, name) in ggufName.sorted(by: { $0.key < $1.key }) {
      try writer.addTensor(name, shape: try g.weights.shape(of: hf), values: try g.weights.floats(hf))
    }
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("vkf-qwen3-\(UUID()).gguf").path
    defer { try? FileManager.default.removeItem(atPath: path) }
    try writer.write(to: path)

    let source = try GGUFWeightSource(path: path)
    let shape = try TransformerShape(gguf: try GGUFModelFacts(file: source.file), weights: source)
    XCTAssertTrue(shape.qkNorm)
    XCTAssertEqual(shape.headDim, 64)
    XCTAssertNil(shape.firstDifference(from: s), "GGUF shape vs the config's")
    let model = try LlamaModel(weights: try LlamaWeights(from: source, shape: shape, backend: TestBackends.cpu,
                                                          trainable: .none))
    try model.forward(ids: try g.ids, batch: g.batch)
    let e = try g.expected.floats("logits"), a = try TestBackends.cpu.floats(try XCTUnwrap(model.logits))
    XCTAssertNil(Compare.check(e, a, nmse: ModelGoldenTests.logitsTolerance.nmse,
                               maxAbs: ModelGoldenTests.logitsTolerance.maxAbs))
  }
}
