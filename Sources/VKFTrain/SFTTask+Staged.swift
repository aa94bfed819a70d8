// SFT as a staged task: the host uploads a micro-batch padded to its step shape; the
// recorded half runs forward, loss and backward on the device.
import VKFCore
import VKFData
import VKFModel

extension SFTTask: StagedTrainingTask {
  public func stage(_ batch: Batch, as shape: StepShape, dropoutSeed: UInt64) throws -> Bool {
    let (ids, targets) = try Self.int32(batch)
    // A micro-batch with no trained target adds nothing to loss or gradients.
    guard targets.contains(where: { $0 != DecoderModel.ignoreIndex }) else { return false }
    let padded = try Self.padded(ids: ids, targets: targets, batch: batch, to: shape)
    let trained = Float(targets.filter { $0 != DecoderModel.ignoreIndex }.count)
    try model.stage(ids: padded.ids, targets: padded.targets, batch: shape.batch,
                    tokenMask: Self.tokenMask(batch, model: model, tokens: shape.tokens),
                    auxLossWeight: trained / stepLossNormalizer)
    try dropoutSeedSetter(dropoutSeed)
    return true
  }

  public func willStage(lossNormalizer: Float) { stepLossNormalizer = lossNormalizer }

  public func reserve(_ shape: StepShape) throws {
    try model.reserve(batch: shape.batch, tokens: shape.tokens)
  }

  public func queueForwardBackward(lossNormalizer: Tensor, lossSum: Tensor) throws {
    try model.forwardStaged(lossNormalizer: .tensor(lossNormalizer), computeGradients: true)
    guard let losses = model.tokenLossTensor, let ones = model.onesTensor else {
      throw VKFError.other("SFTTask: the forward pass left no per-token losses")
    }
    // lossSum += Σ losses, as a (1, N)·(N, 1) product accumulating into the slot.
    let n = losses.count
    try backend.matmul(try ones.reshaped([1, n]), try losses.reshaped([n, 1]), into: try lossSum.reshaped([1, 1]),
                       transposeA: false, transposeB: false, alpha: 1, beta: 1)
    try model.backward()
  }

  /// Rows right-padded to `shape.tokens` (ids with each row's last id, targets ignored);
  /// `shape.batch` must equal the batch's rows.
  static func padded(ids: [Int32], targets: [Int32], batch: Batch, to shape: StepShape) throws
    -> (ids: [Int32], targets: [Int32]) {
    let (b, t) = (batch.batchSize, batch.seqLength)
    guard shape.batch == b, shape.tokens >= t else {
      throw TrainingError.invalidBatch("a \(b)×\(t) batch cannot run as \(shape)")
    }
    guard shape.tokens > t else { return (ids, targets) }
    let extra = shape.tokens - t
    var pi: [Int32] = [], pt: [Int32] = []
    pi.reserveCapacity(b * shape.tokens); pt.reserveCapacity(b * shape.tokens)
    for r in 0..<b {
      let row = (r * t)..<((r + 1) * t)
      pi += ids[row]; pi += repeatElement(ids[row.upperBound - 1], count: extra)
      pt += targets[row]; pt += repeatElement(DecoderModel.ignoreIndex, count: extra)
    }
    return (pi, pt)
  }
}
