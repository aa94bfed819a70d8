// transformers' reading of eval_steps / save_steps / logging_steps.
import Foundation

/// How often something happens during a run, as transformers' `TrainingArguments` reads
/// `eval_steps`, `save_steps` and `logging_steps`: a whole count of optimizer steps (≥ 1), or a
/// fraction of the run in (0, 1) rounded up (`math.ceil(max_steps * eval_steps)` in
/// `Trainer`); 0 means "not by steps" (at the end only, or never).
public enum StepInterval {
  /// The interval in optimizer steps for a run of `totalSteps` (0 stays 0).
  public static func steps(_ value: Double, totalSteps: Int) -> Int {
    guard value > 0 else { return 0 }
    if value < 1 { return max(1, Int((value * Double(totalSteps)).rounded(.up))) }
    return Int(value)
  }

  /// Why `value` is not an interval, or nil: negative, not finite, or ≥ 1 with a fraction.
  public static func problem(_ value: Double) -> String? {
    guard value.isFinite, value >= 0 else { return "use a step count ≥ 0 or a fraction of the run in (0, 1)" }
    guard value < 1 || value == value.rounded(), value < 1e15 else {
      return "use a whole step count, or a fraction of the run in (0, 1) as transformers does"
    }
    return nil
  }

  /// "every 4 steps", or "every 4 steps (eval_steps 0.1 of 40)" when `key` held a fraction;
  /// nil for 0. For plan lines.
  public static func describe(_ key: String, _ value: Double, totalSteps: Int) -> String? {
    let n = steps(value, totalSteps: totalSteps)
    guard n > 0 else { return nil }
    let every = n == 1 ? "every step" : "every \(n) steps"
    return value < 1 ? "\(every) (\(key) \(formatted(value)) of \(totalSteps))" : every
  }

  /// `value` without a trailing ".0" (3 → "3", 0.25 → "0.25").
  public static func formatted(_ value: Double) -> String {
    value == value.rounded() && abs(value) < 1e15 ? String(Int(value)) : String(value)
  }
}
