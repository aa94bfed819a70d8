import XCTest
@testable import VKFData

/// BERT's masking: the share of masked ordinary tokens, the 80/10/10 split, specials never
/// masked, long records split into [CLS] … [SEP] pieces, and the same masks for the same seed.
final class MaskedLMDataTests: XCTestCase {
  let special = MaskedLMDataset.SpecialTokens(cls: 1, sep: 2, mask: 3, all: [0, 4])

  /// Ids 5…104 repeated, with the special 4 sprinkled in.
  private func encode(_ s: String) -> [Int] {
    (0..<Int(s.count)).map { $0 % 50 == 7 ? 4 : 5 + $0 % 100 }
  }

  func test_masking_sharesAndSpecials() throws {
    let records: [DatasetRecord] = (0..<200).map { _ in ["text": String(repeating: "x", count: 500)] }
    let d = try MaskedLMDataset.make(records, file: "f", maxLength: 128, special: special, vocabulary: 1000,
                                     seed: 9, encode: encode)
    XCTAssertEqual(d.split, 200)
    XCTAssertEqual(d.examples.count, 200 * 4)  // 500 tokens in pieces of 126
    var ordinary = 0, masked = 0, asMask = 0, kept = 0
    for e in d.examples {
      XCTAssertEqual(e.inputIds.first, 1); XCTAssertEqual(e.inputIds.last, 2)
      XCTAssertLessThanOrEqual(e.inputIds.count, 128)
      for (k, t) in e.targets.enumerated() {
        if t == TokenizedExample.ignoreIndex { continue }
        XCTAssertFalse([0, 1, 2, 3, 4].contains(t), "special id \(t) chosen")
        masked += 1
        if e.inputIds[k] == 3 { asMask += 1 } else if e.inputIds[k] == t { kept += 1 }
      }
      ordinary += e.inputIds.count - 2
    }
    XCTAssertEqual(masked, d.maskedTokens)
    // 100 000 tokens: the shares are within ±1 % (several standard deviations) of 15 / 80 / 10.
    XCTAssertEqual(Double(masked) / Double(ordinary), 0.15, accuracy: 0.01)
    XCTAssertEqual(Double(asMask) / Double(masked), 0.8, accuracy: 0.01)
    XCTAssertEqual(Double(kept) / Double(masked), 0.1 + 0.1 / 1000, accuracy: 0.01)
    let again = try MaskedLMDataset.make(records, file: "f", maxLength: 128, special: special, vocabulary: 1000,
                                         seed: 9, encode: encode)
    XCTAssertEqual(again.examples, d.examples)
    let other = try MaskedLMDataset.make(records, file: "f", maxLength: 128, special: special, vocabulary: 1000,
                                         seed: 10, encode: encode)
    XCTAssertNotEqual(other.examples, d.examples)
  }

  func test_badInput_isNamed() {
    XCTAssertThrowsError(try MaskedLMDataset.make([["label": 1]], file: "t.jsonl", maxLength: 16, special: special,
                                                  vocabulary: 10, seed: 0, encode: encode)) {
      XCTAssertTrue("\($0)".hasPrefix("t.jsonl: record 1: has no \"text\""), "\($0)")
    }
    XCTAssertThrowsError(try MaskedLMDataset.make([], file: "t", maxLength: 16, special: special, vocabulary: 10,
                                                  probability: 1, seed: 0, encode: encode))
  }
}
