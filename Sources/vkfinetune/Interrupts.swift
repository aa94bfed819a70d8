import Foundation
import Synchronization

/// Set by the first Ctrl-C or SIGTERM while `Interrupts.installed` runs.
private let interruptRequested = Atomic<Bool>(false)

/// Ctrl-C and SIGTERM during training: the first asks the trainer to stop between optimizer
/// steps, so the run ends through its error path (the output directory put back, or its
/// checkpoints kept, and said so); the handler then steps aside, so a second one ends the
/// process at once.
enum Interrupts {
  /// Whether a stop was asked for.
  static var requested: Bool { interruptRequested.load(ordering: .relaxed) }

  /// Runs `body` with the handlers installed, then restores the default actions.
  static func installed<T>(_ body: () throws -> T) rethrows -> T {
    interruptRequested.store(false, ordering: .relaxed)
    signal(SIGINT, handle)
    signal(SIGTERM, handle)
    defer {
      signal(SIGINT, SIG_DFL)
      signal(SIGTERM, SIG_DFL)
    }
    return try body()
  }
}

/// The signal handler: only async-signal-safe calls (an atomic store, signal, write).
private func handle(_ signalNumber: Int32) {
  interruptRequested.store(true, ordering: .relaxed)
  signal(signalNumber, SIG_DFL)
  let note = "\nstopping after the current step (again to quit at once)\n"
  note.utf8CString.withUnsafeBufferPointer { p in
    _ = write(STDERR_FILENO, p.baseAddress, p.count - 1)
  }
}
