import Foundation
import XCTest

/// A run that fails leaves its output directory as it found it — or, once it saved a
/// checkpoint, only what `--resume` continues from, and says so. A run killed outright
/// (`kill -9`, `VKF_CRASH_AFTER`) while writing a checkpoint or its final files leaves a state
/// `--resume` finishes.
final class FailedRunTests: XCTestCase {
  /// Every file under `dir` by relative path, with its bytes (nil: `dir` does not exist).
  static func snapshot(_ dir: URL) -> [String: Data]? {
    let fm = FileManager.default
    guard fm.fileExists(atPath: dir.path) else { return nil }
    var out: [String: Data] = [:]
    for case let path as String in fm.enumerator(atPath: dir.path) ?? FileManager.DirectoryEnumerator() {
      let url = dir.appendingPathComponent(path)
      var isDirectory: ObjCBool = false
      fm.fileExists(atPath: url.path, isDirectory: &isDirectory)
      out[path] = isDirectory.boolValue ? Data("<dir>".utf8) : fm.contents(atPath: url.path)
    }
    return out
  }

  /// A learning rate that overflows LoRA's B to ±1e38 at step 1, so step 2's loss is NaN.
  static let explodingLearningRate = "1e38"

  private func workspace() throws -> (made: TrainedRun.Made, dir: URL) {
    let made = try TrainedRun.shared()
    let dir = made.dir.appendingPathComponent("failed-\(UUID())")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    return (made, dir)
  }

  private func errorLines(_ r: CLITests.Run) -> [Substring] {
    r.stderr.split(separator: "\n").filter { $0.hasPrefix("Error:") }
  }

  func test_failedRun_withoutCheckpoint_leavesTheDirectoryAsItWas() throws {
    let (made, dir) = try workspace()
    let args = TrainedRun.common(model: made.model, data: made.data)
      + ["--max-steps", "3", "--learning-rate", Self.explodingLearningRate]
    // Three starting points: no directory, an empty one, and a finished run's output given
    // with --overwrite (moved aside, then put back byte for byte).
    let absent = dir.appendingPathComponent("absent")
    let empty = dir.appendingPathComponent("empty")
    try FileManager.default.createDirectory(at: empty, withIntermediateDirectories: false)
    let previous = dir.appendingPathComponent("previous")
    try FileManager.default.copyItem(at: made.output, to: previous)
    for (output, extra) in [(absent, [String]()), (empty, []), (previous, ["--overwrite"])] {
      let before = Self.snapshot(output)
      let r = try CLITests.run(args + ["--output", output.path] + extra)
      XCTAssertNotEqual(r.status, 0, output.lastPathComponent)
      XCTAssertEqual(errorLines(r).count, 1, r.stderr)
      XCTAssertTrue(r.stderr.contains("training stopped at step 2: the training loss is"), r.stderr)
      XCTAssertTrue(r.stderr.contains("no checkpoint was saved yet"), r.stderr)
      XCTAssertTrue(r.stdout.contains("step 1/3"), "the run got as far as training: \(r.stdout)")
      XCTAssertEqual(Self.snapshot(output), before, "\(output.lastPathComponent) is byte-identical")
    }
  }

  func test_failedRun_afterACheckpoint_keepsOnlyWhatResumeNeeds() throws {
    let (made, dir) = try workspace()
    let output = dir.appendingPathComponent("out")
    let r = try CLITests.run(TrainedRun.common(model: made.model, data: made.data)
      + ["--output", output.path, "--max-steps", "3", "--save-steps", "1",
         "--learning-rate", Self.explodingLearningRate])
    XCTAssertNotEqual(r.status, 0)
    XCTAssertEqual(errorLines(r).count, 1, r.stderr)
    XCTAssertTrue(r.stderr.contains("the last good checkpoint is \(output.path)/checkpoint-1"), r.stderr)
    XCTAssertTrue(r.stderr.contains("--resume retries from it"), r.stderr)
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: output.path).sorted(),
                   ["checkpoint-1", "metrics.jsonl", "objective.json"])
  }

  /// SIGTERM (and Ctrl-C) stops between steps through the same path: the checkpoints saved
  /// so far are kept and named; a second signal would end the process at once.
  func test_interruptedRun_stopsBetweenSteps_keepingItsCheckpoint() throws {
    let (made, dir) = try workspace()
    let output = dir.appendingPathComponent("out")
    let p = Process()
    p.executableURL = CLITests.binary
    p.arguments = TrainedRun.common(model: made.model, data: made.data)
      + ["--output", output.path, "--max-steps", "1000", "--save-steps", "1"]
    p.environment = ProcessInfo.processInfo.environment.merging(["VKF_NO_REEXEC": "1"]) { $1 }
    let out = Pipe(), err = Pipe()
    p.standardOutput = out; p.standardError = err
    try p.run()
    // The first checkpoint is the sign that training runs.
    let deadline = Date().addingTimeInterval(300)
    let first = output.appendingPathComponent("checkpoint-1")
    while !FileManager.default.fileExists(atPath: first.path), p.isRunning, Date() < deadline {
      Thread.sleep(forTimeInterval: 0.05)
    }
    p.terminate()  // SIGTERM
    let stdout = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    let stderr = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    p.waitUntilExit()
    XCTAssertEqual(p.terminationReason, .exit, "stopped through the error path, not killed: \(stderr)")
    XCTAssertNotEqual(p.terminationStatus, 0)
    let line = try XCTUnwrap(stderr.split(separator: "\n").first { $0.hasPrefix("Error:") }, stderr + stdout)
    XCTAssertTrue(line.contains("interrupted after step "), String(line))
    XCTAssertTrue(line.contains("--resume continues from it"), String(line))
    let names = try FileManager.default.contentsOfDirectory(atPath: output.path)
    XCTAssertTrue(names.contains("checkpoint-1"), "\(names)")
    XCTAssertFalse(names.contains("adapter_model.safetensors"), "no final adapter for an interrupted run: \(names)")
    XCTAssertFalse(names.contains { $0.hasPrefix(".") || $0.hasSuffix(".tmp") }, "no leftovers: \(names)")
  }

  /// Killed while writing checkpoint-2's optimizer state, or after the first final file was
  /// moved into place: `--resume` picks up from the last complete checkpoint, clears the
  /// leftovers and finishes with a complete adapter.
  func test_killedDuringCheckpointOrFinalWrite_resumes() throws {
    let (made, dir) = try workspace()
    for (file, resumedAt) in [("checkpoint-2/optimizer.safetensors", "checkpoint-1 at step 1/3"),
                              ("adapter_model.safetensors", "checkpoint-3 at step 3/3")] {
      let output = dir.appendingPathComponent("killed-\(file.replacingOccurrences(of: "/", with: "-"))")
      let args = TrainedRun.common(model: made.model, data: made.data)
        + ["--output", output.path, "--max-steps", "3", "--save-steps", "1"]
      let p = Process()
      p.executableURL = CLITests.binary
      p.arguments = args
      p.environment = ProcessInfo.processInfo.environment.merging(["VKF_NO_REEXEC": "1", "VKF_CRASH_AFTER": file]) { $1 }
      p.standardOutput = FileHandle.nullDevice; p.standardError = FileHandle.nullDevice
      try p.run()
      p.waitUntilExit()
      XCTAssertEqual(p.terminationReason, .uncaughtSignal, "\(file): killed")
      XCTAssertEqual(p.terminationStatus, SIGKILL, file)
      let leftovers = try FileManager.default.contentsOfDirectory(atPath: output.path)
      XCTAssertTrue(leftovers.contains { $0.hasPrefix(".vkf-tmp-") || $0.hasSuffix(".tmp") },
                    "\(file): the crash left a half-written file behind: \(leftovers)")

      let r = try CLITests.run(args + ["--resume"])
      XCTAssertEqual(r.status, 0, "\(file): \(r.stderr)")
      XCTAssertTrue(r.stdout.contains("resumed from \(resumedAt)"), "\(file): \(r.stdout)")
      let names = try FileManager.default.contentsOfDirectory(atPath: output.path)
      for expected in ["adapter_model.safetensors", "adapter_config.json", "README.md", "checkpoint-3"] {
        XCTAssertTrue(names.contains(expected), "\(file): \(expected) missing: \(names)")
      }
      XCTAssertFalse(names.contains { $0.hasPrefix(".") || $0.hasSuffix(".tmp") }, "\(file): leftovers: \(names)")
    }
  }
}
