import VKFCore

/// Why training cannot start or had to stop; each message is one line saying what to do.
public enum TrainingError: Error, CustomStringConvertible, Equatable {
  /// A `TrainingConfig` field is out of range.
  case invalidConfig(field: String, value: String, requirement: String)
  /// A batch does not have the shape its fields claim, or ids do not fit the model.
  case invalidBatch(String)
  /// The training set produced no trainable target.
  case noTrainingData(String)
  /// The loss or gradient norm became NaN/inf at this optimizer step (1-based).
  case nonFinite(step: Int, what: String, value: Float, lastCheckpoint: String?)
  /// The run was asked to stop (Ctrl-C, SIGTERM) after `step` optimizer steps.
  case interrupted(step: Int, lastCheckpoint: String?)
  /// The estimated memory exceeds the budget (the message carries the advice).
  case doesNotFit(String)
  /// A checkpoint is missing, incomplete or does not belong to this run.
  case checkpoint(path: String, detail: String)

  public var description: String {
    switch self {
    case .invalidConfig(let f, let v, let r): return "training config: \(f) = \(v): \(r)"
    case .invalidBatch(let d): return "invalid batch: \(d)"
    case .noTrainingData(let d): return "no training data: \(d)"
    case .nonFinite(let step, let what, let value, let last):
      // A resumed run must keep the checkpoint's settings (its fingerprint): a lower learning
      // rate means starting over.
      let resume = last.map { "; the last good checkpoint is \($0) (--resume retries from it with the same settings; "
        + "a lower learning rate or max grad norm means starting over with --overwrite)" }
        ?? "; no checkpoint was saved yet (lower the learning rate or set a max grad norm)"
      // Python's spelling: "-nan" is a sign bit, not a different failure.
      let shown = value.isNaN ? "NaN" : value.isInfinite ? (value < 0 ? "-inf" : "inf") : "\(value)"
      return "training stopped at step \(step): \(what) is \(shown)\(resume)"
    case .interrupted(let step, let last):
      return "interrupted after step \(step)" + (last.map { "; the last checkpoint is \($0) (--resume continues from it)" }
        ?? "; no checkpoint was saved yet")
    case .doesNotFit(let d): return d
    case .checkpoint(let p, let d): return "checkpoint \(p): \(d)"
    }
  }
}
