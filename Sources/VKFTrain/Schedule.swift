// Learning-rate schedules with Hugging Face transformers' names and semantics.
// Matches transformers 5.23 `optimization.py` (`get_scheduler` and the `_lr_lambda`s) driven
// by torch's LambdaLR, as `Trainer.create_scheduler` builds them.
import Foundation

/// A learning-rate schedule config (keys as in `TrainingArguments`) and its evaluation.
///
/// Decoding validates: an unknown `lr_scheduler_type`, kwargs the schedule does not take, or a
/// missing required kwarg throw `LRScheduleError`. Deliberate difference from transformers:
/// `constant` and `constant_with_warmup` reject kwargs (transformers silently ignores them).
public struct LRSchedule: Codable, Equatable, Sendable {
  /// Schedule names accepted in `lr_scheduler_type`, in transformers' `SchedulerType` order.
  public static let supportedTypes = [
    "linear", "cosine", "cosine_with_restarts", "polynomial", "constant", "constant_with_warmup",
    "inverse_sqrt", "cosine_with_min_lr", "warmup_stable_decay",
  ]

  /// `lr_scheduler_type`: the schedule name (default `linear`, as transformers).
  public let lrSchedulerType: String
  /// `learning_rate`: peak (base) learning rate the multiplier scales (default 5e-5, as transformers).
  public let learningRate: Double
  /// `warmup_steps`: ≥ 1 is a step count (truncated to an integer); in (0, 1) a fraction of
  /// `num_training_steps`, rounded up (transformers 5). Default 0.
  public let warmupSteps: Double
  /// `warmup_ratio`: fraction of `num_training_steps`, rounded up; used only when
  /// `warmup_steps` is 0 (transformers 4). Default 0.
  public let warmupRatio: Double
  /// `num_training_steps`: total optimizer steps of the run (required).
  public let numTrainingSteps: Int
  /// `lr_scheduler_kwargs`: schedule-specific extras (default none).
  public let lrSchedulerKwargs: LRSchedulerKwargs
  /// Warmup length in optimizer steps after resolving `warmup_steps` / `warmup_ratio`.
  public let resolvedWarmupSteps: Int
  /// The validated schedule with every default filled in.
  let shape: ScheduleShape

  enum CodingKeys: String, CodingKey {
    case lrSchedulerType = "lr_scheduler_type"
    case learningRate = "learning_rate"
    case warmupSteps = "warmup_steps"
    case warmupRatio = "warmup_ratio"
    case numTrainingSteps = "num_training_steps"
    case lrSchedulerKwargs = "lr_scheduler_kwargs"
  }

  /// Builds and validates a schedule; see the properties for defaults.
  public init(
    lrSchedulerType: String = "linear", learningRate: Double = 5e-5, warmupSteps: Double = 0,
    warmupRatio: Double = 0, numTrainingSteps: Int, lrSchedulerKwargs: LRSchedulerKwargs = .init()
  ) throws(LRScheduleError) {
    self.lrSchedulerType = lrSchedulerType
    self.learningRate = learningRate
    self.warmupSteps = warmupSteps
    self.warmupRatio = warmupRatio
    self.numTrainingSteps = numTrainingSteps
    self.lrSchedulerKwargs = lrSchedulerKwargs
    guard learningRate > 0, learningRate.isFinite else {
      throw .invalidValue(field: "learning_rate", value: "\(learningRate)", requirement: "use a positive number")
    }
    guard numTrainingSteps >= 0 else {
      throw .invalidValue(field: "num_training_steps", value: "\(numTrainingSteps)", requirement: "use a count ≥ 0")
    }
    resolvedWarmupSteps = try Self.resolveWarmup(steps: warmupSteps, ratio: warmupRatio, total: numTrainingSteps)
    shape = try ScheduleShape(
      type: lrSchedulerType, learningRate: learningRate, warmup: resolvedWarmupSteps,
      total: numTrainingSteps, kwargs: lrSchedulerKwargs)
  }

  /// Decodes the config (absent keys take their defaults) and validates it.
  public init(from decoder: any Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    try self.init(
      lrSchedulerType: c.decodeIfPresent(String.self, forKey: .lrSchedulerType) ?? "linear",
      learningRate: c.decodeIfPresent(Double.self, forKey: .learningRate) ?? 5e-5,
      warmupSteps: c.decodeIfPresent(Double.self, forKey: .warmupSteps) ?? 0,
      warmupRatio: c.decodeIfPresent(Double.self, forKey: .warmupRatio) ?? 0,
      numTrainingSteps: c.decode(Int.self, forKey: .numTrainingSteps),
      lrSchedulerKwargs: c.decodeIfPresent(LRSchedulerKwargs.self, forKey: .lrSchedulerKwargs) ?? .init())
  }

  /// Encodes the config fields as given (not the resolved values).
  public func encode(to encoder: any Encoder) throws {
    var c = encoder.container(keyedBy: CodingKeys.self)
    try c.encode(lrSchedulerType, forKey: .lrSchedulerType)
    try c.encode(learningRate, forKey: .learningRate)
    try c.encode(warmupSteps, forKey: .warmupSteps)
    try c.encode(warmupRatio, forKey: .warmupRatio)
    try c.encode(numTrainingSteps, forKey: .numTrainingSteps)
    try c.encode(lrSchedulerKwargs, forKey: .lrSchedulerKwargs)
  }

  /// The learning rate for the update that follows `step` completed optimizer steps
  /// (LambdaLR's `last_epoch`; `get_last_lr()` after `step` scheduler steps). Negative → 0.
  public func learningRate(step: Int) -> Float {
    // Same association as LambdaLR: base_lr * lambda(step), in f64, rounded once to f32.
    Float(learningRate * multiplier(step: step))
  }

  /// The factor LambdaLR multiplies `learning_rate` by after `step` completed optimizer steps.
  public func multiplier(step: Int) -> Double {
    shape.lambda(max(0, step))
  }

  // Matches TrainingArguments.get_warmup_steps (5.x) with 4.x's warmup_ratio fallback.
  static func resolveWarmup(steps: Double, ratio: Double, total: Int) throws(LRScheduleError) -> Int {
    guard steps >= 0, steps.isFinite else {
      throw .invalidValue(field: "warmup_steps", value: "\(steps)",
                          requirement: "use a step count ≥ 1 or a fraction of the run in [0, 1)")
    }
    guard ratio >= 0, ratio <= 1 else {
      throw .invalidValue(field: "warmup_ratio", value: "\(ratio)", requirement: "use a fraction in [0, 1]")
    }
    if steps >= 1 { return Int(steps) }
    let fraction = steps > 0 ? steps : ratio
    return Int((Double(total) * fraction).rounded(.up))
  }
}
