// Loading tests: the public API's metadata, and clear errors for malformed tokenizer.json.
import Foundation
import XCTest
@testable import VKFTokenizer

final class TokenizerLoadingTests: XCTestCase {
  /// A minimal valid BPE tokenizer.json with `model` fields overridden.
  private func json(model: [String: Any] = [:], extra: [String: Any] = [:]) throws -> Data {
    var m: [String: Any] = ["type": "BPE", "vocab": ["a": 0, "b": 1, "ab": 2], "merges": ["a b"]]
    m.merge(model) { $1 }
    var root: [String: Any] = ["version": "1.0", "model": m]
    root.merge(extra) { $1 }
    return try JSONSerialization.data(withJSONObject: root)
  }

  private func assertThrows(_ data: Data, _ check: (TokenizerError) -> Bool, _ message: String,
                            file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertThrowsError(try Tokenizer(json: data), file: file, line: line) { error in
      guard let e = error as? TokenizerError else { return XCTFail("not a TokenizerError: \(error)", file: file, line: line) }
      XCTAssertTrue(check(e), "unexpected error: \(e)", file: file, line: line)
      XCTAssertTrue(e.description.contains(message), "message '\(e.description)' lacks '\(message)'", file: file, line: line)
    }
  }

  func testMinimalBPE_mergesAndPairFormat_encode() throws {
    let tok = try Tokenizer(json: json())
    XCTAssertEqual(tok.encode("abba"), [2, 1, 0])
    let pairs = try Tokenizer(json: json(model: ["merges": [["a", "b"]]]))
    XCTAssertEqual(pairs.encode("ab"), [2])
    XCTAssertEqual(tok.decode([2, 1]), "ab b")  // no decoder: HF joins tokens with spaces
    XCTAssertEqual(tok.vocabularySize, 3)
    XCTAssertNil(tok.bosTokenID)
  }

  func testRawByteOrderMarkInVocab_isKept() throws {
    // JSONSerialization alone would turn the raw "\u{FEFF}" key into "".
    let text = "{\"model\":{\"type\":\"BPE\",\"vocab\":{\"\u{FEFF}\":0,\"x\":1,\"\u{FEFF}x\":2},\"merges\":[\"\u{FEFF} x\"]}}"
    let tok = try Tokenizer(json: Data(([0xEF, 0xBB, 0xBF] as [UInt8]) + Array(text.utf8)))
    XCTAssertEqual(tok.encode("\u{FEFF}x\u{FEFF}"), [2, 0])
    XCTAssertEqual(tok.token(for: 0), "\u{FEFF}")
  }

  func testNotJSON_throwsNotJSON() {
    assertThrows(Data("vocab: [".utf8), { if case .notJSON = $0 { return true } else { return false } }, "not a JSON object")
    assertThrows(Data("[1, 2]".utf8), { if case .notJSON = $0 { return true } else { return false } }, "not a JSON object")
  }

  func testUnknownModelType_throwsUnsupported() throws {
    assertThrows(try json(model: ["type": "Unigram"]), { $0 == .unsupported(component: "model", type: "Unigram") },
                 "model type 'Unigram'")
  }

  func testMergeWithUnknownToken_throwsNamingTheToken() throws {
    assertThrows(try json(model: ["merges": ["a b", "b zz"]]),
                 { $0 == .unknownMergeToken(merge: "b zz", token: "zz") }, "'zz', which is not in model.vocab")
    assertThrows(try json(model: ["merges": ["b a"]]),
                 { $0 == .unknownMergeToken(merge: "b a", token: "ba") }, "'ba'")
  }

  func testMissingVocabAndUnsupportedComponents_throwClearErrors() throws {
    assertThrows(try JSONSerialization.data(withJSONObject: ["model": ["type": "BPE", "merges": []]]),
                 { if case .malformed(field: "model.vocab", _) = $0 { return true } else { return false } }, "model.vocab")
    assertThrows(try json(extra: ["normalizer": ["type": "Precompiled"]]),
                 { $0 == .unsupported(component: "normalizer", type: "Precompiled") }, "normalizer type 'Precompiled'")
    assertThrows(try json(extra: ["pre_tokenizer": ["type": "Split", "pattern": ["Regex": "(unclosed"],
                                                    "behavior": "Isolated", "invert": false]]),
                 { if case .badPattern = $0 { return true } else { return false } }, "(unclosed")
  }

  /// Loading a file names it in every error: a malformed field reads "<path>: field … is
  /// malformed", not just "tokenizer.json".
  func testMalformedFile_errorNamesThePath() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vkf-tok-\(UUID())")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let url = dir.appendingPathComponent("tokenizer.json")
    try JSONSerialization.data(withJSONObject: ["model": ["type": "BPE", "vocab": 5]]).write(to: url)
    XCTAssertThrowsError(try Tokenizer(contentsOf: url)) { error in
      guard case .inFile(let path, .malformed(field: "model.vocab", _))? = error as? TokenizerError else {
        return XCTFail("\(error)")
      }
      XCTAssertEqual(path, url.path)
      XCTAssertTrue("\(error)".hasPrefix(url.path + ": field 'model.vocab' is malformed"), "\(error)")
    }
  }

  func testMissingFile_throwsUnreadable() {
    XCTAssertThrowsError(try Tokenizer(contentsOf: URL(fileURLWithPath: "/nonexistent/tokenizer.json"))) { error in
      guard case .unreadable(let path, _)? = error as? TokenizerError else { return XCTFail("\(error)") }
      XCTAssertEqual(path, "/nonexistent/tokenizer.json")
    }
  }

  func testLlama2Fixture_metadataAndSpecialTokenSkipping() throws {
    let tok = try TokenizerFixtures.tokenizer("llama2")
    XCTAssertEqual(tok.bosTokenID, 1)
    XCTAssertEqual(tok.eosTokenID, 2)  // no template suffix: falls back to "</s>"
    XCTAssertEqual(tok.tokenID(for: "<0x0A>"), 13)
    XCTAssertEqual(tok.token(for: 1), "<s>")
    XCTAssertEqual(tok.specialTokens, ["<unk>", "<s>", "</s>"])
    let ids = tok.encode("Hi</s>")
    XCTAssertEqual(ids.first, 1)
    XCTAssertEqual(ids.last, 2)
    XCTAssertEqual(tok.decode(ids, skipSpecialTokens: true), "Hi")
    XCTAssertNil(tok.token(for: -1))
    XCTAssertNil(tok.token(for: 1 << 20))
  }
}
