// Whole-model GGUF export of the tiny llama: written from a GGUF laid out as llama.cpp's
// converter writes it, the f32 export reproduces every source tensor byte for byte and keeps
// its metadata; q8_0 / q4_0 store ggml's reference blocks with the converter's and
// llama-quantize's per-tensor types; a merged adapter's export loads back to the merged
// model's logits. (On SmolLM2 the q8_0 and f16 exports equal llama.cpp's convert_hf_to_gguf.py
// output byte for byte — README.)
import Foundation
import XCTest
import VKFCore
@testable import VKFModel
import VKFTestSupport
@testable import VKFPEFT

final class GGUFModelExportTests: XCTestCase {
  /// Logits of the exported merged model vs the merged model in memory: the same f32 values
  /// through the same code, so only the GGUF round trip could differ (it must not).
  static let logitsMaxAbs: Float = 1e-6

  static let shape = TransformerShape(hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 96, vocab: 97,
                                      rmsNormEps: 1e-6, ropeTheta: 10000, tiedEmbeddings: false, qkvBias: false)

  /// The tiny llama as a converter-made GGUF: hyper-parameters, a toy tokenizer, q/k permuted.
  static func sourceGGUF() throws -> String {
    let s = shape
    let golden = try SafetensorsFile(contentsOf: GGUFExportTests.golden.appendingPathComponent("llama_untied.weights.safetensors"))
    var w = GGUFWriter(architecture: "llama")
    w.set("general.name", .string("tiny"))
    for (key, value) in [("block_count", s.layers), ("embedding_length", s.hidden), ("feed_forward_length", s.intermediate),
                         ("attention.head_count", s.heads), ("attention.head_count_kv", s.kvHeads),
                         ("vocab_size", s.vocab), ("context_length", 64), ("rope.dimension_count", s.headDim)] {
      w.set("llama.\(key)", .uint32(UInt32(value)))
    }
    w.set("llama.rope.freq_base", .float32(10000))
    w.set("llama.attention.layer_norm_rms_epsilon", .float32(1e-6))
    w.set("tokenizer.ggml.model", .string("gpt2"))
    w.set("tokenizer.ggml.tokens", .array(elementType: .string, (0..<s.vocab).map { .string("t\($0)") }))
    w.set("tokenizer.ggml.token_type", .array(elementType: .int32, (0..<s.vocab).map { _ in .int32(1) }))
    w.set("tokenizer.ggml.merges", .array(elementType: .string, []))
    w.set("tokenizer.ggml.eos_token_id", .uint32(2))
    for hf in golden.tensorNames.sorted() {
      let name = try XCTUnwrap(GGUFNameMap.ggufName(forHuggingFace: hf, architecture: "llama"), hf)
      let shape = try golden.shape(of: hf)
      var values = try golden.floats(hf)
      if name.hasSuffix("attn_q.weight") { values = GGUFNameMap.permuteRows(values, rows: shape[0], columns: shape[1], heads: s.heads) }
      if name.hasSuffix("attn_k.weight") { values = GGUFNameMap.permuteRows(values, rows: shape[0], columns: shape[1], heads: s.kvHeads) }
      try w.addTensor(name, shape: shape, values: values)
    }
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("vkf-src-\(UUID()).gguf").path
    try w.write(to: path)
    return path
  }

  static func weights(_ path: String) throws -> (GGUFFile, DecoderWeights) {
    let source = try GGUFWeightSource(path: path)
    return (source.file, try DecoderWeights(from: source, shape: shape, backend: TestBackends.cpu, trainable: .none))
  }

  static func export(_ weights: DecoderWeights, _ source: GGUFFile, _ type: GGUFModelExport.OutType) throws -> GGUFFile {
    let out = FileManager.default.temporaryDirectory.appendingPathComponent("vkf-export-\(UUID()).gguf").path
    try GGUFModelExport.write(weights: weights, source: source, name: "exported", outtype: type, to: out)
    return try GGUFFile(path: out)
  }

  func test_f32_reproducesTheSource_quantisedTypesFollowLlamaCpp() throws {
    let path = try Self.sourceGGUF()
    defer { try? FileManager.default.removeItem(atPath: path) }
    let (source, weights) = try Self.weights(path)
    let f32 = try Self.export(weights, source, .f32)
    defer { try? FileManager.default.removeItem(atPath: f32.path) }
    for key in source.metadataKeys where !["general.name"].contains(key) {
      XCTAssertEqual(f32.metadata[key], source.metadata[key], key)
    }
    XCTAssertEqual(f32.metadata["general.file_type"], .uint32(0))
    XCTAssertEqual(f32.tensors.count, source.tensors.count)
    for t in source.tensors {
      let mine = try XCTUnwrap(f32.tensor(named: t.name), t.name)
      XCTAssertEqual(mine.dimensions, t.dimensions, t.name)
      XCTAssertTrue(f32.withRawBytes(of: mine) { Array($0) } == source.withRawBytes(of: t) { Array($0) }, t.name)
    }
    let facts = GGUFModelExport.Facts(layers: 2, heads: 4, kvHeads: 2, tiedEmbeddings: false)
    for type in [GGUFModelExport.OutType.q8_0, .q4_0, .q4_k_m, .q5_k_m, .q6_k] {
      let q = try Self.export(weights, source, type)
      defer { try? FileManager.default.removeItem(atPath: q.path) }
      XCTAssertEqual(q.metadata["general.file_type"], .uint32(type.fileType))
      for t in source.tensors {
        let mine = try XCTUnwrap(q.tensor(named: t.name))
        let values = source.withRawBytes(of: t) { raw in (0..<(raw.count / 4)).map { raw.load(fromByteOffset: 4 * $0, as: Float.self) } }
        let bytes = q.withRawBytes(of: mine) { Array($0) }
        XCTAssertEqual(mine.type, GGUFModelExport.storedType(t.name, dimensions: t.dimensions, outtype: type, facts: facts), t.name)
        if t.dimensions.count == 1 {
          XCTAssertEqual(mine.type, .f32, t.name)
        } else {
          // 64-wide rows fill no 256-value block: every K type falls back to a 32-block one.
          XCTAssertTrue([GGMLType.q8_0, .q4_0, .q5_0, .q5_1].contains(mine.type), "\(type): \(t.name) \(mine.type)")
          XCTAssertTrue(bytes == GGUFQuantize.quantize(values, as: mine.type), t.name)
        }
      }
    }
  }

  /// llama-quantize's per-tensor choices (llama-quant.cpp llama_tensor_get_type) for three
  /// shapes: SmolLM2 (576-wide rows, 30 layers, tied), a Llama-2-7B-like model (4096, 32
  /// layers, untied) and a 70B grouped-query one (80 layers).
  func test_storedTypes_followLlamaQuantize() {
    let smol = GGUFModelExport.Facts(layers: 30, heads: 9, kvHeads: 3, tiedEmbeddings: true)
    let seven = GGUFModelExport.Facts(layers: 32, heads: 32, kvHeads: 32, tiedEmbeddings: false)
    let seventy = GGUFModelExport.Facts(layers: 80, heads: 64, kvHeads: 8, tiedEmbeddings: false)
    let cases: [(String, [Int], GGUFModelExport.OutType, GGUFModelExport.Facts, GGMLType)] = [
      ("token_embd.weight", [576, 49152], .q4_k_m, smol, .q8_0),     // tied head, 576 % 256 ≠ 0
      ("blk.0.attn_v.weight", [576, 192], .q4_k_m, smol, .q8_0),     // more bits: Q6_K → Q8_0
      ("blk.3.attn_v.weight", [576, 192], .q4_k_m, smol, .q5_0),     // Q4_K → Q5_0
      ("blk.5.attn_v.weight", [576, 192], .q4_k_m, smol, .q8_0),     // (5 − 3) % 3 = 2
      ("blk.0.ffn_down.weight", [1536, 576], .q4_k_m, smol, .q6_K),  // 1536 fills 256-blocks
      ("blk.3.ffn_down.weight", [1536, 576], .q4_k_m, smol, .q4_K),
      ("blk.29.ffn_down.weight", [1536, 576], .q4_k_m, smol, .q6_K), // last eighth
      ("blk.3.attn_q.weight", [576, 576], .q4_k_m, smol, .q5_0),
      ("blk.3.attn_q.weight", [576, 576], .q5_k_m, smol, .q5_1),
      ("blk.3.ffn_down.weight", [1536, 576], .q5_k_m, smol, .q5_K),
      ("blk.0.ffn_down.weight", [1536, 576], .q5_k_m, smol, .q6_K),
      ("blk.3.attn_q.weight", [576, 576], .q6_k, smol, .q8_0),
      ("blk.3.ffn_down.weight", [1536, 576], .q6_k, smol, .q6_K),
      ("blk.3.attn_norm.weight", [576], .q4_k_m, smol, .f32),
      ("output.weight", [4096, 32000], .q4_k_m, seven, .q6_K),
      ("token_embd.weight", [4096, 32000], .q4_k_m, seven, .q4_K),   // untied: the base type
      ("blk.0.attn_v.weight", [4096, 4096], .q4_k_m, seven, .q6_K),
      ("blk.4.attn_v.weight", [4096, 4096], .q4_k_m, seven, .q4_K),
      ("output.weight", [4096, 32000], .q4_0, seven, .q6_K),         // llama-quantize's head rule
      ("token_embd.weight", [4096, 32000], .q4_0, seven, .q4_0),
      ("output.weight", [4096, 32000], .q8_0, seven, .q8_0),
      ("blk.10.attn_v.weight", [8192, 1024], .q4_k_m, seventy, .q5_K), // 70B: attn_v at least Q5_K
      ("blk.10.attn_q.weight", [8192, 8192], .q4_k_m, seventy, .q4_K),
      ("blk.3.attn_q.weight", [48, 48], .q8_0, smol, .f16),          // rows not a multiple of 32
      ("blk.3.attn_q.weight", [576, 576], .bf16, smol, .bf16),
    ]
    for (name, dims, outtype, facts, want) in cases {
      XCTAssertEqual(GGUFModelExport.storedType(name, dimensions: dims, outtype: outtype, facts: facts), want,
                     "\(outtype) \(name) \(dims)")
    }
  }

  func test_mergedAdapter_exportLoadsBackToTheMergedLogits() throws {
    let path = try Self.sourceGGUF()
    defer { try? FileManager.default.removeItem(atPath: path) }
    let (source, weights) = try Self.weights(path)
    let adapter = GGUFExportTests.fixtures.appendingPathComponent("lora_adapter")
    try Merge.merge(try PEFTAdapterFiles.loadAdapter(adapter, into: weights).lora)
    let ids: [Int32] = [5, 17, 42, 9, 33, 61]
    let merged = try DecoderModel(weights: weights)
    try merged.forward(ids: ids, batch: 1)
    let want = try TestBackends.cpu.floats(try XCTUnwrap(merged.logits))
    let out = try Self.export(weights, source, .f32)
    defer { try? FileManager.default.removeItem(atPath: out.path) }
    let (_, back) = try Self.weights(out.path)
    let model = try DecoderModel(weights: back)
    try model.forward(ids: ids, batch: 1)
    let got = try TestBackends.cpu.floats(try XCTUnwrap(model.logits))
    let base = try DecoderModel(weights: try Self.weights(path).1)
    try base.forward(ids: ids, batch: 1)
    XCTAssertNotEqual(try TestBackends.cpu.floats(try XCTUnwrap(base.logits)), want, "the adapter changes the model")
    XCTAssertLessThanOrEqual(zip(got, want).map { abs($0 - $1) }.max() ?? 1, Self.logitsMaxAbs)
  }
}
