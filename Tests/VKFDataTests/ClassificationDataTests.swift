import Foundation
import XCTest
@testable import VKFData

/// Labelled sentences: label inference (integers, strings, the model's names), the label at
/// target 0, truncation that keeps the final special token, and the refusals by record.
final class ClassificationDataTests: XCTestCase {
  /// A stand-in tokenizer: [CLS]=1, one id per word (its length + 10), [SEP]=2.
  private func encode(_ s: String) -> [Int] { [1] + s.split(separator: " ").map { $0.count + 10 } + [2] }

  func test_labels_integersStringsAndModelNames() throws {
    let ints: [DatasetRecord] = [["text": "a", "label": 1], ["text": "b", "label": 0]]
    XCTAssertEqual(try ClassificationLabels.infer(ints, file: "f", modelNames: []).names, ["0", "1"])
    XCTAssertEqual(try ClassificationLabels.infer(ints, file: "f", modelNames: ["NEG", "POS"]).names, ["NEG", "POS"])
    // Three integer labels on a two-label model: the model's names do not cover them.
    let three: [DatasetRecord] = ints + [["text": "c", "label": 2]]
    XCTAssertEqual(try ClassificationLabels.infer(three, file: "f", modelNames: ["NEG", "POS"]).names, ["0", "1", "2"])
    let strings: [DatasetRecord] = [["text": "a", "label": "pos"], ["text": "b", "label": "neg"]]
    XCTAssertEqual(try ClassificationLabels.infer(strings, file: "f", modelNames: []).names, ["neg", "pos"])
    XCTAssertEqual(try ClassificationLabels.infer(strings, file: "f", modelNames: ["pos", "neg"]).names, ["pos", "neg"])
    let mixed: [DatasetRecord] = [["text": "a", "label": "pos"], ["text": "b", "label": 0]]
    XCTAssertThrowsError(try ClassificationLabels.infer(mixed, file: "f", modelNames: [])) {
      XCTAssertEqual("\($0)", "f: record 2: \"label\" mixes integers and strings across records; use one kind")
    }
  }

  func test_examples_labelAtTargetZeroAndTruncationKeepsTheLastToken() throws {
    let labels = ClassificationLabels(names: ["neg", "pos"])
    let records: [DatasetRecord] = [["sentence": "good fun", "label": "pos"], ["text": "one two three four five", "label": 0]]
    let d = try ClassificationDataset.make(records, file: "f", labels: labels, maxLength: 5, encode: encode)
    XCTAssertEqual(d.examples[0].inputIds, [1, 14, 13, 2])
    XCTAssertEqual(d.examples[0].targets, [1, -100, -100, -100])
    XCTAssertEqual(d.examples[1].inputIds, [1, 13, 13, 15, 2])
    XCTAssertEqual(d.examples[1].targets[0], 0)
    XCTAssertEqual(d.truncated, 1)
  }

  func test_badRecords_areNamed() {
    let labels = ClassificationLabels(names: ["neg", "pos"])
    func message(_ r: DatasetRecord) -> String {
      do { _ = try ClassificationDataset.make([r], file: "d.jsonl", labels: labels, maxLength: 8, encode: encode) } catch {
        return "\(error)"
      }
      return "accepted"
    }
    XCTAssertEqual(message(["label": 1]), "d.jsonl: record 1: has no \"text\" (or \"sentence\") string; "
      + "classification records are {\"text\": …, \"label\": …}")
    XCTAssertEqual(message(["text": 3, "label": 1]), "d.jsonl: record 1: \"text\" must be a string")
    XCTAssertEqual(message(["text": "x", "label": 2]), "d.jsonl: record 1: label 2 is not one of the 2 labels 0…1")
    XCTAssertEqual(message(["text": "x", "label": "meh"]), "d.jsonl: record 1: label \"meh\" is not one of [neg, pos]")
    XCTAssertEqual(message(["text": "x", "label": -1]), "d.jsonl: record 1: \"label\" must be an integer ≥ 0 or a string, not -1")
    XCTAssertEqual(message(["text": "x"]), "d.jsonl: record 1: has no \"label\" (an integer id or a name)")
  }
}
