import Foundation
import XCTest
@testable import VKFModel

/// Rows and sums of real tensors, dumped by tools/make_gguf_fixtures.py with gguf-py.
struct GGUFModelReference: Decodable {
  struct Tensor: Decodable {
    var gguf_name: String
    var hf_name: String
    var type: String
    var hf_shape: [Int]
    var rows: [Int]
    var hf_head: [[Double]]
    var hf_tail: [[Double]]
    var stored_head: [[Double]]
    var hf_row_sums: [Double]
    var sum: Double
    var sum_squares: Double
  }
  var tensor_count: Int
  var tensors: [Tensor]
}

/// The shared SmolLM2-135M-Instruct Q4_1 GGUF (Q8_0 embeddings, Q4_1 matrices, F32 norms).
final class GGUFSharedModelTests: XCTestCase {
  /// shared/ sits beside the repository (CI clones it there too).
  static let modelDirectory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("../../../shared/models/smollm2-135m-instruct").standardized.path
  static let modelPath = modelDirectory + "/model.Q4_1.gguf"

  /// Q8_0 / Q4_1 / F32 dequantisation is exact f32 math in both readers (same op order).
  static let dequantizeTolerance: Float = 0
  /// Relative tolerance on whole-tensor f64 sums: the values are identical, only the
  /// summation order differs from numpy's pairwise sum (≈ n·ε_f64 ≪ 1e-9 for 28M terms).
  static let sumRelativeTolerance = 1e-9

  private func openSource() throws -> GGUFWeightSource {
    guard FileManager.default.fileExists(atPath: Self.modelPath) else {
      throw XCTSkip("shared model absent at \(Self.modelPath); GGUF real-file tests skipped")
    }
    return try GGUFWeightSource(path: Self.modelPath)
  }

  func testSmolLM2_headerAndFacts() throws {
    let source = try openSource()
    let file = source.file
    XCTAssertEqual(file.version, 3)
    XCTAssertEqual(file.architecture, "llama")
    XCTAssertEqual(file.tensors.count, 272)
    let facts = try GGUFModelFacts(file: file)
    XCTAssertEqual(facts.blockCount, 30)
    XCTAssertEqual(facts.embeddingLength, 576)
    XCTAssertEqual(facts.feedForwardLength, 1536)
    XCTAssertEqual(facts.headCount, 9)
    XCTAssertEqual(facts.headCountKV, 3)
    XCTAssertEqual(facts.headDim, 64)
    XCTAssertEqual(facts.ropeFreqBase, 100_000)
    XCTAssertEqual(facts.rmsNormEpsilon, Float(1e-5))
    XCTAssertEqual(facts.contextLength, 8192)
    XCTAssertEqual(facts.vocabSize, 49152)
    XCTAssertTrue(facts.tiedEmbeddings)
    let tokenizer = try GGUFTokenizerFacts(file: file)
    XCTAssertEqual(tokenizer.model, "gpt2")
    XCTAssertEqual(tokenizer.pre, "smollm")
    XCTAssertEqual(tokenizer.tokens.count, 49152)
    XCTAssertEqual(tokenizer.tokenTypes?.count, 49152)
    XCTAssertEqual(tokenizer.merges?.count, 48900)
    XCTAssertEqual(tokenizer.bosTokenID, 1)
    XCTAssertEqual(tokenizer.eosTokenID, 2)
    XCTAssertEqual(tokenizer.addBOS, false)
    XCTAssertTrue(tokenizer.chatTemplate?.contains("im_start") ?? false)
  }

  /// Every tensor maps to an HF name with the shape config.json implies; no lm_head (tied).
  func testSmolLM2_everyTensorMapsToHFNameAndShape() throws {
    let source = try openSource()
    XCTAssertEqual(source.unmappedTensorNames, [])
    XCTAssertEqual(source.tensorNames.count, 272)
    XCTAssertFalse(source.tensorNames.contains("lm_head.weight"))
    let (hidden, inter, kv, vocab) = (576, 1536, 3 * 64, 49152)
    var expected: [String: [Int]] = [
      "model.embed_tokens.weight": [vocab, hidden], "model.norm.weight": [hidden],
    ]
    for layer in 0 ..< 30 {
      let p = "model.layers.\(layer)."
      expected[p + "input_layernorm.weight"] = [hidden]
      expected[p + "post_attention_layernorm.weight"] = [hidden]
      expected[p + "self_attn.q_proj.weight"] = [hidden, hidden]
      expected[p + "self_attn.k_proj.weight"] = [kv, hidden]
      expected[p + "self_attn.v_proj.weight"] = [kv, hidden]
      expected[p + "self_attn.o_proj.weight"] = [hidden, hidden]
      expected[p + "mlp.gate_proj.weight"] = [inter, hidden]
      expected[p + "mlp.up_proj.weight"] = [inter, hidden]
      expected[p + "mlp.down_proj.weight"] = [hidden, inter]
    }
    XCTAssertEqual(Set(source.tensorNames), Set(expected.keys))
    for name in source.tensorNames {
      XCTAssertEqual(try source.shape(of: name), expected[name], name)
    }
    XCTAssertEqual(try source.storedType(of: "model.embed_tokens.weight"), "Q8_0")
    XCTAssertEqual(try source.storedType(of: "model.layers.0.mlp.up_proj.weight"), "Q4_1")
  }

  /// Dequantised values equal gguf-py's exactly (Q4_1/Q8_0 are exact f32 math in both), and
  /// q/k are un-permuted like transformers' GGUF loader.
  func testSmolLM2_valuesMatchGGUFPyReference() throws {
    let source = try openSource()
    let reference = try GGUFFixtures.json("smollm2_reference.json", as: GGUFModelReference.self)
    XCTAssertEqual(reference.tensor_count, source.file.tensors.count)
    for t in reference.tensors {
      XCTAssertEqual(try source.storedType(of: t.hf_name), t.type)
      XCTAssertEqual(try source.shape(of: t.hf_name), t.hf_shape)
      let columns = t.hf_shape.count == 2 ? t.hf_shape[1] : t.hf_shape[0]
      let rows = t.hf_shape.count == 2 ? t.rows : [0]
      let got = try source.dequantizedRows(t.hf_name, rows)
      for (k, row) in rows.enumerated() {
        let values = got[(k * columns) ..< ((k + 1) * columns)]
        assertValues(Array(values.prefix(16)), t.hf_head[k], tolerance: Self.dequantizeTolerance, "\(t.hf_name) row \(row)")
        assertValues(Array(values.suffix(16)), t.hf_tail[k], tolerance: Self.dequantizeTolerance, "\(t.hf_name) row \(row) tail")
        let sum = values.reduce(0.0) { $0 + Double($1) }
        XCTAssertEqual(sum, t.hf_row_sums[k], accuracy: abs(t.hf_row_sums[k]) * Self.sumRelativeTolerance + 1e-12)
      }
      // Whole tensors except the 28M-element embedding (kept out so debug runs stay fast).
      guard t.gguf_name != "token_embd.weight" else { continue }
      let all = try source.floats(t.hf_name)
      let sum = all.reduce(0.0) { $0 + Double($1) }
      let squares = all.reduce(0.0) { $0 + Double($1) * Double($1) }
      XCTAssertEqual(sum, t.sum, accuracy: abs(t.sum) * Self.sumRelativeTolerance + 1e-9, t.hf_name)
      XCTAssertEqual(squares, t.sum_squares, accuracy: t.sum_squares * Self.sumRelativeTolerance, t.hf_name)
      // Stored (permuted) order straight from the file.
      let info = try XCTUnwrap(source.file.tensor(named: t.gguf_name))
      let stored = try GGUFWeightSource.dequantize(info, in: source.file)
      for (k, row) in rows.enumerated() {
        assertValues(Array(stored[(row * columns) ..< (row * columns + 16)]), t.stored_head[k],
                     tolerance: Self.dequantizeTolerance, "\(t.gguf_name) stored row \(row)")
      }
    }
  }
}
