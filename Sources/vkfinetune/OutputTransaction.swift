import Foundation
import VKFModel
import VKFTrain

/// What a `train` run does to its output directory, undone when the run fails.
///
/// A failed run (a NaN loss, device OOM, a full disk, Ctrl-C) leaves the directory as it found
/// it — unless it saved a checkpoint: then it leaves what `--resume` continues from (the
/// checkpoints, logs, objective record, reference log-probs and best adapter), and says so. `--overwrite` moves the previous contents aside (a rename, no
/// copy) instead of deleting them: a run that fails before its first checkpoint puts them
/// back; a run that succeeds, or leaves a checkpoint, deletes them.
///
/// A `kill -9` cannot be undone: the checkpoints and every file written are all-or-nothing
/// (`checkpoint-<step>.tmp/` and `.vkf-tmp-*` leftovers are ignored by `--resume` and removed
/// by the next run's `begin`).
struct OutputTransaction {
  /// The output directory.
  let directory: URL
  /// Whether the directory existed before the run.
  let existed: Bool
  /// Top-level names in the directory before the run (after `--overwrite` moved them aside).
  let before: Set<String>
  /// Where `--overwrite` moved the previous contents; nil without `--overwrite`.
  let previous: URL?

  /// The best evaluation's adapter or model, beside the final one.
  static let bestName = "best"

  /// The hidden directory `--overwrite` moves previous contents into.
  static let previousName = AtomicWrite.temporaryPrefix + "previous"

  /// Records the directory's state; with `overwrite`, moves its contents aside.
  static func begin(_ dir: URL, overwrite: Bool) throws -> OutputTransaction {
    let fm = FileManager.default
    var isDirectory: ObjCBool = false
    let existed = fm.fileExists(atPath: dir.path, isDirectory: &isDirectory) && isDirectory.boolValue
    var names = Set((try? fm.contentsOfDirectory(atPath: dir.path)) ?? [])
    // A killed run's leftovers: half-written files and checkpoints, contents moved aside.
    for name in names where Self.isLeftover(name) {
      try? fm.removeItem(at: dir.appendingPathComponent(name))
      names.remove(name)
    }
    guard overwrite, !names.isEmpty else {
      return OutputTransaction(directory: dir, existed: existed, before: names, previous: nil)
    }
    let previous = dir.appendingPathComponent(previousName)
    do { try fm.createDirectory(at: previous, withIntermediateDirectories: false) } catch {
      throw RecipeError("--overwrite: cannot create \(previous.path) (\(RecipeFile.reason(error)))")
    }
    for name in names.sorted() {
      let from = dir.appendingPathComponent(name), to = previous.appendingPathComponent(name)
      guard rename(from.path, to.path) == 0 else {
        let reason = String(cString: strerror(errno))
        Self.restore(from: previous, into: dir)
        throw RecipeError("--overwrite: cannot move \(from.path) aside (\(reason)); nothing was changed")
      }
    }
    return OutputTransaction(directory: dir, existed: existed, before: [], previous: previous)
  }

  /// Whether `name` is a killed run's leftover: a `.vkf-tmp-*` file or directory, or a
  /// `checkpoint-<step>.tmp` directory.
  static func isLeftover(_ name: String) -> Bool {
    name.hasPrefix(AtomicWrite.temporaryPrefix)
      || (name.hasPrefix(CheckpointLayout.prefix) && name.hasSuffix(".tmp"))
  }

  /// The run succeeded: the previous contents go.
  func commit() {
    if let previous { try? FileManager.default.removeItem(at: previous) }
  }

  /// The run failed: removes what it wrote, or keeps its files when it saved a checkpoint.
  /// Returns the checkpoint kept and a clause for the error line saying so, or nil when the
  /// directory is as it was.
  func rollback() -> (name: String, clause: String)? {
    let fm = FileManager.default
    let now = Set((try? fm.contentsOfDirectory(atPath: directory.path)) ?? [])
    let written = now.subtracting(before).filter { $0 != previous?.lastPathComponent }
    let checkpoints = CheckpointLayout.checkpoints(in: directory).filter { written.contains($0.url.lastPathComponent) }
    if let newest = checkpoints.first {
      // What `--resume` reads or continues; anything else (a half-moved final adapter, leftovers) goes.
      let resumable = Set(checkpoints.map { $0.url.lastPathComponent } + CheckpointLayout.logFiles
        + [ObjectiveRecord.fileName, ReferenceLogProbs.fileName, Self.bestName])
      for name in written where !resumable.contains(name) { try? fm.removeItem(at: directory.appendingPathComponent(name)) }
      commit()
      let name = newest.url.lastPathComponent
      return (name, "kept \(name) in \(directory.path): --resume continues from it")
    }
    for name in written { try? fm.removeItem(at: directory.appendingPathComponent(name)) }
    if let previous { Self.restore(from: previous, into: directory) }
    if !existed, ((try? fm.contentsOfDirectory(atPath: directory.path)) ?? []).isEmpty {
      try? fm.removeItem(at: directory)
    }
    return nil
  }

  /// Moves everything in `previous` back into `dir` and removes `previous`.
  private static func restore(from previous: URL, into dir: URL) {
    let fm = FileManager.default
    for name in (try? fm.contentsOfDirectory(atPath: previous.path)) ?? [] {
      _ = rename(previous.appendingPathComponent(name).path, dir.appendingPathComponent(name).path)
    }
    try? fm.removeItem(at: previous)
  }
}
