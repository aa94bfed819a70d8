import Foundation
import XCTest
import VKFCore
@testable import VKFModel
import VKFTestSupport

/// GGUF files of the newer decoders, written from the transformers goldens as llama.cpp's
/// converter writes them and loaded back: the shape says what the architecture implies and
/// the logits equal the golden's.
/// - qwen3: `blk.N.attn_q_norm` / `attn_k_norm`, rows stored unpermuted.
/// - gemma: norm weights stored as 1 + w (the converter bakes Gemma's offset in), GeGLU and
///   the √hidden embedding scale implied by the architecture.
final class NewDecoderGGUFTests: XCTestCase {
  /// Writes golden `name` as a GGUF of `arch`; `stored` maps (GGUF name, HF values) to what
  /// the converter stores.
  private func writeGGUF(_ g: GoldenCase, arch: String, stored: (String, [Float]) -> [Float] = { $1 })
    throws -> String {
    let s = g.shape
    var writer = GGUFWriter(architecture: arch)
    for (key, value) in [("block_count", s.layers), ("embedding_length", s.hidden), ("feed_forward_length", s.intermediate),
                         ("attention.head_count", s.heads), ("attention.head_count_kv", s.kvHeads),
                         ("attention.key_length", s.headDim), ("attention.value_length", s.headDim),
                         ("vocab_size", s.vocab), ("context_length", 64)] {
      writer.set("\(arch).\(key)", .uint32(UInt32(value)))
    }
    writer.set("\(arch).rope.freq_base", .float32(10_000))  // tools/make_fixtures.py COMMON
    writer.set("\(arch).attention.layer_norm_rms_epsilon", .float32(s.rmsNormEps))
    // HF → GGUF names: the loader's own map, inverted.
    var ggufName: [String: String] = [:]
    for hf in g.weights.tensorNames {
      let suffix = hf.hasSuffix(".weight") ? ".weight" : ".bias"
      let stem = String(hf.dropLast(suffix.count))
      if let global = GGUFNameMap.global.first(where: { $0.value == stem }) {
        ggufName[hf] = global.key + suffix
      } else if let layer = stem.split(separator: ".").dropFirst(2).first.flatMap({ Int($0) }),
                let block = GGUFNameMap.block.first(where: { stem == "model.layers.\(layer).\($0.value)" }) {
        ggufName[hf] = "blk.\(layer).\(block.key)\(suffix)"
      }
    }
    XCTAssertEqual(ggufName.count, g.weights.tensorNames.count, "every golden tensor has a GGUF name")
    for (hf, name) in ggufName.sorted(by: { $0.key < $1.key }) {
      try writer.addTensor(name, shape: try g.weights.shape(of: hf), values: stored(name, try g.weights.floats(hf)))
    }
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("vkf-\(arch)-\(UUID()).gguf").path
    try writer.write(to: path)
    return path
  }

  /// Loads `path` and checks its shape against the golden's config and its logits.
  private func checkLoads(_ path: String, _ g: GoldenCase, file: StaticString = #filePath, line: UInt = #line)
    throws -> TransformerShape {
    let source = try GGUFWeightSource(path: path)
    let shape = try TransformerShape(gguf: try GGUFModelFacts(file: source.file), weights: source)
    XCTAssertNil(shape.firstDifference(from: g.shape), "GGUF shape vs the config's", file: file, line: line)
    let model = try LlamaModel(weights: try LlamaWeights(from: source, shape: shape, backend: TestBackends.cpu,
                                                          trainable: .none))
    try model.forward(ids: try g.ids, batch: g.batch)
    let e = try g.expected.floats("logits"), a = try TestBackends.cpu.floats(try XCTUnwrap(model.logits))
    XCTAssertNil(Compare.check(e, a, nmse: ModelGoldenTests.logitsTolerance.nmse,
                               maxAbs: ModelGoldenTests.logitsTolerance.maxAbs), file: file, line: line)
    return shape
  }

  /// Weights that disagree with the config are named by file and tensor (safetensors and
  /// GGUF alike), so the user knows which of the two files to fix.
  func test_weightsDisagreeingWithTheConfig_errorNamesTheFileAndTensor() throws {
    let g = try GoldenCase.load("gemma")
    var wrong = g.shape
    wrong.vocab += 1
    XCTAssertThrowsError(try LlamaWeights(from: g.weights, shape: wrong, backend: TestBackends.cpu)) { error in
      let text = "\(error)"
      XCTAssertTrue(text.hasPrefix(g.weights.url.path + ": model.embed_tokens.weight: has shape"), text)
    }
    let path = try writeGGUF(g, arch: "gemma")
    defer { try? FileManager.default.removeItem(atPath: path) }
    XCTAssertThrowsError(try LlamaWeights(from: try GGUFWeightSource(path: path), shape: wrong,
                                          backend: TestBackends.cpu)) { error in
      XCTAssertTrue("\(error)".hasPrefix(path + ": model.embed_tokens.weight"), "\(error)")
    }
  }

  func test_qwen3GGUF_loadsWithQKNorm_andMatchesTheTransformersGolden() throws {
    let g = try GoldenCase.load("qwen3_qknorm")
    let path = try writeGGUF(g, arch: "qwen3")
    defer { try? FileManager.default.removeItem(atPath: path) }
    let shape = try checkLoads(path, g)
    XCTAssertTrue(shape.qkNorm)
    XCTAssertEqual(shape.headDim, 64)
  }

  func test_gemmaGGUF_normsStoredPlusOne_matchTheTransformersGolden() throws {
    let g = try GoldenCase.load("gemma")
    let path = try writeGGUF(g, arch: "gemma") { name, values in
      name.hasSuffix("norm.weight") ? values.map { $0 + 1 } : values
    }
    defer { try? FileManager.default.removeItem(atPath: path) }
    let shape = try checkLoads(path, g)
    XCTAssertEqual(shape.activation, .geluTanh)
    XCTAssertEqual(shape.normWeightOffset, 1)
    XCTAssertEqual(shape.embeddingScale, Float(8))  // √64
    let source = try GGUFWeightSource(path: path)
    // (w + 1) − 1 in f32 is w up to one rounding of a value near 1: ≤ 2⁻²⁴·2 ≈ 1.2e-7.
    for (a, e) in zip(try source.floats("model.norm.weight"), try g.weights.floats("model.norm.weight")) {
      XCTAssertEqual(a, e, accuracy: 2.5e-7, "the loader takes the converter's + 1 off")
    }
  }
}
