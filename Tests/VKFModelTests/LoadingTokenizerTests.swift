import Foundation
import XCTest
@testable import VKFModel
import VKFTokenizer

/// Tokenizers built from GGUF metadata (`GGUFTokenizerBuilder`) against tokenizer.json.
final class LoadingTokenizerTests: XCTestCase {
  /// SmolLM2's embedded tokenizer vs the fixture's ids. llama.cpp's "smollm" pre-tokenizer
  /// splits every digit first; the shared tokenizer.json (plain ByteLevel) does not, which
  /// only matters for a whitespace run before a digit ("a  1": [a, ĠĠ, 1] vs [a, Ġ, Ġ, 1]).
  func test_smolLM2_ggufTokenizer_matchesLlamaCppAndSharedTokenizerJSON() throws {
    let directory = try SmolLM2Golden.sharedModelDirectory()
    let golden = try SmolLM2Golden.load()
    let file = try GGUFFile(path: directory + "/model.Q4_1.gguf")
    let facts = try GGUFTokenizerFacts(file: file)
    XCTAssertEqual(facts.pre, "smollm")
    let built = try GGUFTokenizerBuilder.tokenizer(facts, path: file.path)
    let shared = try Tokenizer(contentsOf: URL(fileURLWithPath: directory + "/tokenizer.json"))
    var divergent = 0
    for entry in golden.corpus {
      XCTAssertEqual(shared.encode(entry.text), entry.ids, "shared tokenizer.json: \(entry.text.debugDescription)")
      XCTAssertEqual(built.encode(entry.text), entry.llamacpp_ids, "GGUF-built: \(entry.text.debugDescription)")
      if entry.ids != entry.llamacpp_ids { divergent += 1 } else {
        XCTAssertEqual(built.encode(entry.text), entry.ids, entry.text.debugDescription)
      }
      XCTAssertEqual(built.decode(entry.llamacpp_ids), entry.text, "decode round trip")
    }
    print("SmolLM2 GGUF tokenizer: \(golden.corpus.count) corpus strings, \(divergent) where llama.cpp's "
      + "digit split differs from the shared tokenizer.json")
    for prompt in golden.prompts where prompt.name == "chat" {
      XCTAssertEqual(built.encode(prompt.text), prompt.ids, "special tokens are recognised")
    }
    XCTAssertEqual(built.bosTokenID, 1)
    XCTAssertEqual(built.eosTokenID, 2)
    XCTAssertEqual(built.specialTokens.count, 17)
  }

  /// Llama 3 ("llama-bpe": split regex, ignore_merges, BOS added) and Qwen2 ("qwen2": NFC,
  /// single digits) rebuilt from the tables a GGUF would hold give tokenizer.json's ids.
  func test_llama3AndQwen2_rebuiltFromTables_matchTokenizerJSON() throws {
    let texts = try SmolLM2Golden.load().corpus.map(\.text)
    for (name, pre, addBOS) in [("llama3", "llama-bpe", true), ("qwen2", "qwen2", false)] {
      let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../VKFTokenizerTests/Fixtures/tokenizers/\(name).json")
      let data = try Data(contentsOf: url)
      let reference = try Tokenizer(json: data)
      let tables = try Self.ggufTables(fromTokenizerJSON: data)
      let json = try GGUFTokenizerBuilder.tokenizerJSON(
        model: "gpt2", pre: pre, tokens: tables.tokens, tokenTypes: tables.types, merges: tables.merges,
        bosTokenID: reference.bosTokenID, addBOS: addBOS, path: name)
      let built = try Tokenizer(json: json)
      for text in texts {
        XCTAssertEqual(built.encode(text), reference.encode(text), "\(name): \(text.debugDescription)")
      }
    }
  }

  func test_sentencePieceModel_isRefusedWithAdvice() {
    XCTAssertThrowsError(try GGUFTokenizerBuilder.tokenizerJSON(
      model: "llama", pre: nil, tokens: ["<unk>"], tokenTypes: nil, merges: nil, bosTokenID: nil,
      addBOS: true, path: "m.gguf")) { error in
      XCTAssertTrue("\(error)".contains("put the model's tokenizer.json beside the .gguf"), "\(error)")
    }
  }

  func test_unknownPreTokenizer_isRefusedWithTheSupportedList() {
    XCTAssertThrowsError(try GGUFTokenizerBuilder.tokenizerJSON(
      model: "gpt2", pre: "deepseek-coder", tokens: ["a"], tokenTypes: nil, merges: [], bosTokenID: nil,
      addBOS: false, path: "m.gguf")) { error in
      XCTAssertTrue("\(error)".contains("deepseek-coder") && "\(error)".contains("smollm"), "\(error)")
    }
  }

  /// tokens by id, GGUF token types (3 for special added tokens, 4 for others, else 1), and
  /// merges as "a b" strings, as convert_hf_to_gguf writes them.
  static func ggufTables(fromTokenizerJSON data: Data) throws
    -> (tokens: [String], types: [Int], merges: [String]) {
    let root = try XCTUnwrap(try JSONSerialization.jsonObject(with: data) as? [String: Any])
    let model = try XCTUnwrap(root["model"] as? [String: Any])
    let vocab = try XCTUnwrap(model["vocab"] as? [String: Int])
    let added = (root["added_tokens"] as? [[String: Any]]) ?? []
    let count = max(vocab.values.max() ?? -1, added.compactMap { $0["id"] as? Int }.max() ?? -1) + 1
    var tokens = [String](repeating: "", count: count), types = [Int](repeating: 1, count: count)
    for (token, id) in vocab { tokens[id] = token }
    for entry in added {
      guard let id = entry["id"] as? Int, let content = entry["content"] as? String else { continue }
      tokens[id] = content
      types[id] = (entry["special"] as? Bool ?? false) ? 3 : 4
    }
    let merges = try XCTUnwrap(model["merges"] as? [Any]).map { merge -> String in
      if let s = merge as? String { return s }
      return ((merge as? [String]) ?? []).joined(separator: " ")
    }
    return (tokens, types, merges)
  }
}
