import Foundation

/// A test seam for crash safety: `VKF_CRASH_AFTER=<name>` ends the process with SIGKILL (as
/// `kill -9` or a power cut would, with no cleanup) right after the file `<name>` is written:
/// a checkpoint's file by its path in the output directory (`checkpoint-2/optimizer.safetensors`)
/// or a final output file once moved into place (`adapter_model.safetensors`).
enum CrashSeam {
  /// The file name after which to crash, if set.
  static let target = ProcessInfo.processInfo.environment["VKF_CRASH_AFTER"].flatMap { $0.isEmpty ? nil : $0 }

  /// Crashes when `name` is the target.
  static func written(_ name: String) {
    guard let target, name == target else { return }
    kill(getpid(), SIGKILL)
  }
}
