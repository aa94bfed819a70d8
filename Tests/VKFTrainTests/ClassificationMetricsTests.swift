import XCTest
@testable import VKFTrain

/// Accuracy and F1 from confusion counts, against hand-worked cases (scikit-learn's
/// definitions: binary F1 of label 1; macro F1 over every label, 0 for a label never
/// predicted nor present).
final class ClassificationMetricsTests: XCTestCase {
  func test_binary_accuracyAndF1OfLabelOne() throws {
    var c = ClassificationCounts(labels: 2)
    // logits rows → predictions 1, 1, 0, 0, 1; truth 1, 0, 0, 1, 1 → tp 2, fp 1, fn 1.
    c.add(logits: [0, 1, 0, 2, 3, 1, 1, 0, -1, 1], labels: [1, 0, 0, 1, 1])
    let m = c.metrics
    XCTAssertEqual(try XCTUnwrap(m["accuracy"]), 3.0 / 5, accuracy: 1e-12)
    XCTAssertEqual(try XCTUnwrap(m["f1"]), 2.0 * 2 / (3 + 3), accuracy: 1e-12)
  }

  func test_multiClass_macroF1AndIgnoredRows() throws {
    var c = ClassificationCounts(labels: 3)
    // predictions 0, 1, 1, 0 for truth 0, 1, 2, −100 (ignored): label 2 never predicted.
    c.add(logits: [5, 0, 0, 0, 5, 0, 0, 5, 0, 9, 0, 0], labels: [0, 1, 2, -100])
    let m = c.metrics
    XCTAssertEqual(try XCTUnwrap(m["accuracy"]), 2.0 / 3, accuracy: 1e-12)
    // F1: label 0 = 1, label 1 = 2·1/(2+1), label 2 = 0.
    XCTAssertEqual(try XCTUnwrap(m["f1"]), (1 + 2.0 / 3 + 0) / 3, accuracy: 1e-12)
    XCTAssertTrue(ClassificationCounts(labels: 2).metrics.isEmpty)
  }
}
