// Which micro-batches each optimizer step sees: a per-epoch shuffled order fixed by the seed.
import VKFCore
import VKFData

/// Where the run is in its data: the epoch and the next micro-batch of that epoch's order.
/// Saved in checkpoints so a resumed run sees the same batches.
public struct DataCursor: Codable, Equatable, Sendable {
  /// 0-based epoch.
  public var epoch: Int
  /// Index of the next micro-batch in the epoch's shuffled micro-batch list.
  public var microBatch: Int

  public init(epoch: Int = 0, microBatch: Int = 0) { self.epoch = epoch; self.microBatch = microBatch }

  enum CodingKeys: String, CodingKey { case epoch, microBatch = "micro_batch" }
}

/// The training data laid out as micro-batches, epoch by epoch. Epoch e's example order is
/// `Batching.shuffled` with a seed derived from (seed, e), so every run with the same seed and
/// data sees the same batches, and a resumed run rebuilds any epoch without replaying others.
struct DataPlan {
  let examples: [TokenizedExample]
  let config: TrainingConfig
  let padID: Int
  /// Consecutive examples shuffled and batched as one unit (`TrainingTask.exampleGroupSize`).
  let groupSize: Int
  /// Micro-batches per epoch (with packing the count depends on the epoch's order).
  private var counts: [Int: Int] = [:]

  init(examples: [TokenizedExample], config: TrainingConfig, padID: Int, groupSize: Int = 1) throws {
    try Self.checkLengths(examples, "training")
    guard groupSize >= 1, examples.count % groupSize == 0 else {
      throw TrainingError.invalidBatch("\(examples.count) examples do not form groups of \(groupSize)")
    }
    if groupSize > 1, config.packing {
      throw TrainingError.invalidConfig(field: "packing", value: "true",
                                        requirement: "packing applies to SFT only, not to preference pairs")
    }
    if groupSize > 1, let i = examples.firstIndex(where: { $0.inputIds.isEmpty }) {
      throw TrainingError.invalidBatch("training example \(i) is empty")
    }
    self.groupSize = groupSize
    // Cut every example to maxSeqLength once; batching keeps the last kept target masked.
    self.examples = examples.filter { !$0.inputIds.isEmpty }.map { e in
      guard e.inputIds.count > config.maxSeqLength else { return e }
      var cut = e
      cut.inputIds = Array(e.inputIds.prefix(config.maxSeqLength))
      cut.targets = Array(e.targets.prefix(config.maxSeqLength))
      return cut
    }
    self.config = config
    self.padID = padID
    guard self.examples.contains(where: { e in e.targets.dropLast().contains { $0 != TokenizedExample.ignoreIndex } }) else {
      throw TrainingError.noTrainingData("\(examples.count) example(s) but none has a trained target "
        + "(check the dataset's masking and max_seq_length)")
    }
  }

  /// The longest row a micro-batch can have: max_seq_length when packing, else the longest
  /// (cut) example.
  var longestRow: Int {
    config.packing ? config.maxSeqLength : examples.reduce(1) { max($0, $1.inputIds.count) }
  }

  /// Throws unless every example has one target per id (batching indexes both alike).
  static func checkLengths(_ examples: [TokenizedExample], _ what: String) throws {
    if let i = examples.firstIndex(where: { $0.inputIds.count != $0.targets.count }) {
      throw TrainingError.invalidBatch("\(what) example \(i) has \(examples[i].inputIds.count) ids but "
        + "\(examples[i].targets.count) targets")
    }
  }

  /// The seed of epoch `epoch`'s shuffle.
  static func epochSeed(_ seed: UInt64, _ epoch: Int) -> UInt64 {
    var rng = SplitMix64(seed: seed ^ (UInt64(epoch) &* 0xD1B5_4A32_D192_ED03))
    return rng.next()
  }

  /// Epoch `epoch`'s micro-batches in training order.
  func microBatches(epoch: Int) -> [Batch] {
    let seed = Self.epochSeed(config.seed, epoch)
    if groupSize > 1 {
      let groups = stride(from: 0, to: examples.count, by: groupSize).map { Array(examples[$0..<($0 + groupSize)]) }
      return Batching.batches(Array(Batching.shuffled(groups, seed: seed).joined()),
                              batchSize: config.perDeviceTrainBatchSize * groupSize, padID: padID)
    }
    let order = Batching.shuffled(examples, seed: seed)
    if config.packing {
      return Batching.packed(order, seqLength: config.maxSeqLength, batchSize: config.perDeviceTrainBatchSize,
                             padID: padID)
    }
    return Batching.batches(order, batchSize: config.perDeviceTrainBatchSize, padID: padID)
  }

  /// Number of micro-batches of epoch `epoch` (memoised).
  mutating func microBatchCount(epoch: Int) -> Int {
    if let n = counts[epoch] { return n }
    let n = config.packing ? microBatches(epoch: epoch).count
      : (examples.count + config.perDeviceTrainBatchSize * groupSize - 1) / (config.perDeviceTrainBatchSize * groupSize)
    counts[epoch] = n
    return n
  }

  /// Optimizer steps in epoch `epoch` (the last step may have fewer micro-batches).
  mutating func steps(epoch: Int) -> Int {
    let a = config.gradientAccumulationSteps
    return (microBatchCount(epoch: epoch) + a - 1) / a
  }

  /// Total optimizer steps of the run: maxSteps when set, else the sum over the epochs; a
  /// fractional last epoch runs ⌈fraction × its steps⌉ of them (transformers rounds the whole
  /// run's product up the same way when every epoch has the same length).
  mutating func totalSteps() -> Int {
    if config.maxSteps > 0 { return config.maxSteps }
    let whole = Int(config.numTrainEpochs.rounded(.down))
    var total = (0..<whole).reduce(0) { $0 + steps(epoch: $1) }
    let fraction = config.numTrainEpochs - Double(whole)
    if fraction > 0 { total += max(1, Int((fraction * Double(steps(epoch: whole))).rounded(.up))) }
    return total
  }

  /// Batches for evaluation: validation examples in file order, cut to maxSeqLength.
  static func evaluationBatches(_ examples: [TokenizedExample], config: TrainingConfig, padID: Int,
                                groupSize: Int = 1) -> [Batch] {
    let cut = examples.filter { groupSize > 1 || !$0.inputIds.isEmpty }.map { e -> TokenizedExample in
      guard e.inputIds.count > config.maxSeqLength else { return e }
      var c = e
      c.inputIds = Array(e.inputIds.prefix(config.maxSeqLength))
      c.targets = Array(e.targets.prefix(config.maxSeqLength))
      return c
    }
    let size = config.perDeviceEvalBatchSize > 0 ? config.perDeviceEvalBatchSize : config.perDeviceTrainBatchSize
    return Batching.batches(cut, batchSize: size * groupSize, padID: padID)
  }
}

extension Batch {
  /// Targets the loss counts (≠ −100).
  var trainedTargets: Int { targets.reduce(0) { $0 + ($1 == TokenizedExample.ignoreIndex ? 0 : 1) } }
  /// Tokens that are not padding.
  var realTokens: Int { boundaries.reduce(0) { $0 + $1.reduce(0) { $0 + $1.count } } }
}
