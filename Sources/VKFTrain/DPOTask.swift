// Direct preference optimisation: sequence log-probs of chosen and rejected answers under the
// policy and a reference, a DPO-family loss, and its gradient as reweighted token gradients.
import Foundation
import VKFCore
import VKFData
import VKFModel
import VKFPEFT

/// Summed answer log-probs of each row of a batch: −Σ of the per-token losses over the row's
/// trained targets (the answer), and how many targets that is.
func rowLogProbs(tokenLosses: [Float], targets: [Int32], rows: Int) -> (logps: [Double], counts: [Int]) {
  let t = targets.count / max(rows, 1)
  var logps = [Double](repeating: 0, count: rows), counts = [Int](repeating: 0, count: rows)
  for r in 0..<rows {
    var s = 0.0, c = 0
    for i in (r * t)..<((r + 1) * t) where targets[i] != DecoderModel.ignoreIndex {
      s -= Double(tokenLosses[i]); c += 1
    }
    logps[r] = s; counts[r] = c
  }
  return (logps, counts)
}

/// Reference log-probs computed once (full fine-tuning has no adapter to switch off), keyed
/// by a hash of each sequence's ids and trained targets, and saved with the run
/// (`reference_logps.json`) so a resumed run does not recompute them.
public struct ReferenceLogProbs: Codable, Equatable, Sendable {
  /// Sequence key → summed answer log-prob.
  public var values: [String: Double]

  public init(values: [String: Double] = [:]) { self.values = values }

  /// The file name inside the output directory.
  public static let fileName = "reference_logps.json"

  /// FNV-1a 64 of the real (unpadded) ids and the trained-target mask of one example.
  public static func key(_ e: TokenizedExample) -> String {
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    func mix(_ v: Int) {
      var x = UInt64(bitPattern: Int64(v))
      for _ in 0..<8 { h = (h ^ (x & 0xff)) &* 0x100_0000_01b3; x >>= 8 }
    }
    for (id, t) in zip(e.inputIds, e.targets) { mix(id); mix(t == TokenizedExample.ignoreIndex ? 0 : 1) }
    mix(e.inputIds.count)
    return String(h, radix: 16)
  }

  /// Runs `model` (as it is now: the reference) over `examples` in batches without gradients.
  public static func compute(model: DecoderModel, examples: [TokenizedExample], batchSize: Int,
                             padID: Int) throws -> ReferenceLogProbs {
    var out = ReferenceLogProbs()
    for batch in Batching.batches(examples, batchSize: max(1, batchSize), padID: padID) {
      let (ids, targets) = try SFTTask.int32(batch)
      guard targets.contains(where: { $0 != DecoderModel.ignoreIndex }) else { continue }
      try model.forward(ids: ids, targets: targets, batch: batch.batchSize, lossNormalizer: 1,
                        logProbsOnly: true)
      let (logps, _) = rowLogProbs(tokenLosses: try model.tokenLosses(), targets: targets, rows: batch.batchSize)
      for r in 0..<batch.batchSize {
        out.values[key(rowExample(batch, r))] = logps[r]
      }
    }
    return out
  }

  /// Row r of a padded batch as the example it came from (padding stripped by its boundary).
  static func rowExample(_ batch: Batch, _ r: Int) -> TokenizedExample {
    let t = batch.seqLength
    let length = batch.boundaries[r].map(\.upperBound).max() ?? t
    let ids = Array(batch.inputIds[(r * t)..<(r * t + length)])
    let targets = Array(batch.targets[(r * t)..<(r * t + length)])
    return TokenizedExample(inputIds: ids, targets: targets)
  }

  /// Loads the cache written by `save`.
  public static func load(_ url: URL) throws -> ReferenceLogProbs {
    do { return try JSONDecoder().decode(ReferenceLogProbs.self, from: BoundedFile.read(url, BoundedFile.runCache)) } catch {
      throw TrainingError.invalidConfig(field: "reference log-probs", value: url.path,
                                        requirement: "a readable \(fileName) (\(error.localizedDescription))")
    }
  }

  /// Writes the cache atomically.
  public func save(_ url: URL) throws {
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    try AtomicWrite.write(Array(try encoder.encode(self)), to: url)
  }
}

/// DPO (and IPO, hinge, robust) on pairs: the trainer's examples are [chosen, rejected, …]
/// (`PreferencePair.example(chosen:)`), grouped in twos, and each micro-batch sends chosen and
/// rejected rows through the model together.
///
/// Gradient: L = (1/P)·Σ_pairs ℓ(π_c, π_r), π = Σ answer log p, so dL/dlogits of a token of row
/// r is −(dℓ/dπ_r)/P times the cross-entropy gradient (softmax − onehot): one forward with
/// per-token losses, a host-side loss, one backward with those per-token weights.
public final class DPOTask: TrainingTask {
  /// Where the reference log-probs come from.
  public enum Reference {
    /// The same model with its adapter switched off by this closure (false = reference).
    case disabledAdapter((Bool) -> Void)
    /// Computed before training (`ReferenceLogProbs.compute`).
    case precomputed(ReferenceLogProbs)
    /// None (ORPO).
    case none

    var isNone: Bool { if case .none = self { true } else { false } }
  }

  public let model: DecoderModel
  public let trainableTensors: [TrainableTensor]
  public let loss: DPOLossConfig
  public let reference: Reference
  private let zero: () throws -> Void
  let dropoutSeedSetter: (UInt64) throws -> Void
  let trainingModeSetter: (Bool) -> Void
  var trainMetrics = DPOStepMetrics(), evalMetrics = DPOStepMetrics()
  /// Reference log-probs of evaluation rows by `ReferenceLogProbs.key`, computed at the
  /// first evaluation and reused by every later one (the reference never changes).
  private var evaluationReferences: [String: Double] = [:]
  /// Reference forward passes run by evaluations (tests check the cache holds).
  public private(set) var evaluationReferencePasses = 0
  /// Staged steps (`DPOTask+Staged`): per row count, a device buffer [policy | reference |
  /// answer tokens] of summed log-probs; the rows of the last staged batch; the step's
  /// metric sums (`PreferenceLossParameters.Metric`).
  private var sequenceBuffersByRows: [Int: Tensor] = [:]
  var stagedRows = 0
  private var deviceMetrics: Tensor?
  /// The step's loss normalizer (pairs in the step, over the loss scale), from `willStage`:
  /// a micro-batch's load-balancing loss is weighted by its pairs over it.
  var stepPairs: Float = 1
  /// One f32 the unstaged step's load-balancing loss is read from.
  private var auxLossScratch: Tensor?
  /// ORPO's per-shape token buffers (`DPOTask+ORPO`) and the shape of the last staged batch.
  var orpoBuffersByShape: [StepShape: ORPOBuffers] = [:]
  var stagedShape: StepShape?

  /// The [policy | reference | answer tokens] buffer for `rows` rows (made once per count,
  /// so recordings keep valid views).
  func sequenceBuffers(rows: Int) throws -> Tensor {
    if let b = sequenceBuffersByRows[rows] { return b }
    let b = try backend.allocate([3 * rows])
    sequenceBuffersByRows[rows] = b
    return b
  }

  /// The device metric sums of a staged step (made once).
  func stepMetricsTensor() throws -> Tensor {
    let m = try deviceMetrics ?? backend.preferenceMetricSums()
    deviceMetrics = m
    return m
  }

  /// Adds a staged step's metric sums to the training metrics.
  func addTrainingMetrics(sums: [Float]) { trainMetrics.add(sums: sums.map(Double.init)) }

  public init(model: DecoderModel, trainables: [TrainableTensor], zero: @escaping () throws -> Void,
              reference: Reference, loss: DPOLossConfig,
              setDropoutSeed: @escaping (UInt64) throws -> Void = { _ in },
              setTraining: @escaping (Bool) -> Void = { _ in }) throws {
    try loss.validate()
    self.model = model; self.trainableTensors = trainables; self.zero = zero
    self.reference = reference; self.loss = loss
    dropoutSeedSetter = setDropoutSeed; trainingModeSetter = setTraining
    guard loss.oddsRatio == reference.isNone else {
      throw PreferenceLossError(loss.oddsRatio ? "ORPO uses no reference model" : "DPO needs a reference")
    }
    trainMetrics.odds = loss.oddsRatio; evalMetrics.odds = loss.oddsRatio
  }

  /// LoRA / QLoRA: the reference is the model with the adapter disabled, unless precomputed
  /// (ORPO: none).
  public convenience init(model: DecoderModel, lora: LoRAModel, loss: DPOLossConfig,
                          precomputed: ReferenceLogProbs? = nil) throws {
    try self.init(model: model, trainables: lora.trainableTensors, zero: { try lora.zeroGradients() },
                  reference: loss.oddsRatio ? .none : precomputed.map { .precomputed($0) } ?? .disabledAdapter { lora.enabled = $0 },
                  loss: loss, setDropoutSeed: { try lora.setDropoutSeed($0) }, setTraining: { lora.training = $0 })
  }

  /// Full fine-tuning with ORPO (no reference).
  public convenience init(fullFineTuning model: DecoderModel, orpo loss: DPOLossConfig) throws {
    let w = model.weights
    try self.init(model: model, trainables: w.trainableTensors, zero: { try w.zeroGradients() },
                  reference: .none, loss: loss)
  }

  /// Full fine-tuning against precomputed reference log-probs.
  public convenience init(fullFineTuning model: DecoderModel, reference: ReferenceLogProbs,
                          loss: DPOLossConfig) throws {
    let w = model.weights
    try self.init(model: model, trainables: w.trainableTensors, zero: { try w.zeroGradients() },
                  reference: .precomputed(reference), loss: loss)
  }

  public var backend: Backend { model.backend }
  public var exampleGroupSize: Int { 2 }
  public func zeroGradients() throws { try zero() }

  /// Pairs in the step: the loss is their mean.
  public func lossNormalizer(for batches: [Batch]) -> Float {
    Float(max(batches.reduce(0) { $0 + $1.batchSize / 2 }, 1))
  }

  public func takeMetrics(training: Bool) -> [String: Double] {
    defer {
      var fresh = DPOStepMetrics()
      fresh.odds = loss.oddsRatio
      if training { trainMetrics = fresh } else { evalMetrics = fresh }
    }
    let m = training ? trainMetrics : evalMetrics
    return m.pairs > 0 ? m.metrics : [:]
  }

  public func forwardBackward(_ batch: Batch, lossNormalizer: Float, dropoutSeed: UInt64) throws -> Float {
    if loss.oddsRatio { return try orpoForwardBackward(batch, lossNormalizer: lossNormalizer, dropoutSeed: dropoutSeed) }
    let (ids, targets) = try SFTTask.int32(batch)
    let rows = batch.batchSize
    try checkPairs(batch, targets)
    let refs = try referenceLogProbs(batch, ids, targets)
    try dropoutSeedSetter(dropoutSeed)
    try model.stage(ids: ids, targets: targets, batch: rows, tokenMask: SFTTask.tokenMask(batch, model: model),
                    auxLossWeight: Float(rows / 2) / lossNormalizer)
    try model.forwardStaged(lossNormalizer: .value(1), computeGradients: true, weightedLater: true)
    let aux = try auxLoss()
    let (policy, counts) = rowLogProbs(tokenLosses: try model.tokenLosses(), targets: targets, rows: rows)
    // dL/dlogits = (dℓ/dπ)/P · dπ/dlogits = −(dℓ/dπ)/P · (softmax − onehot): the row weights.
    let out = PreferenceLossMath.batch(policy: policy, reference: refs, answerTokens: counts,
                                       pairsInStep: Double(lossNormalizer), loss.parameters)
    trainMetrics.add(sums: out.metrics)
    let t = batch.seqLength
    let weights = (0..<(rows * t)).map { i in Float(out.rowWeights[i / t]) }
    try model.backward(tokenWeights: weights)
    return Float(out.loss) + aux
  }

  /// The policy pass's load-balancing loss, weighted by this micro-batch's share of the step
  /// (0 unless the model trains it), its gradient left for the backward.
  func auxLoss() throws -> Float {
    guard model.trainsAuxLoss else { return 0 }
    let sum = try auxLossScratch ?? backend.allocate([1])
    auxLossScratch = sum
    try backend.fill(sum, value: 0)
    try model.queueAuxLoss(into: sum)
    return try backend.floats(sum)[0]
  }

  /// Sum of pair losses and the number of pairs (so the trainer's mean is the mean pair loss).
  public func evaluate(_ batch: Batch) throws -> (lossSum: Double, tokens: Int) {
    if loss.oddsRatio { return try orpoEvaluate(batch) }
    let (ids, targets) = try SFTTask.int32(batch)
    let rows = batch.batchSize
    try checkPairs(batch, targets)
    trainingModeSetter(false)
    defer { trainingModeSetter(true) }
    let refs = try evaluationReferenceLogProbs(batch, ids, targets)
    try model.forward(ids: ids, targets: targets, batch: rows, lossNormalizer: 1, logProbsOnly: true)
    let (policy, counts) = rowLogProbs(tokenLosses: try model.tokenLosses(), targets: targets, rows: rows)
    let out = PreferenceLossMath.batch(policy: policy, reference: refs, answerTokens: counts, pairsInStep: 1,
                                       loss.parameters)
    evalMetrics.add(sums: out.metrics)
    // The pairs' DPO losses without the RPO term (its metric sum).
    let sum = out.metrics[PreferenceLossParameters.Metric.loss.rawValue]
    return (sum, rows / 2)
  }

  /// `referenceLogProbs` for an evaluation batch, through the evaluation cache.
  private func evaluationReferenceLogProbs(_ batch: Batch, _ ids: [Int32], _ targets: [Int32]) throws -> [Double] {
    guard case .disabledAdapter = reference else { return try referenceLogProbs(batch, ids, targets) }
    let keys = (0..<batch.batchSize).map { ReferenceLogProbs.key(ReferenceLogProbs.rowExample(batch, $0)) }
    let cached = keys.compactMap { evaluationReferences[$0] }
    if cached.count == keys.count { return cached }
    evaluationReferencePasses += 1
    let refs = try referenceLogProbs(batch, ids, targets)
    for (k, v) in zip(keys, refs) { evaluationReferences[k] = v }
    return refs
  }

  /// The reference log-prob of every row (adapter off, no gradients; or from the cache).
  func referenceLogProbs(_ batch: Batch, _ ids: [Int32], _ targets: [Int32]) throws -> [Double] {
    switch reference {
    case .disabledAdapter(let setEnabled):
      setEnabled(false)
      defer { setEnabled(true) }
      try model.forward(ids: ids, targets: targets, batch: batch.batchSize, lossNormalizer: 1,
                        logProbsOnly: true)
      return rowLogProbs(tokenLosses: try model.tokenLosses(), targets: targets, rows: batch.batchSize).logps
    case .none:
      return [Double](repeating: 0, count: batch.batchSize)
    case .precomputed(let cache):
      return try (0..<batch.batchSize).map { r in
        let key = ReferenceLogProbs.key(ReferenceLogProbs.rowExample(batch, r))
        guard let v = cache.values[key] else {
          throw TrainingError.invalidBatch("no precomputed reference log-prob for a sequence of the batch "
            + "(the data changed since \(ReferenceLogProbs.fileName) was written; delete it to recompute)")
        }
        return v
      }
    }
  }

  func checkPairs(_ batch: Batch, _ targets: [Int32]) throws {
    guard batch.batchSize % 2 == 0 else {
      throw TrainingError.invalidBatch("a preference batch has \(batch.batchSize) rows; it needs chosen/rejected pairs")
    }
    let t = batch.seqLength
    for r in 0..<batch.batchSize where !targets[(r * t)..<((r + 1) * t)].contains(where: { $0 != DecoderModel.ignoreIndex }) {
      throw TrainingError.invalidBatch("row \(r) of a preference batch has no answer token")
    }
  }
}
