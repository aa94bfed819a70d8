import Foundation
import XCTest
@testable import VKFModel

/// Expected values written by tools/make_gguf_fixtures.py (gguf-py's reference dequantizers).
struct GGUFSyntheticExpectation: Decodable {
  struct Tensor: Decodable {
    var type: String
    var shape: [Int]
    var values: [Double]
    var hf_values: [Double]?
  }
  var tensors: [String: Tensor]
}

/// Paths of the GGUF fixtures (Tests/VKFModelTests/Fixtures/gguf).
enum GGUFFixtures {
  static let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("Fixtures/gguf")
  static var synthetic: String { directory.appendingPathComponent("synthetic.gguf").path }

  static func json<T: Decodable>(_ name: String, as type: T.Type) throws -> T {
    let data = try Data(contentsOf: directory.appendingPathComponent(name))
    return try JSONDecoder().decode(T.self, from: data)
  }
}

/// Compares dequantised values with reference values elementwise, reporting the first mismatch.
func assertValues(
  _ got: [Float], _ want: [Double], tolerance: Float, _ label: String, line: UInt = #line
) {
  XCTAssertEqual(got.count, want.count, "\(label): element count", line: line)
  for (i, (g, w)) in zip(got, want).enumerated() where !(abs(g - Float(w)) <= tolerance) {
    XCTFail("\(label)[\(i)] = \(g), reference \(Float(w)) (tolerance \(tolerance))", line: line)
    return
  }
}

final class GGUFSyntheticTests: XCTestCase {
  /// Dequantisation tolerance: zero. gguf-py and this reader both follow ggml's f32 operation
  /// order (e.g. Q4_1 `q·d + m`, Q4_K `(d·sc)·q − dmin·m`) and f16/bf16 → f32 is exact, so
  /// every value must match bit for bit.
  static let dequantizeTolerance: Float = 0
  func testHeader_parsesVersionCountsAlignmentAndTensorInfos() throws {
    let file = try GGUFFile(path: GGUFFixtures.synthetic)
    XCTAssertEqual(file.version, 3)
    XCTAssertEqual(file.alignment, GGUFFile.defaultAlignment)
    XCTAssertEqual(file.dataOffset % file.alignment, 0)
    XCTAssertEqual(file.tensors.count, 13)
    XCTAssertEqual(file.architecture, "llama")
    let q4k = try XCTUnwrap(file.tensor(named: "t.q4_k"))
    XCTAssertEqual(q4k.dimensions, [256, 2], "GGUF lists dims innermost-first")
    XCTAssertEqual(q4k.reversedShape, [2, 256])
    XCTAssertEqual(q4k.type, .q4_K)
    XCTAssertEqual(q4k.byteCount, 2 * 144)
    XCTAssertEqual(file.metadataKeys.first, "general.architecture")
  }

  func testMetadata_everyValueTypeDecodes() throws {
    let m = try GGUFFile(path: GGUFFixtures.synthetic).metadata
    XCTAssertEqual(m["test.u8"], .uint8(200))
    XCTAssertEqual(m["test.i8"], .int8(-100))
    XCTAssertEqual(m["test.u16"], .uint16(60000))
    XCTAssertEqual(m["test.i16"], .int16(-30000))
    XCTAssertEqual(m["test.u32"]?.int, 4_000_000_000)
    XCTAssertEqual(m["test.i32"]?.int, -2_000_000_000)
    XCTAssertEqual(m["test.u64"], .uint64(1 << 63 + 5))
    XCTAssertNil(m["test.u64"]?.int, "a u64 above Int.max has no Int value")
    XCTAssertEqual(m["test.i64"]?.int, -(1 << 62))
    XCTAssertEqual(m["test.f32"]?.float, Float(0.1))
    XCTAssertEqual(m["test.f64"]?.double, 0.1)
    XCTAssertEqual(m["test.bool"]?.bool, true)
    XCTAssertEqual(m["test.string"]?.string, "héllo ✓")
    XCTAssertEqual(m["test.strings"]?.stringArray, ["a", "", "ü"])
    XCTAssertEqual(m["test.floats"]?.floatArray, [1.5, -2.25])
    XCTAssertEqual(m["test.nested"], .array(elementType: .array, [
      .array(elementType: .int32, [.int32(1), .int32(2)]),
      .array(elementType: .int32, [.int32(3)]),
    ]))
    XCTAssertNil(m["test.strings"]?.intArray)
  }

  /// Every supported type dequantises to gguf-py's values bit for bit: both follow ggml's
  /// f32 operation order, and f16/bf16 → f32 is exact.
  func testDequantize_everyTypeMatchesGGUFPyExactly() throws {
    let file = try GGUFFile(path: GGUFFixtures.synthetic)
    let expected = try GGUFFixtures.json("synthetic.json", as: GGUFSyntheticExpectation.self)
    let types = ["t.f32", "t.f16", "t.bf16", "t.q8_0", "t.q4_0", "t.q4_1", "t.q4_k", "t.q5_k", "t.q6_k", "t.q8_k"]
    for name in types {
      let info = try XCTUnwrap(file.tensor(named: name))
      let want = try XCTUnwrap(expected.tensors[name])
      XCTAssertEqual(info.type.name, want.type, name)
      XCTAssertEqual(info.reversedShape, want.shape, name)
      let got = try GGUFWeightSource.dequantize(info, in: file)
      assertValues(got, want.values, tolerance: Self.dequantizeTolerance, name)
    }
  }

  func testWeightSource_mapsNamesReversesShapesAndUnpermutesLlamaQK() throws {
    let source = try GGUFWeightSource(path: GGUFFixtures.synthetic)
    let expected = try GGUFFixtures.json("synthetic.json", as: GGUFSyntheticExpectation.self)
    XCTAssertEqual(source.tensorNames, [
      "model.layers.0.self_attn.k_proj.weight", "model.layers.0.self_attn.q_proj.weight",
    ])
    XCTAssertTrue(source.unmappedTensorNames.contains("rope_freqs.weight"))
    XCTAssertEqual(try source.shape(of: "model.layers.0.self_attn.q_proj.weight"), [8, 4])
    XCTAssertEqual(try source.storedType(of: "model.layers.0.self_attn.k_proj.weight"), "F32")
    for (gguf, hf) in [("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight"),
                       ("blk.0.attn_k.weight", "model.layers.0.self_attn.k_proj.weight")] {
      let want = try XCTUnwrap(expected.tensors[gguf]?.hf_values).map { Float($0) }
      XCTAssertEqual(try source.floats(hf), want, "\(hf) not un-permuted like transformers")
      let rows = try source.shape(of: hf)[0]
      XCTAssertEqual(try source.dequantizedRows(hf, Array((0 ..< rows).reversed())),
                     (0 ..< rows).reversed().flatMap { want[($0 * 4) ..< ($0 * 4 + 4)] })
    }
    XCTAssertThrowsError(try source.floats("lm_head.weight")) { XCTAssertTrue($0 is ModelFileError) }
  }

  func testNameMap_coversLlamaAndQwen2Tensors() {
    let cases = [
      ("token_embd.weight", "model.embed_tokens.weight"),
      ("output_norm.weight", "model.norm.weight"),
      ("output.weight", "lm_head.weight"),
      ("blk.12.attn_norm.weight", "model.layers.12.input_layernorm.weight"),
      ("blk.0.attn_q.bias", "model.layers.0.self_attn.q_proj.bias"),
      ("blk.0.attn_output.weight", "model.layers.0.self_attn.o_proj.weight"),
      ("blk.3.ffn_norm.weight", "model.layers.3.post_attention_layernorm.weight"),
      ("blk.3.ffn_gate.weight", "model.layers.3.mlp.gate_proj.weight"),
      ("blk.3.ffn_up.weight", "model.layers.3.mlp.up_proj.weight"),
      ("blk.3.ffn_down.weight", "model.layers.3.mlp.down_proj.weight"),
    ]
    for (gguf, hf) in cases { XCTAssertEqual(GGUFNameMap.huggingFaceName(for: gguf), hf) }
    XCTAssertNil(GGUFNameMap.huggingFaceName(for: "rope_freqs.weight"))
    XCTAssertNil(GGUFNameMap.huggingFaceName(for: "blk.x.attn_q.weight"))
    XCTAssertEqual(GGUFNameMap.permutation(for: "blk.0.attn_k.bias", architecture: "llama"), .key)
    XCTAssertNil(GGUFNameMap.permutation(for: "blk.0.attn_q.weight", architecture: "qwen2"),
                 "Qwen2 converter stores q/k unpermuted")
  }

  func testFacts_readHyperParametersWithDefaults() throws {
    let facts = try GGUFModelFacts(file: GGUFFile(path: GGUFFixtures.synthetic))
    XCTAssertEqual(facts.headCount, 2)
    XCTAssertEqual(facts.headCountKV, 1)
    XCTAssertEqual(facts.headDim, 4, "defaults to embedding_length / head_count")
    XCTAssertEqual(facts.ropeFreqBase, GGUFModelFacts.defaultRopeFreqBase)
    XCTAssertTrue(facts.tiedEmbeddings)
    XCTAssertThrowsError(try GGUFTokenizerFacts(file: GGUFFile(path: GGUFFixtures.synthetic)))
  }
}
