// The training loop's settings, with transformers' TrainingArguments keys.
import Foundation
import VKFCore

/// Every setting of a training run. Keys are transformers' `TrainingArguments` names, so a
/// YAML/JSON config carries over; absent keys take the documented default. The config hash
/// (`fingerprint`) guards resuming a checkpoint under different settings.
public struct TrainingConfig: Codable, Equatable, Sendable {
  /// Peak learning rate (default 2e-4, the usual LoRA value).
  public var learningRate: Double = 2e-4
  /// AdamW β1 (default 0.9).
  public var adamBeta1: Float = 0.9
  /// AdamW β2 (default 0.999).
  public var adamBeta2: Float = 0.999
  /// AdamW ε (default 1e-8).
  public var adamEpsilon: Float = 1e-8
  /// Decoupled weight decay on tensors that decay (default 0).
  public var weightDecay: Float = 0
  /// Global gradient-norm clip; 0 disables (default 1).
  public var maxGradNorm: Float = 1
  /// LR schedule name, one of `LRSchedule.supportedTypes` (default linear).
  public var lrSchedulerType: String = "linear"
  /// Warmup in optimizer steps (≥ 1) or a fraction of the run in (0, 1) (default 0).
  public var warmupSteps: Double = 0
  /// Warmup as a fraction of the run, used when warmupSteps is 0 (default 0).
  public var warmupRatio: Double = 0
  /// Schedule extras (num_cycles, min_lr, …; default none).
  public var lrSchedulerKwargs: LRSchedulerKwargs = .init()
  /// Passes over the training set (default 1); ignored when maxSteps > 0. A fraction, as in
  /// transformers, ends the last pass early: ⌈fraction × that epoch's steps⌉ of it run.
  public var numTrainEpochs: Double = 1
  /// Total optimizer steps when > 0, cycling epochs as needed (default −1: use epochs).
  public var maxSteps: Int = -1
  /// Examples (or packed rows) per micro-batch (default 1).
  public var perDeviceTrainBatchSize: Int = 1
  /// Micro-batches per optimizer step (default 1).
  public var gradientAccumulationSteps: Int = 1
  /// Longer examples are cut to this many tokens; packed rows have exactly this length (default 1024).
  public var maxSeqLength: Int = 1024
  /// Pack examples into rows of maxSeqLength (default false).
  public var packing: Bool = false
  /// Evaluate every N optimizer steps when there is validation data, or every fraction of
  /// the run when in (0, 1) (`StepInterval`); 0: only at the end (default 0).
  public var evalSteps: Double = 0
  /// Evaluate once before the first step (transformers' `eval_on_start`), so the curve has
  /// the base model's validation loss to be read against (default true).
  public var evalOnStart: Bool = true
  /// Validation examples per evaluation micro-batch; 0: the training micro-batch size (default 0).
  public var perDeviceEvalBatchSize: Int = 0
  /// Stop after this many evaluations without improvement; 0 disables (default 0).
  public var earlyStoppingPatience: Int = 0
  /// Checkpoint every N optimizer steps, or every fraction of the run when in (0, 1); 0
  /// disables (default 0).
  public var saveSteps: Double = 0
  /// Keep at most this many checkpoints, deleting the oldest; 0 keeps all (default 0).
  public var saveTotalLimit: Int = 0
  /// Seed for data order and dropout (default 42, as transformers).
  public var seed: UInt64 = 42
  /// Log (progress event, metrics.jsonl line) every N optimizer steps, or every fraction of
  /// the run when in (0, 1) (default 10).
  public var loggingSteps: Double = 10
  /// fp16 mixed precision: dynamic loss scaling with torch GradScaler's semantics
  /// (`GradScaler`): steps with inf/NaN gradients are skipped and the run goes on. Not a
  /// coding key, so not in `fingerprint`: a run may resume in another precision (the master
  /// weights and moments are f32 either way).
  public var fp16: Bool = false

  enum CodingKeys: String, CodingKey, CaseIterable {
    case learningRate = "learning_rate"
    case adamBeta1 = "adam_beta1"
    case adamBeta2 = "adam_beta2"
    case adamEpsilon = "adam_epsilon"
    case weightDecay = "weight_decay"
    case maxGradNorm = "max_grad_norm"
    case lrSchedulerType = "lr_scheduler_type"
    case warmupSteps = "warmup_steps"
    case warmupRatio = "warmup_ratio"
    case lrSchedulerKwargs = "lr_scheduler_kwargs"
    case numTrainEpochs = "num_train_epochs"
    case maxSteps = "max_steps"
    case perDeviceTrainBatchSize = "per_device_train_batch_size"
    case gradientAccumulationSteps = "gradient_accumulation_steps"
    case maxSeqLength = "max_seq_length"
    case packing
    case evalSteps = "eval_steps"
    case evalOnStart = "eval_on_start"
    case perDeviceEvalBatchSize = "per_device_eval_batch_size"
    case earlyStoppingPatience = "early_stopping_patience"
    case saveSteps = "save_steps"
    case saveTotalLimit = "save_total_limit"
    case seed
    case loggingSteps = "logging_steps"
  }

  /// The defaults above.
  public init() {}

  /// Decodes; absent keys keep their defaults. Call `validate()` before use.
  public init(from decoder: any Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    func get<T: Decodable>(_ k: CodingKeys, _ d: T) throws -> T { try c.decodeIfPresent(T.self, forKey: k) ?? d }
    let d = TrainingConfig()
    learningRate = try get(.learningRate, d.learningRate)
    adamBeta1 = try get(.adamBeta1, d.adamBeta1)
    adamBeta2 = try get(.adamBeta2, d.adamBeta2)
    adamEpsilon = try get(.adamEpsilon, d.adamEpsilon)
    weightDecay = try get(.weightDecay, d.weightDecay)
    maxGradNorm = try get(.maxGradNorm, d.maxGradNorm)
    lrSchedulerType = try get(.lrSchedulerType, d.lrSchedulerType)
    warmupSteps = try get(.warmupSteps, d.warmupSteps)
    warmupRatio = try get(.warmupRatio, d.warmupRatio)
    lrSchedulerKwargs = try get(.lrSchedulerKwargs, d.lrSchedulerKwargs)
    numTrainEpochs = try get(.numTrainEpochs, d.numTrainEpochs)
    maxSteps = try get(.maxSteps, d.maxSteps)
    perDeviceTrainBatchSize = try get(.perDeviceTrainBatchSize, d.perDeviceTrainBatchSize)
    gradientAccumulationSteps = try get(.gradientAccumulationSteps, d.gradientAccumulationSteps)
    maxSeqLength = try get(.maxSeqLength, d.maxSeqLength)
    packing = try get(.packing, d.packing)
    evalSteps = try get(.evalSteps, d.evalSteps)
    evalOnStart = try get(.evalOnStart, d.evalOnStart)
    perDeviceEvalBatchSize = try get(.perDeviceEvalBatchSize, d.perDeviceEvalBatchSize)
    earlyStoppingPatience = try get(.earlyStoppingPatience, d.earlyStoppingPatience)
    saveSteps = try get(.saveSteps, d.saveSteps)
    saveTotalLimit = try get(.saveTotalLimit, d.saveTotalLimit)
    seed = try get(.seed, d.seed)
    loggingSteps = try get(.loggingSteps, d.loggingSteps)
  }

  /// Throws `TrainingError.invalidConfig` naming the first bad field.
  public func validate() throws {
    func bad(_ k: CodingKeys, _ v: Any, _ r: String) -> TrainingError {
      .invalidConfig(field: k.rawValue, value: "\(v)", requirement: r)
    }
    guard learningRate > 0, learningRate.isFinite else { throw bad(.learningRate, learningRate, "use a positive number") }
    guard (0..<1).contains(adamBeta1) else { throw bad(.adamBeta1, adamBeta1, "use a value in [0, 1)") }
    guard (0..<1).contains(adamBeta2) else { throw bad(.adamBeta2, adamBeta2, "use a value in [0, 1)") }
    guard adamEpsilon > 0 else { throw bad(.adamEpsilon, adamEpsilon, "use a positive number") }
    guard weightDecay >= 0, weightDecay.isFinite else { throw bad(.weightDecay, weightDecay, "use a number ≥ 0") }
    guard maxGradNorm >= 0, maxGradNorm.isFinite else { throw bad(.maxGradNorm, maxGradNorm, "use a number ≥ 0 (0 disables clipping)") }
    guard maxSteps > 0 || (numTrainEpochs > 0 && numTrainEpochs.isFinite) else {
      throw bad(.numTrainEpochs, numTrainEpochs, "use a positive number of epochs, or set max_steps")
    }
    guard perDeviceTrainBatchSize > 0 else { throw bad(.perDeviceTrainBatchSize, perDeviceTrainBatchSize, "use ≥ 1") }
    guard gradientAccumulationSteps > 0 else { throw bad(.gradientAccumulationSteps, gradientAccumulationSteps, "use ≥ 1") }
    guard maxSeqLength > 1 else { throw bad(.maxSeqLength, maxSeqLength, "use ≥ 2 tokens") }
    for (k, v) in [(CodingKeys.perDeviceEvalBatchSize, perDeviceEvalBatchSize),
                   (.earlyStoppingPatience, earlyStoppingPatience), (.saveTotalLimit, saveTotalLimit)] where v < 0 {
      throw bad(k, v, "use a count ≥ 0 (0 disables)")
    }
    for (k, v) in [(CodingKeys.evalSteps, evalSteps), (.saveSteps, saveSteps), (.loggingSteps, loggingSteps)] {
      if let problem = StepInterval.problem(v) { throw bad(k, StepInterval.formatted(v), problem) }
    }
    guard loggingSteps > 0 else { throw bad(.loggingSteps, loggingSteps, "use ≥ 1 step or a fraction of the run in (0, 1)") }
    // The schedule validates its own fields (name, warmup, kwargs).
    _ = try schedule(totalSteps: 1)
  }

  /// The LR schedule for a run of `totalSteps` optimizer steps.
  public func schedule(totalSteps: Int) throws -> LRSchedule {
    try LRSchedule(lrSchedulerType: lrSchedulerType, learningRate: learningRate, warmupSteps: warmupSteps,
                   warmupRatio: warmupRatio, numTrainingSteps: totalSteps, lrSchedulerKwargs: lrSchedulerKwargs)
  }

  /// The AdamW constants.
  public var adamW: AdamWConfig {
    AdamWConfig(beta1: adamBeta1, beta2: adamBeta2, eps: adamEpsilon, weightDecay: weightDecay,
                maxGradNorm: maxGradNorm)
  }

  /// Hex FNV-1a 64 of the settings that change the numbers of a step sequence (everything
  /// but logging, evaluation, saving and stopping), stored in checkpoints: resuming under a
  /// different hash is refused.
  public var fingerprint: String {
    var c = self
    c.loggingSteps = 0; c.evalSteps = 0; c.evalOnStart = true; c.perDeviceEvalBatchSize = 0; c.earlyStoppingPatience = 0
    c.saveSteps = 0; c.saveTotalLimit = 0
    // Under a schedule that does not depend on the run's length, steps already taken are the
    // same whatever the length: a finished run may be extended with a larger max_steps.
    if (c.lrSchedulerType == "constant" || c.lrSchedulerType == "constant_with_warmup"), c.warmupRatio == 0,
       c.warmupSteps == 0 || c.warmupSteps >= 1 {
      c.maxSteps = 0; c.numTrainEpochs = 0
    }
    let encoder = JSONEncoder()
    encoder.outputFormatting = [.sortedKeys]
    let bytes = (try? encoder.encode(c)) ?? Data()
    var h: UInt64 = 0xCBF2_9CE4_8422_2325
    for b in bytes { h = (h ^ UInt64(b)) &* 0x0000_0100_0000_01B3 }
    return String(h, radix: 16)
  }
}
