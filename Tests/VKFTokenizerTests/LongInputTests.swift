import Foundation
import XCTest
@testable import VKFTokenizer

/// Inputs of a size no real record has — hundreds of kilobytes in one answer, one enormous unbroken
/// word, a megabyte of one repeated character — tokenize in time and memory linear in their
/// length (the pre-tokenizer scans once, BPE merges through a heap) and round-trip exactly.
/// A quadratic step would turn each case into minutes, far past the suite's budget.
final class LongInputTests: XCTestCase {
  /// The size of each hostile input: 256 KiB (a quadratic step at this length is ~10¹⁰
  /// operations, minutes; measured linear here: 256 KiB → 2 MiB of spaces takes 7.6× as long
  /// for 8× the bytes in a debug build).
  static let bytes = 1 << 18

  func test_megabyteInputs_roundTrip() throws {
    let tok = try Tokenizer(contentsOf: TokenizerFixtures.smolLM2)
    var rng = SystemRandomNumberGenerator()
    let letters = Array("abcdefghijklmnopqrstuvwxyz".unicodeScalars)
    let randomWord = String(String.UnicodeScalarView((0..<Self.bytes).map { _ in letters[Int.random(in: 0..<26, using: &rng)] }))
    let sentence = "The quick brown fox jumps over the lazy dog, 1234 times; ünïcödé — 漢字. "
    let prose = String(repeating: sentence, count: Self.bytes / sentence.utf8.count)
    let cases: [(String, String)] = [("one unbroken random word", randomWord),
                                     ("one repeated letter", String(repeating: "a", count: Self.bytes)),
                                     ("repeated spaces", String(repeating: " ", count: Self.bytes)),
                                     ("prose", prose),
                                     ("one emoji repeated", String(repeating: "🦙", count: Self.bytes / 4))]
    for (name, text) in cases {
      let ids = tok.encode(text, addSpecialTokens: false)
      XCTAssertFalse(ids.isEmpty, name)
      XCTAssertLessThanOrEqual(ids.count, text.utf8.count, "\(name): at most one token per byte")
      XCTAssertEqual(tok.decode(ids), text, "\(name) round-trips")
    }
  }
}
