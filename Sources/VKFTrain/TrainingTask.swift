// The seam between the training loop and what is trained: a task owns a model (and any
// adapters), runs one micro-batch forward and backward, and evaluates a batch.
import VKFCore
import VKFData
import VKFModel

/// What the `Trainer` drives: parameters to optimise, gradient reset, one micro-batch's
/// forward + backward, and evaluation. Implementations: `SFTTask` (full fine-tuning, LoRA,
/// QLoRA — they differ only in which tensors train); DPO can add its own.
public protocol TrainingTask: AnyObject {
  /// The backend every tensor of the task lives on.
  var backend: Backend { get }
  /// The parameters the optimizer updates, in a fixed order (checkpoints key them by name).
  var trainableTensors: [TrainableTensor] { get }
  /// Sets every trainable gradient to zero (before a step's first micro-batch).
  func zeroGradients() throws
  /// Forward and backward of one micro-batch; gradients accumulate. `lossNormalizer` is the
  /// number of trained targets in the whole optimizer step, so the micro-batches' shares sum
  /// to the step's mean loss. `dropoutSeed` seeds adapter dropout for this micro-batch.
  /// Returns this micro-batch's share of the step loss.
  func forwardBackward(_ batch: Batch, lossNormalizer: Float, dropoutSeed: UInt64) throws -> Float
  /// Loss summed over the batch's trained targets (no gradients, dropout off) and their count.
  func evaluate(_ batch: Batch) throws -> (lossSum: Double, tokens: Int)
  /// Consecutive examples forming one unit (2 for preference pairs: chosen then rejected):
  /// shuffled together and never split across micro-batches. Default 1.
  var exampleGroupSize: Int { get }
  /// What divides the step's summed loss (default: its trained targets, token-weighted SFT;
  /// preference tasks: its pairs).
  func lossNormalizer(for batches: [Batch]) -> Float
  /// Task-specific means since the last call (e.g. DPO's rewards/accuracies), logged with
  /// each progress line (`training`) or evaluation. Default none.
  func takeMetrics(training: Bool) -> [String: Double]
  /// Called with all of an optimizer step's micro-batches before the first of them runs,
  /// with the number of steps completed before it (GRPO generates the step's completions
  /// here). Default nothing.
  func prepareStep(_ batches: [Batch], completedSteps: Int) throws
}

/// A task whose every step of data can make several optimizer updates at the step's learning
/// rate (PPO: `num_ppo_epochs` × `num_mini_batches` over one rollout batch; GRPO:
/// `num_iterations` over one generation batch). The trainer calls `prepareStep`, then for each
/// update zeroes the gradients, runs `forwardBackward(update:…)`, clips and steps AdamW; the
/// step's logged loss is the updates' mean.
public protocol MultiUpdateTrainingTask: TrainingTask {
  /// Updates in the step `prepareStep` prepared; nil: the step is one update over the
  /// trainer's micro-batches (`forwardBackward(_:lossNormalizer:dropoutSeed:)`).
  var updatesPerStep: Int? { get }
  /// Forward and backward of update `u`'s micro-batches (gradients accumulate), the loss
  /// multiplied by `lossScale` (fp16's loss scale); `dropoutSeed` gives each micro-batch's
  /// adapter-dropout seed. Returns the scaled loss.
  func forwardBackward(update u: Int, lossScale: Float, dropoutSeed: () -> UInt64) throws -> Float
}

extension TrainingTask {
  public var exampleGroupSize: Int { 1 }
  public func lossNormalizer(for batches: [Batch]) -> Float {
    Float(max(batches.reduce(0) { $0 + $1.trainedTargets }, 1))
  }
  public func takeMetrics(training: Bool) -> [String: Double] { [:] }
  public func prepareStep(_ batches: [Batch], completedSteps: Int) throws {}
}

/// Supervised fine-tuning (next-token cross-entropy on the unmasked targets) over a
/// `DecoderModel`. The trainables and their gradient reset come from whoever made them:
/// `DecoderWeights.trainableTensors` for full fine-tuning, a LoRA model's tensors for LoRA/QLoRA.
public final class SFTTask: TrainingTask {
  /// The model; adapters are already attached to its projections.
  public let model: DecoderModel
  public let trainableTensors: [TrainableTensor]
  private let zero: () throws -> Void
  let dropoutSeedSetter: (UInt64) throws -> Void
  private let trainingModeSetter: (Bool) -> Void
  /// The step's loss normalizer, for the micro-batches a replayed step stages next (their
  /// share of a mixture-of-experts model's load-balancing loss).
  var stepLossNormalizer: Float = 1

  /// A task over `model` training `trainables`.
  /// - Parameters:
  ///   - zero: resets every gradient of `trainables` (and any the model accumulates).
  ///   - setDropoutSeed: called before each micro-batch (adapter dropout); ignore if none.
  ///   - setTraining: called with false around evaluation (dropout off) and true after.
  public init(model: DecoderModel, trainables: [TrainableTensor], zero: @escaping () throws -> Void,
              setDropoutSeed: @escaping (UInt64) throws -> Void = { _ in },
              setTraining: @escaping (Bool) -> Void = { _ in }) {
    self.model = model
    self.trainableTensors = trainables
    self.zero = zero
    self.dropoutSeedSetter = setDropoutSeed
    self.trainingModeSetter = setTraining
  }

  /// Full fine-tuning: every parameter the weights were loaded with `trainable:` for.
  public convenience init(fullFineTuning model: DecoderModel) {
    let weights = model.weights
    self.init(model: model, trainables: weights.trainableTensors, zero: { try weights.zeroGradients() })
  }

  public var backend: Backend { model.backend }

  public func zeroGradients() throws { try zero() }

  public func forwardBackward(_ batch: Batch, lossNormalizer: Float, dropoutSeed: UInt64) throws -> Float {
    let (ids, targets) = try Self.int32(batch)
    // A micro-batch with no trained target adds nothing to loss or gradients.
    guard targets.contains(where: { $0 != DecoderModel.ignoreIndex }) else { return 0 }
    try dropoutSeedSetter(dropoutSeed)
    try model.forward(ids: ids, targets: targets, batch: batch.batchSize,
                      lossNormalizer: lossNormalizer, computeGradients: true, tokenMask: Self.tokenMask(batch, model: model))
    let loss = try model.loss()
    try model.backward()
    return loss
  }

  public func evaluate(_ batch: Batch) throws -> (lossSum: Double, tokens: Int) {
    let (ids, targets) = try Self.int32(batch)
    let tokens = targets.filter { $0 != DecoderModel.ignoreIndex }.count
    guard tokens > 0 else { return (0, 0) }
    trainingModeSetter(false)
    defer { trainingModeSetter(true) }
    // Normalizer 1: the per-token losses sum to the batch's total loss.
    try model.forward(ids: ids, targets: targets, batch: batch.batchSize, lossNormalizer: 1,
                      tokenMask: Self.tokenMask(batch, model: model))
    return (Double(try model.loss()), tokens)
  }

  /// For a mixture-of-experts model: 1 at the batch's example tokens, 0 at padding, row by row
  /// over `tokens` columns (≥ the batch's; the extra ones are padding) — the tokens its
  /// load-balancing loss counts, as transformers' attention mask. nil for dense models.
  static func tokenMask(_ batch: Batch, model: DecoderModel, tokens: Int? = nil) -> [Float]? {
    guard model.shape.moe != nil else { return nil }
    let t = tokens ?? batch.seqLength
    var mask = [Float](repeating: 0, count: batch.batchSize * t)
    for (r, ranges) in batch.boundaries.enumerated() where r < batch.batchSize {
      for range in ranges { for i in range where i < t { mask[r * t + i] = 1 } }
    }
    return mask
  }

  /// The batch's ids and targets as the model's Int32, refusing values that do not fit.
  static func int32(_ batch: Batch) throws -> (ids: [Int32], targets: [Int32]) {
    guard batch.batchSize > 0, batch.inputIds.count == batch.batchSize * batch.seqLength,
          batch.targets.count == batch.inputIds.count else {
      throw TrainingError.invalidBatch("\(batch.inputIds.count) ids and \(batch.targets.count) targets "
        + "do not form \(batch.batchSize) rows of \(batch.seqLength)")
    }
    func convert(_ v: [Int], _ what: String) throws -> [Int32] {
      try v.map {
        guard let x = Int32(exactly: $0) else {
          throw TrainingError.invalidBatch("\(what) \($0) does not fit in 32 bits; check the tokenizer")
        }
        return x
      }
    }
    return (try convert(batch.inputIds, "token id"), try convert(batch.targets, "target"))
  }
}
