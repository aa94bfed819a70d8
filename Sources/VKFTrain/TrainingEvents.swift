// What the trainer reports while it runs: progress lines, evaluations, checkpoints.
import Foundation

/// One logged optimizer step (every `loggingSteps`), for the progress line and metrics.jsonl.
public struct TrainingProgress: Equatable, Sendable {
  /// Completed optimizer steps (1-based step just finished).
  public var step: Int
  /// Steps of the whole run.
  public var totalSteps: Int
  /// Fractional epoch reached (epoch index + share of its micro-batches done).
  public var epoch: Double
  /// Mean step loss since the previous log.
  public var loss: Double
  /// Learning rate of the last update.
  public var learningRate: Float
  /// Global gradient norm of the last step, before clipping.
  public var gradNorm: Float
  /// Non-padding tokens per training second (evaluation and checkpoint time excluded).
  public var tokensPerSecond: Double
  /// Seconds spent training since the run (or resume) started; evaluations and checkpoints excluded.
  public var elapsedSeconds: Double
  /// Estimated seconds to the last step.
  public var etaSeconds: Double
  /// Task-specific means over the logged steps (DPO: "rewards/accuracies", …).
  public var extra: [String: Double] = [:]

  /// `step 12/100 | loss 2.3456 | lr 1.98e-04 | grad 0.812 | 1234 tok/s | eta 3m05s`.
  public var line: String {
    "step \(step)/\(totalSteps) | loss \(String(format: "%.4f", loss)) | lr \(String(format: "%.2e", learningRate))"
      + " | grad \(String(format: "%.3f", gradNorm)) | \(String(format: "%.0f", tokensPerSecond)) tok/s"
      + Self.extraText(extra) + " | eta \(Self.duration(etaSeconds))"
  }

  /// ` | rewards/accuracies 0.625 | rewards/margins 0.312` in key order ("" when empty).
  public static func extraText(_ extra: [String: Double]) -> String {
    extra.keys.sorted().filter { $0 != "loss" }.map { " | \($0) \(String(format: "%.4g", extra[$0] ?? .nan))" }.joined()
  }

  /// `1h02m`, `3m05s` or `42s`.
  public static func duration(_ seconds: Double) -> String {
    guard seconds.isFinite, seconds >= 0 else { return "?" }
    let s = Int(seconds.rounded())
    if s >= 3600 { return String(format: "%dh%02dm", s / 3600, (s % 3600) / 60) }
    if s >= 60 { return String(format: "%dm%02ds", s / 60, s % 60) }
    return "\(s)s"
  }
}

/// One evaluation on the validation set.
public struct EvaluationResult: Equatable, Sendable {
  /// Completed optimizer steps when it ran.
  public var step: Int
  /// Mean loss over every trained validation target.
  public var loss: Double
  /// exp(loss).
  public var perplexity: Double
  /// Trained validation targets.
  public var tokens: Int
  /// True when this is the best (lowest) loss so far.
  public var isBest: Bool
  /// Task-specific means over the validation set (DPO: "rewards/accuracies", …).
  public var extra: [String: Double] = [:]

  /// `eval step 50 | loss 1.8765 | ppl 6.53 (best)`.
  public var line: String {
    "eval step \(step) | loss \(String(format: "%.4f", loss)) | ppl \(String(format: "%.2f", perplexity))"
      + TrainingProgress.extraText(extra) + (isBest ? " (best)" : "")
  }
}

/// Everything the trainer reports through `Trainer.onEvent`.
public enum TrainingEvent {
  /// A logged step (every `loggingSteps` and the last).
  case progress(TrainingProgress)
  /// An evaluation has run `batch` of its `of` batches, `elapsedSeconds` after it started
  /// (after every batch; a front end prints a line now and then).
  case evaluating(batch: Int, of: Int, elapsedSeconds: Double)
  /// An evaluation finished.
  case evaluation(EvaluationResult)
  /// A checkpoint was written (its directory).
  case checkpointSaved(URL)
  /// Resuming skipped an unusable checkpoint (its directory and why).
  case checkpointSkipped(URL, reason: String)
  /// Training resumed from this checkpoint at this step.
  case resumed(URL, step: Int)
  /// fp16: this step's loss or gradients were inf/NaN, so its update was skipped and the
  /// loss scale went from `scale` to `newScale` (torch GradScaler's backoff).
  case stepSkipped(step: Int, scale: Double, newScale: Double)
  /// Early stopping: `patience` evaluations without improvement; best was at `bestStep`.
  case earlyStopped(step: Int, bestStep: Int)
}

/// How a run ended.
public struct TrainingSummary: Equatable, Sendable {
  /// Completed optimizer steps.
  public var steps: Int
  /// Loss of the last step.
  public var finalLoss: Double
  /// Best evaluation, when there was validation data.
  public var bestEvaluation: EvaluationResult?
  /// True when early stopping ended the run (the trainables were reset to the best ones).
  public var stoppedEarly: Bool
}
