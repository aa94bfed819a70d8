import Foundation
import XCTest
import VKFCore
import VKFData
import VKFModel
import VKFTestSupport
@testable import VKFTrain

/// A real process killed (SIGKILL) in the middle of writing a checkpoint: the partial
/// `checkpoint-4.tmp` is ignored and resuming continues from checkpoint-2, bitwise equal to
/// an uninterrupted run. The test re-runs its own test binary as the child, selecting this
/// test with `VKF_TEST_CHILD_DIR` set; the child slows its save down through the trainer's
/// `checkpointFileWritten` seam so the parent can kill it between two files.
final class CheckpointCrashTests: XCTestCase {
  static let childVariable = "VKF_TEST_CHILD_DIR"
  /// Longest wait for the child to reach the middle of its second save (it needs well under
  /// a second; the debug build under a loaded CI machine may take several).
  static let childTimeout: TimeInterval = 120

  func test_processKilledMidSave_resumesFromPreviousCheckpoint() throws {
    if let dir = ProcessInfo.processInfo.environment[Self.childVariable] {
      return try runChild(URL(fileURLWithPath: dir))
    }
    let dir = try Tiny.temporaryDirectory("killed")
    defer { try? FileManager.default.removeItem(at: dir) }
    let child = Process()
    child.executableURL = URL(fileURLWithPath: "/proc/self/exe")
    child.arguments = ["VKFTrainTests.CheckpointCrashTests/test_processKilledMidSave_resumesFromPreviousCheckpoint"]
    var env = ProcessInfo.processInfo.environment
    env[Self.childVariable] = dir.path
    child.environment = env
    child.standardOutput = FileHandle.nullDevice
    child.standardError = FileHandle.nullDevice
    try child.run()
    let marker = dir.appendingPathComponent("checkpoint-4.tmp").appendingPathComponent(CheckpointLayout.trainables)
    let deadline = Date().addingTimeInterval(Self.childTimeout)
    while !FileManager.default.fileExists(atPath: marker.path), child.isRunning, Date() < deadline {
      usleep(5_000)
    }
    XCTAssertTrue(child.isRunning, "the child ended before its second save (status \(child.terminationStatus))")
    kill(child.processIdentifier, SIGKILL)
    child.waitUntilExit()
    XCTAssertEqual(child.terminationReason, .uncaughtSignal)
    let names = try FileManager.default.contentsOfDirectory(atPath: dir.path).filter { $0.hasPrefix("checkpoint") }.sorted()
    XCTAssertEqual(names, ["checkpoint-2", "checkpoint-4.tmp"])

    let (expected, _) = try CheckpointTests.uninterrupted()
    var events: [TrainingEvent] = []
    let r = try CheckpointTests.resumed(from: dir, events: &events)
    XCTAssertEqual(r.used.lastPathComponent, "checkpoint-2")
    for (name, v) in expected { XCTAssertTrue(r.values[name] == v, "\(name) differs after resuming") }
  }

  /// The child: trains with checkpoints every 2 steps; from the second save on, each file
  /// takes 30 s, so the parent kills it inside checkpoint-4.tmp.
  private func runChild(_ dir: URL) throws {
    let trainer = try Trainer(task: try Tiny.fullTask(on: TestBackends.cpu), config: CheckpointTests.config(),
                              train: CheckpointTests.data, outputDirectory: dir)
    trainer.checkpointFileWritten = { _ in if trainer.step >= 4 { sleep(30) } }
    try trainer.train()
    XCTFail("the child should have been killed during its second checkpoint")
  }
}
