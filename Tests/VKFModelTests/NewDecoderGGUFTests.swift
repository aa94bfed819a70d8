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
  private func writeGGUF(_ g: GoldenCase, arch: String, ropeBase: Float = 10_000, extra: [(String, GGUFValue)] = [],
                         stored: (String, [Float]) -> [Float] = { $1 }) throws -> String {
    let s = g.shape
    var writer = GGUFWriter(architecture: arch)
    for (key, value) in [("block_count", s.layers), ("embedding_length", s.hidden), ("feed_forward_length", s.intermediate),
                         ("attention.head_count", s.heads), ("attention.head_count_kv", s.kvHeads),
                         ("attention.key_length", s.headDim), ("attention.value_length", s.headDim),
                         ("vocab_size", s.vocab), ("context_length", 64)] {
      writer.set("\(arch).\(key)", .uint32(UInt32(value)))
    }
    writer.set("\(arch).rope.freq_base", .float32(ropeBase))  // tools/make_fixtures.py COMMON unless told
    for (key, value) in extra { writer.set("\(arch).\(key)", value) }
    writer.set("\(arch).attention.layer_norm_rms_epsilon", .float32(s.rmsNormEps))
    // HF → GGUF names: the loader's own map, inverted.
    var ggufName: [String: String] = [:]
    for hf in g.weights.tensorNames {
      let suffix = hf.hasSuffix(".weight") ? ".weight" : ".bias"
      let stem = String(hf.dropLast(suffix.count))
      if let global = GGUFNameMap.global.first(where: { $0.value == stem }) {
        ggufName[hf] = global.key + suffix
      } else if let layer = stem.split(separator: ".").dropFirst(2).first.flatMap({ Int($0) }),
                let block = GGUFNameMap.blockMap(architecture: arch)
                  .first(where: { stem == "model.layers.\(layer).\($0.value)" }) {
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
  /// `adjust` sets what llama.cpp derives differently from these tiny configs (an attention
  /// scale or window pattern fixed per architecture) to the golden's before the logits.
  private func checkLoads(_ path: String, _ g: GoldenCase, adjust: (inout TransformerShape) -> Void = { _ in },
                          file: StaticString = #filePath, line: UInt = #line) throws -> TransformerShape {
    let source = try GGUFWeightSource(path: path)
    var shape = try TransformerShape(gguf: try GGUFModelFacts(file: source.file), weights: source)
    let derived = shape
    adjust(&shape)
    XCTAssertNil(shape.firstDifference(from: g.shape), "GGUF shape vs the config's", file: file, line: line)
    let model = try DecoderModel(weights: try DecoderWeights(from: source, shape: shape, backend: TestBackends.cpu,
                                                          trainable: .none))
    try model.forward(ids: try g.ids, batch: g.batch)
    let e = try g.expected.floats("logits"), a = try TestBackends.cpu.floats(try XCTUnwrap(model.logits))
    XCTAssertNil(Compare.check(e, a, nmse: ModelGoldenTests.logitsTolerance.nmse,
                               maxAbs: ModelGoldenTests.logitsTolerance.maxAbs), file: file, line: line)
    return derived
  }

  /// Weights that disagree with the config are named by file and tensor (safetensors and
  /// GGUF alike), so the user knows which of the two files to fix.
  func test_weightsDisagreeingWithTheConfig_errorNamesTheFileAndTensor() throws {
    let g = try GoldenCase.load("gemma")
    var wrong = g.shape
    wrong.vocab += 1
    XCTAssertThrowsError(try DecoderWeights(from: g.weights, shape: wrong, backend: TestBackends.cpu)) { error in
      let text = "\(error)"
      XCTAssertTrue(text.hasPrefix(g.weights.url.path + ": model.embed_tokens.weight: has shape"), text)
    }
    let path = try writeGGUF(g, arch: "gemma")
    defer { try? FileManager.default.removeItem(atPath: path) }
    XCTAssertThrowsError(try DecoderWeights(from: try GGUFWeightSource(path: path), shape: wrong,
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

  /// Gemma 2 as llama.cpp's converter writes it: sandwich norms under their own names
  /// (post_attention_norm, ffn_norm = pre-MLP, post_ffw_norm), every norm + 1, the caps and
  /// window in metadata; the window on even layers and the scale head_dim^−½ (llama.cpp's
  /// rule below 27B — the golden's query_pre_attn_scalar 48 is set back for the logits).
  func test_gemma2GGUF_sandwichNamesCapsAndWindows_matchTheTransformersGolden() throws {
    let g = try GoldenCase.load("gemma2")
    let path = try writeGGUF(g, arch: "gemma2", extra: [("attn_logit_softcapping", .float32(1)),
                                                        ("final_logit_softcapping", .float32(0.8)),
                                                        ("attention.sliding_window", .uint32(3))]) { name, values in
      name.hasSuffix("norm.weight") ? values.map { $0 + 1 } : values
    }
    defer { try? FileManager.default.removeItem(atPath: path) }
    let shape = try checkLoads(path, g) { $0.attentionScaleOverride = g.shape.attentionScaleOverride }
    XCTAssertEqual(GGUFNameMap.huggingFaceName(for: "blk.1.ffn_norm.weight", architecture: "gemma2"),
                   "model.layers.1.pre_feedforward_layernorm.weight")
    XCTAssertEqual(GGUFNameMap.huggingFaceName(for: "blk.1.ffn_norm.weight", architecture: "llama"),
                   "model.layers.1.post_attention_layernorm.weight")
    XCTAssertTrue(shape.sandwichNorms)
    XCTAssertEqual(shape.slidingWindows, [3, 0])
    XCTAssertEqual(shape.attentionSoftcap, 1)
    XCTAssertEqual(shape.finalLogitSoftcap, 0.8)
    XCTAssertEqual(shape.attentionScale, 1 / 8, "llama.cpp: head_dim^−½ below 27B")
  }

  /// Gemma 3 likewise, with its (1 + w) q/k norms, the local RoPE base llama.cpp fixes at
  /// 10 000 and its every-6th-layer pattern (the golden's two layers are set back).
  func test_gemma3GGUF_qkNormsAndLocalBase_matchTheTransformersGolden() throws {
    let g = try GoldenCase.load("gemma3")
    let path = try writeGGUF(g, arch: "gemma3", ropeBase: 1_000_000,
                             extra: [("attention.sliding_window", .uint32(3))]) { name, values in
      name.hasSuffix("norm.weight") ? values.map { $0 + 1 } : values
    }
    defer { try? FileManager.default.removeItem(atPath: path) }
    let shape = try checkLoads(path, g) {
      $0.attentionScaleOverride = g.shape.attentionScaleOverride
      $0.slidingWindows = g.shape.slidingWindows
    }
    XCTAssertTrue(shape.sandwichNorms && shape.qkNorm)
    XCTAssertEqual(shape.slidingWindows, [3, 3], "llama.cpp: all but every 6th layer windowed")
    XCTAssertEqual(shape.localInvFreq, g.shape.localInvFreq)
  }

  /// Phi-3 as llama.cpp's converter writes it: `attn_qkv` and `ffn_up` (gate rows, then up)
  /// fused, rows unpermuted, the window in metadata on every layer.
  func test_phi3GGUF_fusedTensors_matchTheTransformersGolden() throws {
    let g = try GoldenCase.load("phi3")
    let path = try writeGGUF(g, arch: "phi3", extra: [("attention.sliding_window", .uint32(4))])
    defer { try? FileManager.default.removeItem(atPath: path) }
    let shape = try checkLoads(path, g)
    XCTAssertTrue(shape.fusedProjections)
    XCTAssertEqual(shape.slidingWindows, [4, 4])
    XCTAssertEqual(GGUFNameMap.huggingFaceName(for: "blk.0.ffn_up.weight", architecture: "phi3"),
                   "model.layers.0.mlp.gate_up_proj.weight")
    XCTAssertEqual(GGUFNameMap.huggingFaceName(for: "blk.0.attn_qkv.weight", architecture: "phi3"),
                   "model.layers.0.self_attn.qkv_proj.weight")
  }
}
