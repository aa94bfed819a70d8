// Deterministic shuffle, validation split, padding and packing.
import XCTest
@testable import VKFData
import VKFCore

final class BatchingTests: XCTestCase {
  func test_shuffle_fixedOrderForSeed() {
    let order = Batching.shuffled(Array(0..<10), seed: 42)
    XCTAssertEqual(order, Batching.shuffled(Array(0..<10), seed: 42))
    XCTAssertEqual(order.sorted(), Array(0..<10))
    // Pinned: computed by a Python twin of SplitMix64 + Fisher–Yates.
    XCTAssertEqual(order, [0, 9, 5, 8, 6, 4, 7, 2, 1, 3])
    XCTAssertNotEqual(order, Batching.shuffled(Array(0..<10), seed: 43))
  }

  func test_splitMix64_matchesReferenceStream() {
    // Reference values of SplitMix64 seeded with 0 (Vigna's splitmix64.c).
    var rng = SplitMix64(seed: 0)
    XCTAssertEqual(rng.next(), 0xE220_A839_7B1D_CDAF)
    XCTAssertEqual(rng.next(), 0x6E78_9E6A_A1B9_65F4)
  }

  func test_split_holdsOutFraction_disjoint() throws {
    let (train, validation) = try Batching.split(Array(0..<20), validationFraction: 0.1, seed: 7)
    XCTAssertEqual(validation.count, 2)
    XCTAssertEqual(Set(train + validation), Set(0..<20))
    XCTAssertThrowsError(try Batching.split([1], validationFraction: 1.5, seed: 0))
  }

  /// A whole number ≥ 1 is a count of examples, as datasets' train_test_split reads an int
  /// test_size (axolotl val_set_size, LLaMA-Factory val_size); it must leave some to train on.
  func test_split_wholeNumberIsACount() throws {
    let (train, validation) = try Batching.split(Array(0..<20), validationFraction: 3, seed: 7)
    XCTAssertEqual(validation.count, 3)
    XCTAssertEqual(train.count, 17)
    XCTAssertEqual(Set(train + validation), Set(0..<20))
    XCTAssertEqual(try Batching.split(Array(0..<20), validationFraction: 1, seed: 7).validation.count, 1)
    XCTAssertThrowsError(try Batching.split(Array(0..<3), validationFraction: 3, seed: 7)) { error in
      XCTAssertTrue("\(error)".contains("leaves none of the 3"), "\(error)")
    }
    XCTAssertThrowsError(try Batching.split(Array(0..<20), validationFraction: 2.5, seed: 7))
  }

  private func example(_ ids: [Int]) -> TokenizedExample {
    TokenizedExample(inputIds: ids, targets: Array(ids.dropFirst()) + [TokenizedExample.ignoreIndex])
  }

  func test_batches_padWithIgnoredTargets() {
    let batch = Batching.batches([example([1, 2, 3]), example([4])], batchSize: 2, padID: 0)[0]
    XCTAssertEqual(batch.seqLength, 3)
    XCTAssertEqual(batch.inputIds, [1, 2, 3, 4, 0, 0])
    XCTAssertEqual(batch.targets, [2, 3, -100, -100, -100, -100])
  }

  func test_packing_keepsEveryExampleTokensAndTargets() {
    let inputs = [example([1, 2, 3]), example([4, 5]), example([6, 7, 8, 9]), example([10])]
    let batches = Batching.packed(inputs, seqLength: 5, batchSize: 8, padID: 0)
    XCTAssertEqual(batches.count, 1)
    let batch = batches[0]
    var recovered: [TokenizedExample] = []
    for (r, bounds) in batch.boundaries.enumerated() {
      for range in bounds {
        let cols = range.map { r * batch.seqLength + $0 }
        recovered.append(TokenizedExample(inputIds: cols.map { batch.inputIds[$0] }, targets: cols.map { batch.targets[$0] }))
        XCTAssertEqual(cols.map { batch.positions[$0] }, Array(0..<range.count))
      }
    }
    XCTAssertEqual(recovered, inputs)
    XCTAssertEqual(batch.boundaries, [[0..<3, 3..<5], [0..<4, 4..<5]])
  }
}
