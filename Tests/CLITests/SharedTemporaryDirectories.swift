import Foundation

/// Directories that several tests share (a model trained once per test process), removed
/// when the process exits: no test owns them, so no tearDown may remove them, and left
/// behind they cost gigabytes of /tmp per run (checkpoints, merged models).
enum SharedTemporaryDirectories {
  nonisolated(unsafe) private static var paths: [URL] = []
  private static let lock = NSLock()

  /// Creates `url` (and parents) and removes it with everything in it at process exit.
  static func make(_ url: URL) throws -> URL {
    try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    lock.lock(); defer { lock.unlock() }
    if paths.isEmpty { atexit { SharedTemporaryDirectories.removeAll() } }
    paths.append(url)
    return url
  }

  private static func removeAll() {
    lock.lock(); defer { lock.unlock() }
    for url in paths { try? FileManager.default.removeItem(at: url) }
    paths = []
  }
}
