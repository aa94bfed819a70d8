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

  /// Llama 2's SentencePiece BPE, written as the GGUF tables llama.cpp's converter would
  /// (tokens by id, scores = −id, types 2/3/6/1), then read back through a real GGUF and
  /// `GGUFTokenizerFacts`, gives tokenizer.json's ids and decodings on the whole corpus.
  ///
  /// The fixture's ids follow its merge order (merge k makes token 379 + k), so −id ranks
  /// merged tokens as the trainer did. The derived merges are a superset of the fixture's
  /// (294 extra splits such as both "ab c" and "a bc" for "abc"); SentencePiece and
  /// transformers' GGUF loader both accept any split whose halves are tokens.
  func test_llama2_sentencePieceFromGGUFTables_matchesTokenizerJSON() throws {
    let data = try Data(contentsOf: Self.fixture("llama2"))
    let reference = try Tokenizer(json: data)
    let file = try Self.sentencePieceGGUF(fromTokenizerJSON: data)
    let facts = try GGUFTokenizerFacts(file: file)
    XCTAssertEqual(facts.model, "llama")
    XCTAssertNil(facts.merges)
    let built = try GGUFTokenizerBuilder.tokenizer(facts, path: file.path)
    XCTAssertEqual(built.bosTokenID, 1)
    XCTAssertEqual(built.eosTokenID, 2)
    XCTAssertEqual(built.specialTokens, ["<unk>", "<s>", "</s>"])

    var texts = try Self.corpus()
    texts += ["<s>[INST] hi [/INST] ok</s>", "\u{FEFF}bom", "▁literal ▁ marks", "\u{1F600}\u{E000}"]
    var divergent: [String] = []
    for text in texts {
      let ids = reference.encode(text)
      if built.encode(text) != ids { divergent.append(text) }
      XCTAssertEqual(built.encode(text), ids, text.debugDescription)
      XCTAssertEqual(built.decode(ids), reference.decode(ids), "decode: \(text.debugDescription)")
      XCTAssertEqual(built.decode(ids, skipSpecialTokens: true), reference.decode(ids, skipSpecialTokens: true))
    }
    print("llama2 SentencePiece from GGUF tables: \(texts.count) strings, \(divergent.count) differ: \(divergent)")
  }

  /// Merges come from every two-token split of a token, ranked by the merged token's score
  /// (stable), splits of one token by (left score, right score) descending; byte fallback
  /// covers characters outside the vocabulary; add_eos_token appends EOS.
  func test_sentencePieceMerges_rankByScoreThenSplitScores() throws {
    let tokens = ["<unk>", "<s>", "</s>", "<0xC3>", "<0xA9>", "▁", "a", "b", "c", "ab", "bc", "▁ab", "abc", "▁abc"]
    let scores: [Float] = [0, 0, 0, 0, 0, -100, -101, -102, -103, -1, -2, -3, -4, -5]
    let merges = GGUFTokenizerBuilder.sentencePieceMerges(tokens: tokens, scores: scores)
    XCTAssertEqual(merges.map { "\($0.left) \($0.right)" },
                   ["a b", "b c", "▁ ab", "ab c", "a bc", "▁ab c", "▁ abc"])
    let types = [2, 3, 3, 6, 6] + [Int](repeating: 1, count: tokens.count - 5)
    let json = try GGUFTokenizerBuilder.tokenizerJSON(
      model: "llama", pre: nil, tokens: tokens, tokenTypes: types, merges: nil, bosTokenID: 1, addBOS: true,
      path: "m.gguf", scores: scores, unknownTokenID: 0, eosTokenID: 2, addEOS: true)
    let built = try Tokenizer(json: json)
    // "é" is not a token: its UTF-8 bytes fall back to <0xC3> <0xA9>; "d" has no byte token → <unk>.
    XCTAssertEqual(built.encode("abc é"), [1, 13, 5, 3, 4, 2])
    XCTAssertEqual(built.encode("dd"), [1, 5, 0, 2], "unknowns fuse")
    XCTAssertEqual(built.decode([1, 13, 5, 3, 4, 2], skipSpecialTokens: true), "abc é")
  }

  func test_sentencePieceModel_withoutScoresOrMerges_isRefusedWithAdvice() {
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

  /// The tokenizer fixture `name`.json of VKFTokenizerTests.
  static func fixture(_ name: String) -> URL {
    URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .appendingPathComponent("../VKFTokenizerTests/Fixtures/tokenizers/\(name).json")
  }

  /// The shared tokenizer corpus, read with JSONDecoder (JSONSerialization drops U+FEFF).
  static func corpus() throws -> [String] {
    try JSONDecoder().decode([String].self, from: Data(contentsOf: fixture("corpus")))
  }

  /// An in-memory GGUF holding a SentencePiece tokenizer.json as llama.cpp's converter writes
  /// it: tokens by id, scores −id, types 2 (unk), 3 (other special), 6 (<0xNN>), else 1; no merges.
  static func sentencePieceGGUF(fromTokenizerJSON data: Data) throws -> GGUFFile {
    let tables = try ggufTables(fromTokenizerJSON: data)
    let isByte = { (t: String) in t.count == 6 && t.hasPrefix("<0x") && t.hasSuffix(">") }
    let types = zip(tables.tokens, tables.types).map { token, type in
      token == "<unk>" ? 2 : type == 3 ? 3 : isByte(token) ? 6 : 1
    }
    var writer = GGUFWriter(architecture: "llama")
    writer.set("tokenizer.ggml.model", .string("llama"))
    writer.set("tokenizer.ggml.tokens", .array(elementType: .string, tables.tokens.map { .string($0) }))
    writer.set("tokenizer.ggml.scores", .array(elementType: .float32, tables.tokens.indices.map { .float32(-Float($0)) }))
    writer.set("tokenizer.ggml.token_type", .array(elementType: .int32, types.map { .int32(Int32($0)) }))
    writer.set("tokenizer.ggml.unknown_token_id", .uint32(0))
    writer.set("tokenizer.ggml.bos_token_id", .uint32(1))
    writer.set("tokenizer.ggml.eos_token_id", .uint32(2))
    return try GGUFFile(bytes: writer.headerBytes(), path: "llama2.gguf")
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
