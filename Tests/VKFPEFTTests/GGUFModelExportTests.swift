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
    for type in [GGUFModelExport.OutType.q8_0, .q4_0] {
      let q = try Self.export(weights, source, type)
      defer { try? FileManager.default.removeItem(atPath: q.path) }
      XCTAssertEqual(q.metadata["general.file_type"], .uint32(type.fileType))
      for t in source.tensors {
        let mine = try XCTUnwrap(q.tensor(named: t.name))
        let values = source.withRawBytes(of: t) { raw in (0..<(raw.count / 4)).map { raw.load(fromByteOffset: 4 * $0, as: Float.self) } }
        let bytes = q.withRawBytes(of: mine) { Array($0) }
        switch mine.type {
        case .f32: XCTAssertTrue(t.dimensions.count == 1, "\(t.name) stays f32 only when 1-D")
        case .q8_0:
          XCTAssertTrue(type == .q8_0 || t.name == "output.weight", "\(type): \(t.name)")
          XCTAssertTrue(bytes == GGUFQuantize.q8_0(values), t.name)
        case .q4_0:
          XCTAssertEqual(type, .q4_0)
          XCTAssertTrue(bytes == GGUFQuantize.q4_0(values), t.name)
        default: XCTFail("\(t.name): \(mine.type)")
        }
      }
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
