// Whole-model GGUF export from a Hugging Face directory against llama.cpp's convert_hf_to_gguf.py
// (tools/make_gguf_hf_golden.py): two tiny llama directories with SmolLM2's real tokenizer — one
// tied with rope_parameters and a chat_template.jinja, one untied in the transformers-4 config
// style with llama3 RoPE scaling, a dict BOS token, add_prefix_space and the template inside
// tokenizer_config.json — exported at f32 and f16 give the converter's metadata key for key (in
// its order, tokens / types / merges by hash) and its tensors byte for byte, rope_freqs included.
import Foundation
import XCTest
import VKFCore
@testable import VKFModel
import VKFTestSupport
@testable import VKFPEFT

final class GGUFHFExportTests: XCTestCase {
  static let shared = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
    .appendingPathComponent("../../../shared/models/smollm2-135m-instruct").standardized

  /// Keys the converter derives from the directory's name and parameter count (its model-card
  /// heuristics), which the export does not imitate: it names the model after the directory.
  static let namingKeys: Set<String> = ["general.name", "general.size_label", "general.basename", "general.finetune"]

  struct Entry: Decodable {
    var key: String, type: String
    var value: JSONScalar?
    var element_type: String?, count: Int?, fnv1a64: String?
  }

  enum JSONScalar: Decodable, Equatable {
    case number(Double), string(String), bool(Bool)
    init(from decoder: Decoder) throws {
      let c = try decoder.singleValueContainer()
      if let b = try? c.decode(Bool.self) { self = .bool(b) } else if let d = try? c.decode(Double.self) { self = .number(d) } else {
        self = .string(try c.decode(String.self))
      }
    }
  }

  struct TensorEntry: Decodable { var name: String, type: String, dims: [Int], fnv1a64: String }
  struct Conversion: Decodable { var metadata: [Entry], tensors: [TensorEntry] }
  struct Golden: Decodable { var variants: [String: [String: Conversion]] }

  static func fnv1a64(_ bytes: UnsafeRawBufferPointer) -> String {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for b in bytes { h = (h ^ UInt64(b)) &* 0x100_0000_01b3 }
    return String(format: "%016llx", h)
  }

  static func fnv1a64(_ bytes: [UInt8]) -> String { bytes.withUnsafeBytes { fnv1a64($0) } }

  /// The tiny directory of `variant` in a temporary folder: its committed config (and
  /// tokenizer_config), SmolLM2's tokenizer files, weights by the golden's formula.
  static func directory(_ variant: String) throws -> URL {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vkf-hf-\(UUID())/\(variant)")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let fixture = GGUFExportTests.fixtures.appendingPathComponent("hf_export/\(variant)")
    var files = [("tokenizer.json", shared), ("config.json", fixture)]
    let ownTokenizerConfig = FileManager.default.fileExists(atPath: fixture.appendingPathComponent("tokenizer_config.json").path)
    files.append(("tokenizer_config.json", ownTokenizerConfig ? fixture : shared))
    if !ownTokenizerConfig { files.append(("chat_template.jinja", shared)) }
    for (file, from) in files {
      try FileManager.default.copyItem(at: from.appendingPathComponent(file), to: dir.appendingPathComponent(file))
    }
    let config = try JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("config.json"))) as! [String: Any]
    let h = config["hidden_size"] as! Int, layers = config["num_hidden_layers"] as! Int, v = config["vocab_size"] as! Int
    let heads = config["num_attention_heads"] as! Int, kv = config["num_key_value_heads"] as! Int
    let inter = config["intermediate_size"] as! Int, hd = h / heads
    var shapes: [String: [Int]] = ["model.embed_tokens.weight": [v, h], "model.norm.weight": [h]]
    if !(config["tie_word_embeddings"] as! Bool) { shapes["lm_head.weight"] = [v, h] }
    for l in 0..<layers {
      let p = "model.layers.\(l)."
      shapes[p + "input_layernorm.weight"] = [h]
      shapes[p + "post_attention_layernorm.weight"] = [h]
      shapes[p + "self_attn.q_proj.weight"] = [heads * hd, h]
      shapes[p + "self_attn.k_proj.weight"] = [kv * hd, h]
      shapes[p + "self_attn.v_proj.weight"] = [kv * hd, h]
      shapes[p + "self_attn.o_proj.weight"] = [h, heads * hd]
      shapes[p + "mlp.gate_proj.weight"] = [inter, h]
      shapes[p + "mlp.up_proj.weight"] = [inter, h]
      shapes[p + "mlp.down_proj.weight"] = [h, inter]
    }
    var floats = [String: ([Int], [Float])]()
    for (k, name) in shapes.keys.sorted().enumerated() {
      let n = shapes[name]!.reduce(1, *)
      floats[name] = (shapes[name]!, (0..<n).map { i in Float(((i * 7919 + k * 104_729 + 13) % 2001) - 1000) / 4096 })
    }
    try SafetensorsWriter.write(floats: floats, to: dir.appendingPathComponent("model.safetensors"))
    return dir
  }

  /// A metadata value as the golden states it: scalars by value, arrays by element type, count
  /// and FNV-1a of the elements' bytes (strings NUL-terminated, numbers little-endian).
  func check(_ value: GGUFValue?, against e: Entry, _ context: String) throws {
    let value = try XCTUnwrap(value, "\(context): \(e.key) missing")
    switch value {
    case .array(let type, let items):
      XCTAssertEqual(e.type, "ARRAY", "\(context): \(e.key)")
      XCTAssertEqual(e.element_type, type == .string ? "STRING" : type == .int32 ? "INT32" : "\(type)", "\(context): \(e.key)")
      XCTAssertEqual(e.count, items.count, "\(context): \(e.key)")
      var bytes = [UInt8]()
      for item in items {
        switch item {
        case .string(let s): bytes += Array(s.utf8) + [0]
        case .int32(let i): bytes += withUnsafeBytes(of: i.littleEndian) { Array($0) }
        default: XCTFail("\(context): \(e.key) holds \(item)")
        }
      }
      XCTAssertEqual(Self.fnv1a64(bytes), e.fnv1a64, "\(context): \(e.key) elements")
    case .string(let s):
      XCTAssertEqual(e.type, "STRING", "\(context): \(e.key)")
      XCTAssertEqual(e.value, .string(s), "\(context): \(e.key)")
    case .uint32(let n):
      XCTAssertEqual(e.type, "UINT32", "\(context): \(e.key)")
      XCTAssertEqual(e.value, .number(Double(n)), "\(context): \(e.key)")
    case .float32(let f):
      XCTAssertEqual(e.type, "FLOAT32", "\(context): \(e.key)")
      XCTAssertEqual(e.value, .number(Double(f)), "\(context): \(e.key)")
    case .bool(let b):
      XCTAssertEqual(e.type, "BOOL", "\(context): \(e.key)")
      XCTAssertEqual(e.value, .bool(b), "\(context): \(e.key)")
    default:
      XCTFail("\(context): \(e.key) is \(value)")
    }
  }

  func test_export_equalsConvertHFToGGUF() throws {
    guard FileManager.default.fileExists(atPath: Self.shared.appendingPathComponent("tokenizer.json").path) else {
      throw XCTSkip("shared SmolLM2 tokenizer absent at \(Self.shared.path); HF → GGUF export not checked against the converter")
    }
    let golden = try JSONDecoder().decode(Golden.self, from: Data(contentsOf: GGUFExportTests.fixtures.appendingPathComponent("hf_export_golden.json")))
    XCTAssertEqual(Set(golden.variants.keys), ["smollm_tied", "llama3_untied"])
    for variant in golden.variants.keys.sorted() {
      let dir = try Self.directory(variant)
      defer { try? FileManager.default.removeItem(at: dir.deletingLastPathComponent()) }
      let loaded = try ModelLoader.load(dir.path)
      let weights = try DecoderWeights(from: loaded.weights, shape: loaded.shape, backend: TestBackends.cpu, trainable: .none)
      let hf = try GGUFHFMetadata.build(directory: dir, architecture: "llama", tokenizer: loaded.tokenizer)
      for (outtype, conversion) in golden.variants[variant]!.sorted(by: { $0.key < $1.key }) {
        let context = "\(variant) \(outtype)"
        let out = dir.appendingPathComponent("out.\(outtype).gguf").path
        try GGUFModelExport.write(weights: weights, architecture: "llama", metadata: hf.metadata, extraTensors: hf.extraTensors,
                                  name: variant, outtype: try XCTUnwrap(GGUFModelExport.OutType(rawValue: outtype)),
                                  origin: dir.path, to: out)
        let file = try GGUFFile(path: out)
        let want = conversion.metadata.filter { !Self.namingKeys.contains($0.key) }
        XCTAssertEqual(file.metadataKeys.filter { !Self.namingKeys.contains($0) }, want.map(\.key), "\(context): keys and order")
        for e in want { try check(file.metadata[e.key], against: e, context) }
        XCTAssertEqual(file.tensors.map(\.name), conversion.tensors.map(\.name), "\(context): tensors and order")
        for t in conversion.tensors {
          let mine = try XCTUnwrap(file.tensor(named: t.name), "\(context): \(t.name)")
          XCTAssertEqual(mine.type.name, t.type, "\(context): \(t.name)")
          XCTAssertEqual(mine.dimensions, t.dims, "\(context): \(t.name)")
          XCTAssertEqual(file.withRawBytes(of: mine) { Self.fnv1a64($0) }, t.fnv1a64, "\(context): \(t.name) bytes")
        }
      }
    }
  }

  /// What the export cannot write is refused before any weights are read, naming the file.
  func test_unsupportedTokenizerAndRoPE_areRefusedByName() throws {
    guard FileManager.default.fileExists(atPath: Self.shared.appendingPathComponent("tokenizer.json").path) else {
      throw XCTSkip("shared SmolLM2 tokenizer absent at \(Self.shared.path)")
    }
    let dir = try Self.directory("smollm_tied")
    defer { try? FileManager.default.removeItem(at: dir.deletingLastPathComponent()) }
    let loaded = try ModelLoader.load(dir.path)
    let configURL = dir.appendingPathComponent("config.json")
    var config = try JSONSerialization.jsonObject(with: Data(contentsOf: configURL)) as! [String: Any]
    config["rope_parameters"] = ["rope_type": "longrope", "rope_theta": 10000.0]
    try JSONSerialization.data(withJSONObject: config).write(to: configURL)
    XCTAssertThrowsError(try GGUFHFMetadata.build(directory: dir, architecture: "llama", tokenizer: loaded.tokenizer)) {
      XCTAssertTrue("\($0)".contains("config.json") && "\($0)".contains("longrope"), "\($0)")
    }
    config["rope_parameters"] = ["rope_type": "default", "rope_theta": 10000.0]
    try JSONSerialization.data(withJSONObject: config).write(to: configURL)
    let tokURL = dir.appendingPathComponent("tokenizer.json")
    var tok = try JSONSerialization.jsonObject(with: Data(contentsOf: tokURL)) as! [String: Any]
    tok["decoder"] = ["type": "Metaspace", "replacement": "\u{2581}"]
    try JSONSerialization.data(withJSONObject: tok).write(to: tokURL)
    XCTAssertThrowsError(try GGUFHFMetadata.build(directory: dir, architecture: "llama", tokenizer: loaded.tokenizer)) {
      XCTAssertTrue("\($0)".contains("tokenizer.json") && "\($0)".contains("byte-level BPE"), "\($0)")
    }
  }
}
