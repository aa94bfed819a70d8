// Golden tests: every fixture tokenizer × every corpus string must equal HF `tokenizers`.
// Fixtures come from tools/make_tokenizer_fixtures.py (tokenizers 0.23).
import Foundation
import XCTest
@testable import VKFTokenizer

/// HF's answers for one tokenizer, as tools/make_tokenizer_fixtures.py writes them.
struct ExpectedTokenizer: Decodable {
  /// One corpus string's expected results.
  struct Case: Decodable {
    /// `encode(s, add_special_tokens=False).ids`.
    let ids: [Int]
    /// `decode(prefix + ids + suffix)` when it differs from the input.
    let decoded: String?
    /// Same with `skip_special_tokens=True`, when it differs from the input.
    let decoded_skip: String?
  }
  /// Ids the post-processor puts before the sequence.
  let prefix: [Int]
  /// Ids the post-processor puts after the sequence.
  let suffix: [Int]
  /// One case per corpus string, in corpus order.
  let cases: [Case]
}

/// Fixture access shared by the tokenizer tests.
enum TokenizerFixtures {
  /// Fixtures/tokenizers inside the test bundle.
  static var directory: URL {
    get throws {
      guard let url = Bundle.module.url(forResource: "Fixtures", withExtension: nil) else {
        throw XCTSkip("Fixtures folder missing from the test bundle")
      }
      return url.appendingPathComponent("tokenizers")
    }
  }

  /// The shared SmolLM2 tokenizer.json, read in place (3.5 MB, not copied into the repo).
  static let smolLM2 = URL(fileURLWithPath: #filePath)
    .deletingLastPathComponent()
    .appendingPathComponent("../../../shared/models/smollm2-135m-instruct/tokenizer.json")
    .standardized

  /// The ~170 corpus strings. JSONDecoder, not JSONSerialization: the latter drops a leading U+FEFF.
  static func corpus() throws -> [String] {
    try JSONDecoder().decode([String].self, from: Data(contentsOf: directory.appendingPathComponent("corpus.json")))
  }

  /// HF's expected results, by tokenizer name.
  static func expected() throws -> [String: ExpectedTokenizer] {
    struct File: Decodable { let tokenizers: [String: ExpectedTokenizer] }
    return try JSONDecoder().decode(File.self, from: Data(contentsOf: directory.appendingPathComponent("expected.json")))
      .tokenizers
  }

  /// Loads fixture `name`.json.
  static func tokenizer(_ name: String) throws -> Tokenizer {
    try Tokenizer(contentsOf: directory.appendingPathComponent("\(name).json"))
  }
}

final class TokenizerGoldenTests: XCTestCase {
  private static let corpus = Result { try TokenizerFixtures.corpus() }
  private static let expected = Result { try TokenizerFixtures.expected() }
  /// Parsed once: the 3.5 MB file costs ~0.5 s in a debug build.
  private static let smolLM2 = Result { try Tokenizer(contentsOf: TokenizerFixtures.smolLM2) }

  /// Compares `tok` with HF on the whole corpus; reports the first mismatch as token pieces.
  private func assertMatchesHF(_ tok: Tokenizer, _ name: String, file: StaticString = #filePath, line: UInt = #line) throws {
    let corpus = try Self.corpus.get()
    guard let exp = try Self.expected.get()[name] else { return XCTFail("no expectations for \(name)", file: file, line: line) }
    XCTAssertEqual(corpus.count, exp.cases.count, file: file, line: line)
    var encodeOK = 0, decodeOK = 0
    var failures: [String] = []
    for (s, c) in zip(corpus, exp.cases) {
      let plain = tok.encode(s, addSpecialTokens: false)
      let full = tok.encode(s)
      if plain == c.ids && full == exp.prefix + c.ids + exp.suffix {
        encodeOK += 1
      } else if failures.count < 3 {
        let pieces = { (ids: [Int]) in ids.map { tok.token(for: $0) ?? "<\($0)?>" } }
        failures.append("""
          \(name): encode mismatch for \(s.debugDescription)
            HF:    \(pieces(exp.prefix + c.ids + exp.suffix))
            Swift: \(pieces(full))
          """)
      }
      let withSpecials = exp.prefix + c.ids + exp.suffix
      let d = tok.decode(withSpecials), dSkip = tok.decode(withSpecials, skipSpecialTokens: true)
      if d == (c.decoded ?? s) && dSkip == (c.decoded_skip ?? s) {
        decodeOK += 1
      } else if failures.count < 3 {
        failures.append("\(name): decode mismatch for \(s.debugDescription): "
          + "\(d.debugDescription) / \(dSkip.debugDescription), HF \((c.decoded ?? s).debugDescription)")
      }
    }
    for f in failures { XCTFail(f, file: file, line: line) }
    XCTAssertEqual(encodeOK, corpus.count, "\(name): \(encodeOK)/\(corpus.count) encodings equal HF", file: file, line: line)
    XCTAssertEqual(decodeOK, corpus.count, "\(name): \(decodeOK)/\(corpus.count) decodes equal HF", file: file, line: line)
  }

  func testLlama3Style_splitRegexByteLevel_matchesHF() throws {
    try assertMatchesHF(TokenizerFixtures.tokenizer("llama3"), "llama3")
  }

  func testQwen2Style_nfcSplitRegexLegacyMerges_matchesHF() throws {
    try assertMatchesHF(TokenizerFixtures.tokenizer("qwen2"), "qwen2")
  }

  func testLlama2Style_prependReplaceByteFallbackBOS_matchesHF() throws {
    try assertMatchesHF(TokenizerFixtures.tokenizer("llama2"), "llama2")
  }

  func testMistralStyle_metaspaceFirstBOSAndEOS_matchesHF() throws {
    try assertMatchesHF(TokenizerFixtures.tokenizer("mistral"), "mistral")
  }

  func testAddedTokens_lstripRstripSingleWordNormalized_matchHF() throws {
    try assertMatchesHF(TokenizerFixtures.tokenizer("added"), "added")
  }

  func testMisc_nfkcPunctuationDigitsSubwordPrefixUnk_matchesHF() throws {
    try assertMatchesHF(TokenizerFixtures.tokenizer("misc"), "misc")
  }

  func testSplits_everySplitBehaviourAndWhitespace_matchHF() throws {
    try assertMatchesHF(TokenizerFixtures.tokenizer("splits"), "splits")
  }

  /// WordPiece with BertNormalizer (control characters dropped, CJK ideographs spaced,
  /// accents stripped, lowercase), BertPreTokenizer, [CLS] … [SEP] and the WordPiece decoder's
  /// cleanup, on a small trained vocabulary where [UNK] and long ## chains are common.
  func testBert_wordPieceBertNormalizer_matchesHF() throws {
    let tok = try TokenizerFixtures.tokenizer("bert")
    try assertMatchesHF(tok, "bert")
    let unk = try XCTUnwrap(tok.tokenID(for: "[UNK]"))
    let expected = try XCTUnwrap(try Self.expected.get()["bert"])
    XCTAssertTrue(expected.cases.contains { $0.ids.contains(unk) }, "the corpus reaches [UNK]")
    XCTAssertTrue(expected.cases.contains { c in c.ids.contains { tok.token(for: $0)?.hasPrefix("##") == true } })
  }

  /// The real BERT tokenizer of all-MiniLM-L6-v2 (bert-base-uncased's 30 522 WordPieces).
  func testMiniLM_realBertTokenizer_matchesHF() throws {
    let tok = try TokenizerFixtures.tokenizer("minilm")
    try assertMatchesHF(tok, "minilm")
    XCTAssertEqual(tok.vocabularySize, 30522)
    XCTAssertEqual(tok.bosTokenID, 101, "[CLS] leads the template")
    XCTAssertEqual(tok.encode("Hello, world!"), [101, 7592, 1010, 2088, 999, 102])
  }

  func testSmolLM2_realTokenizer_matchesHF() throws {
    let url = TokenizerFixtures.smolLM2
    guard FileManager.default.fileExists(atPath: url.path) else {
      throw XCTSkip("SmolLM2 tokenizer not found at \(url.path); shared models are not checked out")
    }
    let tok = try Self.smolLM2.get()
    try assertMatchesHF(tok, "smollm2")
    // tokenizer_config.json beside it names bos <|im_start|> and eos <|im_end|>.
    XCTAssertEqual(tok.bosTokenID, 1)
    XCTAssertEqual(tok.eosTokenID, 2)
    XCTAssertEqual(tok.vocabularySize, 49152)
    XCTAssertEqual(tok.tokenID(for: "<|im_end|>"), 2)
    XCTAssertEqual(tok.token(for: 2), "<|im_end|>")
    XCTAssertTrue(tok.specialTokens.contains("<|im_start|>"))
  }

  func testByteLevel_decodeOfEncode_roundTripsCorpus() throws {
    var tokenizers = [("llama3", try TokenizerFixtures.tokenizer("llama3"))]
    if FileManager.default.fileExists(atPath: TokenizerFixtures.smolLM2.path) {
      tokenizers.append(("smollm2", try Self.smolLM2.get()))
    }
    let qwen = try TokenizerFixtures.tokenizer("qwen2")
    for s in try Self.corpus.get() {
      for (name, tok) in tokenizers {
        XCTAssertEqual(tok.decode(tok.encode(s, addSpecialTokens: false)), s, "\(name): \(s.debugDescription)")
      }
      // Qwen2 normalizes to NFC first, so it round-trips to the NFC form.
      XCTAssertEqual(qwen.decode(qwen.encode(s)), s.precomposedStringWithCanonicalMapping, s.debugDescription)
    }
  }
}
