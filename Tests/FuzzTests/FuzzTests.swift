import Foundation
import XCTest
import VKFData
@testable import VKFModel
import VKFTokenizer

/// Seeded fuzzing of every loader that reads a file a user (or a download) hands us: the
/// safetensors header and offsets, the GGUF reader (metadata, tensor table, dequantisation,
/// its tokenizer facts), tokenizer.json, tokenizer_config.json / config.json, the Jinja chat
/// template parser and interpreter, and the JSON / JSONL data readers. Each target must end
/// every input with a result or a thrown error — never a trap, a hang or an allocation past
/// the file's size. `tools/fuzz [seconds]` runs the same targets for longer with fresh seeds;
/// the crashing inputs it finds are kept in `Regressions/<target>/` and replayed here.
final class FuzzTests: XCTestCase {
  /// The repository's Tests directory (seeds are the other targets' fixtures, read in place).
  static let tests = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()

  /// The bytes of `paths` under Tests/, plus every regression input of `target`.
  static func corpus(_ target: String, _ paths: [String]) throws -> [[UInt8]] {
    var out = try paths.map { [UInt8](try Data(contentsOf: tests.appendingPathComponent($0))) }
    out += regressions(target)
    return out
  }

  /// Inputs that once crashed or hung `target`, found by tools/fuzz.
  static func regressions(_ target: String) -> [[UInt8]] {
    let dir = tests.appendingPathComponent("FuzzTests/Regressions/\(target)")
    let names = ((try? FileManager.default.contentsOfDirectory(atPath: dir.path)) ?? []).sorted()
    return names.compactMap { FileManager.default.contents(atPath: dir.appendingPathComponent($0).path).map { [UInt8]($0) } }
  }

  /// A scratch file per test for loaders that read paths.
  private var scratch: URL!
  override func setUpWithError() throws {
    scratch = FileManager.default.temporaryDirectory.appendingPathComponent("vkf-fuzz-\(UUID())")
    try FileManager.default.createDirectory(at: scratch, withIntermediateDirectories: true)
  }
  override func tearDown() { try? FileManager.default.removeItem(at: scratch) }

  private func fuzz(_ name: String, seeds: [[UInt8]], dictionary: [String], _ body: ([UInt8]) -> Void) {
    let result = FuzzRun(name: name, seeds: seeds, dictionary: dictionary).run(body)
    print("fuzz \(name): \(result.inputs) inputs")
    XCTAssertGreaterThan(result.inputs, 0)
    XCTAssertEqual(result.slow, [], "\(name): inputs slower than \(FuzzRun.slowSeconds) s")
  }

  func test_fuzz_safetensors() throws {
    let seeds = try Self.corpus("safetensors", ["VKFModelTests/Fixtures/safetensors/python_small.safetensors"])
    let file = scratch.appendingPathComponent("model.safetensors")
    fuzz("safetensors", seeds: seeds, dictionary: ["\"dtype\"", "\"shape\"", "\"data_offsets\"", "\"F32\"", "\"F16\"",
                                                    "\"BF16\"", "\"I64\"", "\"U8\"", "__metadata__", "[", "]", "{", "}",
                                                    ",", ":", "[0,0]", "[]", "\"\"", "null", "1e308"]) { input in
      try? Data(input).write(to: file)
      guard let f = try? SafetensorsFile(contentsOf: file) else { return }
      for name in f.tensorNames { _ = try? f.floats(name) }
    }
  }

  func test_fuzz_gguf() throws {
    let seeds = try Self.corpus("gguf", ["VKFModelTests/Fixtures/gguf/synthetic.gguf"])
    fuzz("gguf", seeds: seeds, dictionary: ["GGUF", "general.architecture", "llama", "tokenizer.ggml.tokens",
                                             "tokenizer.ggml.model", "gpt2", "tokenizer.ggml.merges",
                                             "tokenizer.ggml.scores", "llama.block_count", "general.alignment"]) { input in
      guard let f = try? GGUFFile(bytes: input, path: "fuzz.gguf") else { return }
      for t in f.tensors.prefix(16) { _ = try? GGUFWeightSource.dequantize(t, in: f) }
      if let facts = try? GGUFTokenizerFacts(file: f) { _ = facts }
    }
  }

  func test_fuzz_tokenizerJSON() throws {
    let seeds = try Self.corpus("tokenizer", ["VKFTokenizerTests/Fixtures/tokenizers/llama3.json",
                                              "VKFTokenizerTests/Fixtures/tokenizers/llama2.json",
                                              "VKFTokenizerTests/Fixtures/tokenizers/added.json"])
    fuzz("tokenizer", seeds: seeds, dictionary: ["\"model\"", "\"vocab\"", "\"merges\"", "\"added_tokens\"",
                                                  "\"pre_tokenizer\"", "\"normalizer\"", "\"decoder\"", "\"type\"",
                                                  "\"BPE\"", "\"ByteLevel\"", "\"Split\"", "\"Regex\"", "\"id\"",
                                                  "\"special\"", "\"pattern\"", "(?i:", "\\\\p{L}", "[", "]", "{", "}",
                                                  "null", "-1", "99999999999"]) { input in
      guard let tok = try? Tokenizer(json: Data(input)) else { return }
      let ids = tok.encode("Hello, wörld! 123 <|im_start|> 漢字 🦙")
      _ = tok.decode(ids + [-1, Int(Int32.max)])
    }
  }

  func test_fuzz_modelConfigs() throws {
    let seeds = try Self.corpus("config", ["VKFModelTests/Fixtures/configs/smollm2-135m-instruct.json",
                                           "VKFModelTests/Fixtures/configs/llama-3.1-8b-instruct.json",
                                           "VKFModelTests/Fixtures/configs/rope-parameters-llama3.json"])
    let dir = scratch.appendingPathComponent("model")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    fuzz("config", seeds: seeds, dictionary: ["\"hidden_size\"", "\"num_attention_heads\"", "\"num_key_value_heads\"",
                                               "\"intermediate_size\"", "\"rope_scaling\"", "\"rope_type\"", "\"yarn\"",
                                               "\"llama3\"", "\"factor\"", "\"head_dim\"", "\"vocab_size\"",
                                               "\"chat_template\"", "\"eos_token\"", "\"eos_token_id\"", "0", "-1",
                                               "1e999", "null", "[]", "{}"]) { input in
      // The same bytes as config.json, tokenizer_config.json and generation_config.json.
      for name in ["config.json", "tokenizer_config.json", "generation_config.json"] {
        try? Data(input).write(to: dir.appendingPathComponent(name))
      }
      if let config = try? DecoderConfig.load(from: dir.appendingPathComponent("config.json")) {
        _ = try? TransformerShape(config: config)
      }
      _ = try? ModelLoader.siblingChatTemplate(in: dir)
      _ = try? ModelLoader.generationEOS(in: dir)
    }
  }

  func test_fuzz_chatTemplate() throws {
    let dir = "VKFTokenizerTests/Fixtures/chat/templates/"
    let seeds = try Self.corpus("chat_template", ["smollm2.jinja", "llama31.jinja", "qwen25.jinja", "zephyr.jinja"]
      .map { dir + $0 })
    let messages: [ChatMessage] = [ChatMessage(role: "system", content: "Be brief."),
                                   ChatMessage(role: "user", content: "Hi {{ there }}"),
                                   ChatMessage(role: "assistant", content: "Hello.")]
    fuzz("chat_template", seeds: seeds, dictionary: ["{%", "%}", "{{", "}}", "{#", "#}", " for x in range(99999) ",
                                                      " endfor ", " if ", " endif ", " macro m() ", " endmacro ",
                                                      "m()", " set s = s ~ s ", "'x' * 99999999", "loop.index",
                                                      "messages", "|tojson", "|indent(99999999)", "|center(-9)",
                                                      "9223372036854775807", "** 99", "(", ")", "[", "]", "|int",
                                                      "namespace(", "raise_exception('x')", "recursive"]) { input in
      guard let template = try? ChatTemplate(source: String(decoding: input, as: UTF8.self)) else { return }
      _ = try? template.render(messages: messages, addGenerationPrompt: true, bosToken: "<s>", eosToken: "</s>")
    }
  }

  func test_fuzz_dataFiles() throws {
    let dir = "VKFDataTests/Fixtures/"
    let seeds = try Self.corpus("data", ["alpaca.json", "messages.jsonl", "sharegpt.jsonl", "prompt_response.jsonl",
                                         "text.jsonl", "malformed.jsonl"].map { dir + $0 })
    fuzz("data", seeds: seeds, dictionary: ["\"instruction\"", "\"input\"", "\"output\"", "\"messages\"", "\"role\"",
                                             "\"content\"", "\"conversations\"", "\"from\"", "\"value\"", "\"chosen\"",
                                             "\"rejected\"", "\"prompt\"", "\"text\"", "\n", "\\u0000", "\\ud800",
                                             "null", "[", "{"]) { input in
      for skip in [false, true] {
        guard let loaded = try? DatasetLoader.parse(Data(input), file: "fuzz.jsonl", skipBadRecords: skip) else { continue }
        for (i, r) in loaded.records.prefix(64).enumerated() {
          _ = try? DatasetFormat.normalise(r, file: "fuzz.jsonl", index: i)
          _ = try? PreferenceRecord.normalise(r, file: "fuzz.jsonl", index: i)
        }
      }
    }
  }
}
