import Foundation
import VKFTrain

/// The training progress line: `step 12/200 | loss 1.234 | lr 2.0e-04 | 1234 tok/s | ETA 3m12s`
/// (preference objectives add `| acc 0.625 | margin +0.312` after the lr: rewards/accuracies and
/// rewards/margins of the logged steps), redrawn in place with `\r` on a terminal, one plain line per logging step otherwise (logs, CI).
final class ProgressLine {
  /// True when stdout is a terminal.
  let redraws: Bool
  private var drawn = false

  init(redraws: Bool = isatty(STDOUT_FILENO) == 1) { self.redraws = redraws }

  /// Shows a step's numbers: redraws the line on a terminal, else prints it.
  func update(step: Int, of total: Int, loss: Double, lr: Double, tokensPerSecond: Double, eta: Double?,
              extra: [String: Double] = [:]) {
    let line = Self.format(step: step, of: total, loss: loss, lr: lr, tokensPerSecond: tokensPerSecond, eta: eta,
                           extra: extra)
    if redraws {
      // \r back to column 0, ESC[K clears what a longer earlier line left.
      print("\r\(line)\u{1B}[K", terminator: "")
      fflush(nil)
      drawn = true
    } else {
      print(line)
      fflush(nil)
    }
  }

  /// Prints a message on its own line without breaking the redrawn progress line.
  func message(_ text: String) {
    finishLine()
    print(text)
    fflush(nil)
  }

  /// Prints `warning: <text>` on stderr, on its own line.
  func warning(_ text: String) {
    finishLine()
    fflush(nil)
    FileHandle.standardError.write(Data("warning: \(text)\n".utf8))
  }

  /// Ends the redrawn line (so the next output starts on a fresh line).
  func finishLine() {
    if redraws, drawn {
      print("")
      drawn = false
    }
  }

  /// The line's text.
  static func format(step: Int, of total: Int, loss: Double, lr: Double, tokensPerSecond: Double,
                     eta: Double?, extra: [String: Double] = [:]) -> String {
    var parts = ["step \(step)/\(total)", String(format: "loss %.3f", loss), "lr " + scientific(lr)]
    parts += rewardParts(extra)
    parts.append(String(format: "%.0f tok/s", tokensPerSecond))
    if let eta { parts.append("ETA " + duration(eta)) }
    return parts.joined(separator: " | ")
  }

  /// `acc 0.625`, `margin +0.312` from a preference task's rewards/accuracies and
  /// rewards/margins (nothing for SFT, whose tasks report no such metrics).
  static func rewardParts(_ extra: [String: Double]) -> [String] {
    var parts: [String] = []
    if let a = extra["rewards/accuracies"] { parts.append(String(format: "acc %.3f", a)) }
    if let m = extra["rewards/margins"] { parts.append(String(format: "margin %+.3f", m)) }
    // GRPO: the mean reward of the step's completions, their KL to the reference.
    if let r = extra["reward"] { parts.append(String(format: "reward %.3f", r)) }
    if let k = extra["kl"] { parts.append(String(format: "kl %.4f", k)) }
    // PPO: the reward model's mean score of the step's completions, the KL penalty's KL.
    if let r = extra["objective/scores"] { parts.append(String(format: "score %.3f", r)) }
    if let k = extra["objective/kl"] { parts.append(String(format: "kl %.3f", k)) }
    return parts
  }

  /// `eval step 20 | mean reward 0.412 | numeric_match 0.350 | number_only 0.062 | length 6.1 (best)`:
  /// a GRPO evaluation (its "loss" is −mean reward).
  static func grpoEvaluation(_ r: EvaluationResult) -> String {
    var parts = ["eval step \(r.step)", String(format: "mean reward %.4f", -r.loss)]
    for (k, v) in r.extra.sorted(by: { $0.key < $1.key }) where k.hasPrefix("rewards/") && k.hasSuffix("/mean") {
      parts.append(String(format: "%@ %.3f", String(k.dropFirst(8).dropLast(5)), v))
    }
    if let l = r.extra["completions/mean_length"] { parts.append(String(format: "length %.1f", l)) }
    parts.append("\(r.tokens) completions")
    return parts.joined(separator: " | ") + (r.isBest ? " (best)" : "")
  }

  /// `eval step 20 | mean score 1.234 | length 41.2 | 28/32 ended (best)`: a PPO evaluation
  /// (greedy completions of the validation prompts scored by the reward model; its "loss" is
  /// −mean score).
  static func ppoEvaluation(_ r: EvaluationResult) -> String {
    var parts = ["eval step \(r.step)", String(format: "mean score %.4f", -r.loss)]
    if let l = r.extra["completions/mean_length"] { parts.append(String(format: "length %.1f", l)) }
    parts.append("\(r.tokens) completions")
    return parts.joined(separator: " | ") + (r.isBest ? " (best)" : "")
  }

  /// `eval step 50 | loss 0.6512 | acc 0.620 | margin +0.105 | chosen +0.051 | rejected -0.054 (best)`:
  /// a preference evaluation (its perplexity means nothing: the loss is per pair).
  static func preferenceEvaluation(_ r: EvaluationResult) -> String {
    var parts = ["eval step \(r.step)", String(format: "loss %.4f", r.loss)] + rewardParts(r.extra)
    if let c = r.extra["rewards/chosen"] { parts.append(String(format: "chosen %+.3f", c)) }
    if let j = r.extra["rewards/rejected"] { parts.append(String(format: "rejected %+.3f", j)) }
    parts.append("\(r.tokens) pairs")
    return parts.joined(separator: " | ") + (r.isBest ? " (best)" : "")
  }

  /// `2.0e-04`: two significant digits, exponent padded to two digits as Python's `%.1e`.
  static func scientific(_ x: Double) -> String { String(format: "%.1e", x) }

  /// `3m12s`, `1h05m`, `42s`.
  static func duration(_ seconds: Double) -> String {
    guard seconds.isFinite, seconds >= 0 else { return "?" }
    let s = Int(seconds.rounded())
    if s >= 3600 { return String(format: "%dh%02dm", s / 3600, (s % 3600) / 60) }
    if s >= 60 { return String(format: "%dm%02ds", s / 60, s % 60) }
    return "\(s)s"
  }
}
