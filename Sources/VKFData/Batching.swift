// Deterministic shuffling, validation split, padded batches and packed rows.
import Foundation
import VKFCore

/// A (B, T) block of rows, row-major; padding has target −100.
public struct Batch: Sendable, Equatable {
  /// Rows (B).
  public var batchSize: Int
  /// Columns (T).
  public var seqLength: Int
  /// Input ids, B*T.
  public var inputIds: [Int]
  /// Next-token targets, B*T, −100 where not trained or padding.
  public var targets: [Int]
  /// Position ids, B*T; restart at 0 at each packed example.
  public var positions: [Int]
  /// Per row, the (start, length) of each example in it.
  public var boundaries: [[Range<Int>]]
}

/// Ordering, splitting and batching of tokenized examples.
public enum Batching {
  /// Fisher–Yates shuffle of `items` with SplitMix64(`seed`); order depends only on the seed and count.
  public static func shuffled<T>(_ items: [T], seed: UInt64) -> [T] {
    var out = items
    var rng = SplitMix64(seed: seed)
    if out.count < 2 { return out }
    for i in stride(from: out.count - 1, to: 0, by: -1) {
      // Modulo bias is < count/2^64: negligible, and keeps the stream platform-independent.
      let j = Int(rng.next() % UInt64(i + 1))
      out.swapAt(i, j)
    }
    return out
  }

  /// Shuffles with `seed` and holds out `fraction` (0..<1) of items as validation (at least one
  /// when fraction > 0); a whole number ≥ 1 holds out that many items, as `datasets`'
  /// `train_test_split(test_size=)` reads an int (axolotl's val_set_size, LLaMA-Factory's val_size).
  public static func split<T>(_ items: [T], validationFraction fraction: Double,
                              seed: UInt64) throws -> (train: [T], validation: [T]) {
    guard fraction >= 0, fraction < 1 || (fraction == fraction.rounded() && fraction < 1e15) else {
      throw DatasetError.invalidConfig("validation_fraction is \(fraction); use a fraction in [0, 1) or a whole count of examples")
    }
    let order = shuffled(items, seed: seed)
    guard fraction > 0 else { return (order, []) }
    if fraction >= 1, Int(fraction) >= items.count {
      throw DatasetError.invalidConfig("a validation split of \(Int(fraction)) example(s) leaves none of the "
        + "\(items.count) to train on; hold out fewer")
    }
    let count = fraction >= 1 ? Int(fraction) : min(max(1, Int((Double(items.count) * fraction).rounded())), items.count - 1)
    guard count > 0 else {
      throw DatasetError.invalidConfig("\(items.count) example(s) are too few to hold out a validation split")
    }
    return (Array(order.dropFirst(count)), Array(order.prefix(count)))
  }

  /// One example per row, `batchSize` rows per batch, padded to the longest row
  /// (or `seqLength` when given) with `padID` and target −100; the last batch may be short.
  public static func batches(_ examples: [TokenizedExample], batchSize: Int, padID: Int,
                             seqLength: Int? = nil) -> [Batch] {
    stride(from: 0, to: examples.count, by: max(1, batchSize)).map { start in
      let rows = examples[start..<min(start + max(1, batchSize), examples.count)].map { [$0] }
      let width = seqLength ?? rows.map { $0[0].inputIds.count }.max() ?? 0
      return makeBatch(rows, width: width, padID: padID)
    }
  }

  /// Packs examples, in order, into rows of exactly `seqLength` tokens (first fit in
  /// sequence; an example that does not fit starts a new row), then groups rows by `batchSize`.
  ///
  /// Attention across packed examples is NOT masked: positions restart per example and each
  /// example's last target is −100, so no loss crosses a boundary, but tokens still attend to
  /// earlier examples in the row.
  /// TODO(trainer): pass `boundaries` as segment ids to a block-diagonal attention mask when
  /// the model supports it.
  public static func packed(_ examples: [TokenizedExample], seqLength: Int, batchSize: Int,
                            padID: Int) -> [Batch] {
    var rows: [[TokenizedExample]] = []
    var current: [TokenizedExample] = []
    var used = 0
    for example in examples {
      let piece = example.inputIds.count > seqLength
        ? TokenizedExample(inputIds: Array(example.inputIds.prefix(seqLength)),
                           targets: Array(example.targets.prefix(seqLength - 1)) + [TokenizedExample.ignoreIndex])
        : example
      if used + piece.inputIds.count > seqLength, !current.isEmpty {
        rows.append(current)
        current = []
        used = 0
      }
      current.append(piece)
      used += piece.inputIds.count
    }
    if !current.isEmpty { rows.append(current) }
    return stride(from: 0, to: rows.count, by: max(1, batchSize)).map { start in
      makeBatch(Array(rows[start..<min(start + max(1, batchSize), rows.count)]), width: seqLength, padID: padID)
    }
  }

  /// Lays out rows of examples into a (B, T) batch; examples longer than `width` are cut.
  private static func makeBatch(_ rows: [[TokenizedExample]], width: Int, padID: Int) -> Batch {
    var batch = Batch(batchSize: rows.count, seqLength: width,
                      inputIds: Array(repeating: padID, count: rows.count * width),
                      targets: Array(repeating: TokenizedExample.ignoreIndex, count: rows.count * width),
                      positions: Array(repeating: 0, count: rows.count * width), boundaries: [])
    for (r, row) in rows.enumerated() {
      var column = 0
      var bounds: [Range<Int>] = []
      for example in row {
        let n = min(example.inputIds.count, width - column)
        guard n > 0 else { break }
        for k in 0..<n {
          batch.inputIds[r * width + column + k] = example.inputIds[k]
          batch.targets[r * width + column + k] = k == n - 1 ? TokenizedExample.ignoreIndex : example.targets[k]
          batch.positions[r * width + column + k] = k
        }
        bounds.append(column..<(column + n))
        column += n
      }
      batch.boundaries.append(bounds)
    }
    return batch
  }
}
