// GGUF export against llama.cpp's own tools (fixtures from tools/make_gguf_golden.py): the
// Q8_0 / Q4_0 quantisers byte for byte against gguf-py's reference, a LoRA adapter byte for
// byte against convert_lora_to_gguf.py's file, and the HF ↔ GGUF names and q/k permutation.
import Foundation
import XCTest
import VKFCore
@testable import VKFModel
import VKFTestSupport
@testable import VKFPEFT

final class GGUFExportTests: XCTestCase {
  static let fixtures = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("Fixtures/gguf")
  static let golden = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
    .appendingPathComponent("VKFModelTests/Fixtures/golden")

  struct QuantGolden: Decodable { var inputs: [[Float]], q8_0: [String], q4_0: [String] }

  static func hex(_ bytes: [UInt8]) -> String { bytes.map { String(format: "%02x", $0) }.joined() }

  func test_quantisers_equalGGUFReference() throws {
    let g = try JSONDecoder().decode(QuantGolden.self,
                                     from: Data(contentsOf: Self.fixtures.appendingPathComponent("quant_golden.json")))
    XCTAssertFalse(g.inputs.isEmpty)
    for (i, block) in g.inputs.enumerated() {
      XCTAssertEqual(Self.hex(GGUFQuantize.q8_0(block)), g.q8_0[i], "Q8_0 block \(i)")
      XCTAssertEqual(Self.hex(GGUFQuantize.q4_0(block)), g.q4_0[i], "Q4_0 block \(i)")
    }
  }

  /// Every tensor name maps to GGUF and back, for each architecture's block names.
  func test_names_roundTrip() {
    for arch in ["llama", "qwen2", "gemma2", "phi3", "qwen2moe"] {
      for gguf in ["token_embd.weight", "output_norm.weight", "output.weight"]
        + GGUFNameMap.blockMap(architecture: arch).keys.flatMap({ ["blk.3.\($0).weight", "blk.0.\($0).bias"] }) {
        guard let hf = GGUFNameMap.huggingFaceName(for: gguf, architecture: arch) else { continue }
        XCTAssertEqual(GGUFNameMap.ggufName(forHuggingFace: hf, architecture: arch), gguf, "\(arch): \(hf)")
      }
    }
    XCTAssertNil(GGUFNameMap.ggufName(forHuggingFace: "model.layers.0.self_attn.rotary_emb.inv_freq"))
  }

  /// permuteRows is the inverse of the reader's unpermuteRows.
  func test_permutation_invertsTheReaders() {
    let rows = 12, columns = 3, heads = 3
    let x = (0..<(rows * columns)).map { Float($0) }
    let p = GGUFNameMap.permuteRows(x, rows: rows, columns: columns, heads: heads)
    XCTAssertNotEqual(p, x)
    var back = [Float](repeating: 0, count: x.count)
    p.withUnsafeBufferPointer { src in
      back.withUnsafeMutableBufferPointer { dst in
        GGUFNameMap.unpermuteRows(src.baseAddress!, into: dst.baseAddress!, rows: rows, columns: columns, heads: heads)
      }
    }
    XCTAssertEqual(back, x)
  }

  /// The fixture adapter on the tiny llama exported by us equals llama.cpp's
  /// convert_lora_to_gguf.py output: metadata values and types, every tensor's name,
  /// dimensions, type and bytes (f32 and f16). rsLoRA's alpha is the one deliberate
  /// difference: the converter ignores use_rslora.
  func test_loraAdapter_equalsConvertLoraToGGUF() throws {
    let shape = TransformerShape(hidden: 64, layers: 2, heads: 4, kvHeads: 2, intermediate: 96, vocab: 97,
                                 rmsNormEps: 1e-6, ropeTheta: 10000, tiedEmbeddings: false, qkvBias: false)
    let source = try SafetensorsFile(contentsOf: Self.golden.appendingPathComponent("llama_untied.weights.safetensors"))
    for (dir, file, type) in [("lora_adapter", "lora_adapter.gguf", GGMLType.f32),
                              ("lora_adapter", "lora_adapter.f16.gguf", .f16),
                              ("lora_adapter_rslora", "lora_adapter_rslora.gguf", .f32)] {
      let weights = try DecoderWeights(from: source, shape: shape, backend: TestBackends.cpu, trainable: .none)
      let a = try PEFTAdapterFiles.loadAdapter(Self.fixtures.appendingPathComponent(dir), into: weights)
      let ours = FileManager.default.temporaryDirectory.appendingPathComponent("vkf-lora-\(UUID()).gguf")
      defer { try? FileManager.default.removeItem(at: ours) }
      let reference = try GGUFFile(path: Self.fixtures.appendingPathComponent(file).path)
      let name = reference.metadata["general.name"]?.string ?? ""
      try GGUFLoRAExport.write(a.lora, .init(architecture: "llama", name: name, heads: 4, kvHeads: 2, type: type),
                               to: ours.path)
      let got = try GGUFFile(path: ours.path)
      for key in ["general.architecture", "general.type", "adapter.type", "adapter.lora.alpha",
                  "general.quantization_version", "general.name"] where !(dir.hasSuffix("rslora") && key == "adapter.lora.alpha") {
        XCTAssertEqual(got.metadata[key], reference.metadata[key], "\(file): \(key)")
      }
      if dir.hasSuffix("rslora") {
        // The converter writes rsLoRA's alpha as is (8), so llama.cpp would scale by 8/4 instead
        // of 8/√4; ours writes alpha·√r so that alpha'/r is rsLoRA's scale.
        XCTAssertEqual(reference.metadata["adapter.lora.alpha"], .float32(8))
        XCTAssertEqual(got.metadata["adapter.lora.alpha"], .float32(16))
      }
      XCTAssertEqual(Set(got.tensors.map(\.name)), Set(reference.tensors.map(\.name)), file)
      for t in reference.tensors {
        let mine = try XCTUnwrap(got.tensor(named: t.name), t.name)
        XCTAssertEqual(mine.dimensions, t.dimensions, "\(file): \(t.name)")
        XCTAssertEqual(mine.type, t.type, "\(file): \(t.name)")
        let x = got.withRawBytes(of: mine) { Array($0) }, y = reference.withRawBytes(of: t) { Array($0) }
        XCTAssertTrue(x == y, "\(file): \(t.name) bytes differ")
      }
    }
  }
}
