import Foundation

/// The training progress line: `step 12/200 | loss 1.234 | lr 2.0e-04 | 1234 tok/s | ETA 3m12s`,
/// redrawn in place with `\r` on a terminal, one plain line per logging step otherwise (logs, CI).
final class ProgressLine {
  /// True when stdout is a terminal.
  let redraws: Bool
  private var drawn = false

  init(redraws: Bool = isatty(STDOUT_FILENO) == 1) { self.redraws = redraws }

  /// Shows a step's numbers: redraws the line on a terminal, else prints it.
  func update(step: Int, of total: Int, loss: Double, lr: Double, tokensPerSecond: Double, eta: Double?) {
    let line = Self.format(step: step, of: total, loss: loss, lr: lr, tokensPerSecond: tokensPerSecond, eta: eta)
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

  /// Ends the redrawn line (so the next output starts on a fresh line).
  func finishLine() {
    if redraws, drawn {
      print("")
      drawn = false
    }
  }

  /// The line's text.
  static func format(step: Int, of total: Int, loss: Double, lr: Double, tokensPerSecond: Double,
                     eta: Double?) -> String {
    var parts = ["step \(step)/\(total)", String(format: "loss %.3f", loss), "lr " + scientific(lr),
                 String(format: "%.0f tok/s", tokensPerSecond)]
    if let eta { parts.append("ETA " + duration(eta)) }
    return parts.joined(separator: " | ")
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
