import Foundation
import XCTest
@testable import VKFModel
import VKFCore
import VKFTestSupport
import VKFTokenizer

/// Model files that disagree with each other or cannot be read stop the load with the file
/// (or tensor) and the fault, instead of being skipped or crashing later: side files that are
/// not JSON objects, token ids beyond the embedding, non-finite weights.
final class ModelFilesConsistencyTests: XCTestCase {
  private var dir: URL!

  /// A tiny HF directory: the PEFT interop base (vocab 61) and a byte-level BPE tokenizer of
  /// `vocab` tokens plus `added` (content, id) tokens.
  private func makeModel(vocab: Int = 40, added: [(String, Int)] = []) throws -> URL {
    let model = dir.appendingPathComponent("model-\(UUID())")
    try FileManager.default.createDirectory(at: model, withIntermediateDirectories: true)
    let base = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .appendingPathComponent("../VKFPEFTTests/Fixtures/peftio/base").standardized
    for f in ["config.json", "model.safetensors"] {
      try FileManager.default.copyItem(at: base.appendingPathComponent(f), to: model.appendingPathComponent(f))
    }
    let tokens = Dictionary(uniqueKeysWithValues: (0..<vocab).map { (String(UnicodeScalar(UInt8(48 + $0))), $0) })
    let tokenizer: [String: Any] = [
      "version": "1.0", "normalizer": NSNull(), "post_processor": NSNull(),
      "added_tokens": added.map { ["id": $0.1, "content": $0.0, "special": true, "single_word": false,
                                   "lstrip": false, "rstrip": false, "normalized": false] },
      "pre_tokenizer": ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true],
      "decoder": ["type": "ByteLevel"], "model": ["type": "BPE", "vocab": tokens, "merges": []]]
    try JSONSerialization.data(withJSONObject: tokenizer).write(to: model.appendingPathComponent("tokenizer.json"))
    return model
  }

  override func setUpWithError() throws {
    dir = FileManager.default.temporaryDirectory.appendingPathComponent("vkf-model-files-\(UUID())")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
  }

  override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

  /// Loading `model` fails with a message containing every fragment.
  private func assertRefused(_ model: URL, _ fragments: [String], file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertThrowsError(try ModelLoader.load(model.path), file: file, line: line) { e in
      for f in fragments { XCTAssertTrue("\(e)".contains(f), "\(e) lacks \(f)", file: file, line: line) }
      XCTAssertFalse("\(e)".contains("\n"), "one line: \(e)", file: file, line: line)
    }
  }

  func test_consistentDirectory_loads() throws {
    let model = try makeModel(added: [("<|end|>", 60)])
    try Data(#"{"eos_token": "<|end|>", "chat_template": "{{ messages[0].content }}"}"#.utf8)
      .write(to: model.appendingPathComponent("tokenizer_config.json"))
    try Data(#"{"eos_token_id": [2, 60]}"#.utf8).write(to: model.appendingPathComponent("generation_config.json"))
    let loaded = try ModelLoader.load(model.path)
    XCTAssertEqual(loaded.shape.vocab, 61)
    XCTAssertNotNil(loaded.chatTemplate)
    XCTAssertEqual(Set(loaded.eosTokenIDs), [2, 60])
  }

  /// tokenizer_config.json and generation_config.json: present means read, so a file that is
  /// not JSON, not an object, a directory, or has a mistyped key stops the load naming it.
  func test_sideFilesThatDoNotParse_areRefusedNamingTheFile() throws {
    let cases: [(file: String, content: String?, fragment: String)] = [
      ("tokenizer_config.json", #"{"chat_template": "{{ x }}""#, "is not valid JSON"),
      // Foundation accepts the trailing comma; the chat-template reader does not.
      ("tokenizer_config.json", #"{"chat_template": "{{ x }}",}"#, "invalid JSON"),
      ("tokenizer_config.json", #"{"chat_template": "{% for %}"}"#, "tokenizer_config.json"),
      ("chat_template.jinja", "{% if %}", "chat_template.jinja"),
      ("tokenizer_config.json", "[1, 2]", "not a JSON object"),
      ("tokenizer_config.json", nil, "is a directory"),
      ("generation_config.json", "{", "is not valid JSON"),
      ("generation_config.json", #"{"eos_token_id": "two"}"#, "eos_token_id must be an integer"),
    ]
    for c in cases {
      let model = try makeModel()
      let url = model.appendingPathComponent(c.file)
      if let content = c.content {
        try Data(content.utf8).write(to: url)
      } else {
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: false)
      }
      assertRefused(model, [c.file, c.fragment])
    }
  }

  /// Files parsed whole are size-checked before they are read: an oversized (here sparse, so
  /// nothing is really written) config.json, tokenizer_config.json, generation_config.json,
  /// chat_template.jinja, safetensors index or tokenizer.json stops the load naming the file
  /// and the cap, without reading it.
  func test_oversizedFiles_areRefusedBeforeReading() throws {
    let cases: [(file: String, size: Int, cap: String)] = [
      ("config.json", BoundedFile.settings.bytes + 1, "64.0 MiB a settings file may be"),
      ("tokenizer_config.json", BoundedFile.settings.bytes + 1, "64.0 MiB a settings file may be"),
      ("generation_config.json", 1 << 40, "1024.0 GiB, over the 64.0 MiB"),
      ("chat_template.jinja", BoundedFile.settings.bytes + 1, "settings file"),
      ("tokenizer.json", BoundedFile.tokenizer.bytes + 1, "1.0 GiB a tokenizer.json may be"),
      (SafetensorsCheckpoint.indexFileName, BoundedFile.settings.bytes + 1, "settings file"),
    ]
    for c in cases {
      let model = try makeModel()
      let url = model.appendingPathComponent(c.file)
      if c.file == SafetensorsCheckpoint.indexFileName {
        try FileManager.default.removeItem(at: model.appendingPathComponent(SafetensorsCheckpoint.singleFileName))
      }
      FileManager.default.createFile(atPath: url.path, contents: nil)
      let handle = try FileHandle(forWritingTo: url)
      try handle.truncate(atOffset: UInt64(c.size))
      try handle.close()
      assertRefused(model, [c.file, c.cap, "it is not one, or it is corrupt"])
    }
  }

  /// Ids the tokenizer or the configs can produce beyond the 61 embedding rows.
  func test_tokenIDsOutsideTheEmbedding_areRefused() throws {
    assertRefused(try makeModel(added: [("<|im_end|>", 70)]), ["tokenizer.json", "token id 70", "\"<|im_end|>\"",
                                                                "vocabulary of 61"])
    assertRefused(try makeModel(vocab: 64), ["tokenizer.json", "token id 61", "vocabulary of 61"])
    let model = try makeModel()
    try Data(#"{"eos_token_id": 99}"#.utf8).write(to: model.appendingPathComponent("generation_config.json"))
    assertRefused(model, ["EOS token id 99", "vocabulary of 61"])
  }

  /// A weight holding NaN or ±inf is refused at load, naming the tensor and the element —
  /// whether it is uploaded as f32 or handed to a projection builder (QLoRA's NF4).
  func test_nonFiniteWeights_areRefusedNamingTheTensor() throws {
    let loaded = try ModelLoader.load(try makeModel().path)
    let cases: [(String, Float, Bool)] = [
      (ParameterNames.embedding, .nan, false),
      ("model.layers.1.mlp.up_proj.weight", .infinity, true),
      ("model.norm.weight", -.infinity, false),
    ]
    for (name, bad, quantised) in cases {
      let source = PoisonedSource(loaded.weights, tensor: name, element: 5, value: bad)
      let builder: DecoderWeights.ProjectionBaseMaker? = quantised ? { _, values, rows, cols in
        .dense(try TestBackends.cpu.tensor(values, shape: [rows, cols]))
      } : nil
      XCTAssertThrowsError(try DecoderWeights(from: source, shape: loaded.shape, backend: TestBackends.cpu,
                                            projectionBase: builder)) { e in
        XCTAssertTrue("\(e)".hasPrefix(name + ": holds \(bad) at element 5"), "\(e)")
      }
    }
  }
}

/// `base` with one element of one tensor replaced.
private final class PoisonedSource: WeightSource {
  let base: WeightSource, tensor: String, element: Int, value: Float
  init(_ base: WeightSource, tensor: String, element: Int, value: Float) {
    self.base = base; self.tensor = tensor; self.element = element; self.value = value
  }
  var tensorNames: [String] { base.tensorNames }
  func shape(of name: String) throws -> [Int] { try base.shape(of: name) }
  func storedType(of name: String) throws -> String { try base.storedType(of: name) }
  func floats(_ name: String) throws -> [Float] {
    var v = try base.floats(name)
    if name == tensor { v[element] = value }
    return v
  }
}
