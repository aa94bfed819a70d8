// The validated form of each schedule and its LambdaLR multiplier.
// Formulas match transformers 5.23 `optimization.py` term by term, in f64, so the multiplier
// agrees with Python's to the last bit or two (same libm `cos`/`sqrt`/`pow`).
import Foundation

/// Warmup / decay curve names of `warmup_stable_decay`.
enum WSDCurve: String, CaseIterable, Sendable {
  case linear, cosine, oneMinusSqrt = "1-sqrt"
}

/// A schedule with every default resolved; `lambda` is its LambdaLR multiplier.
enum ScheduleShape: Equatable, Sendable {
  case constant
  case constantWithWarmup(warmup: Int)
  case linear(warmup: Int, total: Int)
  /// `cosine` (minRate 0) and `cosine_with_min_lr`.
  case cosine(warmup: Int, total: Int, cycles: Double, minRate: Double)
  case cosineWithRestarts(warmup: Int, total: Int, cycles: Double)
  case polynomial(warmup: Int, total: Int, lrEnd: Double, power: Double, lrInit: Double)
  case inverseSqrt(warmup: Int, timescale: Int)
  case warmupStableDecay(warmup: Int, stable: Int, decay: Int, warmupCurve: WSDCurve,
                         decayCurve: WSDCurve, minRatio: Double, cycles: Double)

  /// The kwargs each schedule takes (from the transformers function signatures).
  static let acceptedKwargs: [String: [String]] = [
    "constant": [], "constant_with_warmup": [], "linear": [],
    "cosine": ["num_cycles"], "cosine_with_restarts": ["num_cycles"],
    "polynomial": ["lr_end", "power"], "inverse_sqrt": ["timescale"],
    "cosine_with_min_lr": ["num_cycles", "min_lr", "min_lr_rate"],
    "warmup_stable_decay": ["num_stable_steps", "num_decay_steps", "warmup_type", "decay_type",
                            "min_lr_ratio", "num_cycles"],
  ]

  /// Validates `kwargs` for `type` and fills in transformers' defaults.
  init(type: String, learningRate: Double, warmup w: Int, total: Int,
       kwargs k: LRSchedulerKwargs) throws(LRScheduleError) {
    guard let accepted = Self.acceptedKwargs[type] else {
      throw .unknownSchedulerType(type, supported: LRSchedule.supportedTypes)
    }
    let unexpected = k.setKeys.filter { !accepted.contains($0) }
    guard unexpected.isEmpty else {
      throw .unexpectedKwargs(unexpected, schedulerType: type, accepted: accepted)
    }
    switch type {
    case "constant": self = .constant
    case "constant_with_warmup": self = .constantWithWarmup(warmup: w)
    case "linear": self = .linear(warmup: w, total: total)
    case "cosine": self = .cosine(warmup: w, total: total, cycles: k.numCycles ?? 0.5, minRate: 0)
    case "cosine_with_restarts":
      self = .cosineWithRestarts(warmup: w, total: total, cycles: k.numCycles ?? 1)
    case "polynomial":
      let lrEnd = k.lrEnd ?? 1e-7
      guard learningRate > lrEnd else {
        throw .invalidValue(field: "lr_scheduler_kwargs.lr_end", value: "\(lrEnd)",
                            requirement: "must be below learning_rate (\(learningRate))")
      }
      guard total > w else {  // transformers divides by (total - warmup) here
        throw .invalidValue(field: "num_training_steps", value: "\(total)",
                            requirement: "polynomial needs more training steps than warmup steps (\(w))")
      }
      self = .polynomial(warmup: w, total: total, lrEnd: lrEnd, power: k.power ?? 1, lrInit: learningRate)
    case "inverse_sqrt":
      let timescale = k.timescale ?? (w > 0 ? w : 10_000)
      guard timescale > 0 else {
        throw .invalidValue(field: "lr_scheduler_kwargs.timescale", value: "\(timescale)", requirement: "use a positive step count")
      }
      self = .inverseSqrt(warmup: w, timescale: timescale)
    case "cosine_with_min_lr":
      let rate: Double
      switch (k.minLr, k.minLrRate) {
      case (.some, .some): throw .conflictingKwargs("min_lr", "min_lr_rate", schedulerType: type)
      case let (.some(minLr), nil): rate = minLr / learningRate
      case let (nil, .some(minLrRate)): rate = minLrRate
      case (nil, nil):
        throw .missingKwarg("min_lr", schedulerType: type,
                            hint: "set min_lr (absolute) or min_lr_rate (fraction of learning_rate)")
      }
      self = .cosine(warmup: w, total: total, cycles: k.numCycles ?? 0.5, minRate: rate)
    default:  // "warmup_stable_decay"
      guard let decay = k.numDecaySteps else {
        throw .missingKwarg("num_decay_steps", schedulerType: type,
                            hint: "set the length of the final decay phase in optimizer steps")
      }
      let stable = k.numStableSteps ?? (total - w - decay)
      guard decay >= 0, stable >= 0 else {
        throw .invalidValue(field: "lr_scheduler_kwargs.num_stable_steps/num_decay_steps",
                            value: "\(stable)/\(decay)",
                            requirement: "warmup (\(w)) + stable + decay must fit in num_training_steps (\(total)); shorten one")
      }
      let curves = WSDCurve.allCases.map(\.rawValue).joined(separator: ", ")
      guard let up = WSDCurve(rawValue: k.warmupType ?? "linear") else {
        throw .invalidValue(field: "lr_scheduler_kwargs.warmup_type", value: k.warmupType ?? "", requirement: "use one of \(curves)")
      }
      guard let down = WSDCurve(rawValue: k.decayType ?? "cosine") else {
        throw .invalidValue(field: "lr_scheduler_kwargs.decay_type", value: k.decayType ?? "", requirement: "use one of \(curves)")
      }
      self = .warmupStableDecay(warmup: w, stable: stable, decay: decay, warmupCurve: up, decayCurve: down,
                                minRatio: k.minLrRatio ?? 0, cycles: k.numCycles ?? 0.5)
    }
  }

  /// Linear warmup shared by every schedule but WSD: step / max(1, warmup).
  private static func warmupRamp(_ step: Int, _ warmup: Int) -> Double {
    Double(step) / Double(max(1, warmup))
  }

  /// The LambdaLR multiplier after `step` (≥ 0) completed optimizer steps.
  func lambda(_ step: Int) -> Double {
    switch self {
    case .constant:
      return 1
    case let .constantWithWarmup(w):
      return step < w ? Self.warmupRamp(step, w) : 1
    case let .linear(w, total):
      if step < w { return Self.warmupRamp(step, w) }
      return max(0, Double(total - step) / Double(max(1, total - w)))
    case let .cosine(w, total, cycles, minRate):
      if step < w { return Self.warmupRamp(step, w) }
      let progress = Double(step - w) / Double(max(1, total - w))
      let factor = 0.5 * (1 + cos(Double.pi * cycles * 2 * progress))
      return max(0, factor * (1 - minRate) + minRate)
    case let .cosineWithRestarts(w, total, cycles):
      if step < w { return Self.warmupRamp(step, w) }
      let progress = Double(step - w) / Double(max(1, total - w))
      if progress >= 1 { return 0 }
      // Python's float % equals fmod here: both operands are non-negative.
      return max(0, 0.5 * (1 + cos(Double.pi * (cycles * progress).truncatingRemainder(dividingBy: 1))))
    case let .polynomial(w, total, lrEnd, power, lrInit):
      if step < w { return Self.warmupRamp(step, w) }
      if step > total { return lrEnd / lrInit }
      let pctRemaining = 1 - Double(step - w) / Double(total - w)
      return ((lrInit - lrEnd) * pow(pctRemaining, power) + lrEnd) / lrInit
    case let .inverseSqrt(w, timescale):
      if step < w { return Self.warmupRamp(step, w) }
      let shift = timescale - w
      return 1 / (Double(step + shift) / Double(timescale)).squareRoot()
    case let .warmupStableDecay(w, stable, decay, up, down, minRatio, cycles):
      if step < w {
        let progress = Self.warmupRamp(step, w)
        let factor: Double
        switch up {
        case .linear: factor = progress
        case .cosine: factor = 0.5 * (1 - cos(Double.pi * progress))
        case .oneMinusSqrt: factor = 1 - (1 - progress).squareRoot()
        }
        return max(0, factor * (1 - minRatio) + minRatio)
      }
      if step < w + stable { return 1 }
      if step < w + stable + decay {
        let progress = Double(step - w - stable) / Double(max(1, decay))
        let factor: Double
        switch down {
        case .linear: factor = 1 - progress
        case .cosine: factor = 0.5 * (1 + cos(Double.pi * cycles * 2 * progress))
        case .oneMinusSqrt: factor = 1 - progress.squareRoot()
        }
        return max(0, factor * (1 - minRatio) + minRatio)
      }
      return minRatio
    }
  }
}
