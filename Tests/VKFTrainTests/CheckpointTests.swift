import Foundation
import XCTest
import VKFCore
import VKFData
import VKFModel
import VKFPEFT
import VKFTestSupport
@testable import VKFTrain

/// Checkpoints: resuming equals an uninterrupted run bit for bit on the CPU; interrupted or
/// damaged checkpoints are skipped for the previous good one.
final class CheckpointTests: XCTestCase {
  /// 12 examples, micro-batch 2, accumulation 2: 3 steps per epoch, 3 epochs = 9 steps, so
  /// checkpoints at 2, 4, 6, 8 fall mid-epoch and resuming crosses epoch boundaries.
  static func config() -> TrainingConfig {
    var c = Tiny.config(epochs: 3)
    c.saveSteps = 2
    return c
  }

  static let data: [TokenizedExample] = (try? Tiny.examples(12, seed: 11)) ?? []

  /// The final trainables and optimizer state of an uninterrupted run.
  static func uninterrupted(_ make: () throws -> TrainingTask = { try Tiny.fullTask(on: TestBackends.cpu) }) throws
    -> ([String: [Float]], [String: ([Int], [Float])]) {
    let dir = try Tiny.temporaryDirectory("uninterrupted")
    defer { try? FileManager.default.removeItem(at: dir) }
    let task = try make()
    let trainer = try Trainer(task: task, config: config(), train: data, outputDirectory: dir)
    XCTAssertEqual(trainer.totalSteps, 9)
    try trainer.train()
    return (try Tiny.values(task), try trainer.optimizer.stateValues())
  }

  /// Trains the whole run into `dir`, saving checkpoints every 2 steps.
  static func runWithCheckpoints(into dir: URL,
                                 _ make: () throws -> TrainingTask = { try Tiny.fullTask(on: TestBackends.cpu) }) throws {
    let trainer = try Trainer(task: try make(), config: config(), train: data,
                              outputDirectory: dir)
    try trainer.train()
  }

  /// A fresh model resumed from `url`, trained to the end, writing into a new directory.
  static func resumed(from url: URL, events: inout [TrainingEvent],
                      _ make: () throws -> TrainingTask = { try Tiny.fullTask(on: TestBackends.cpu) }) throws
    -> (used: URL, values: [String: [Float]], state: [String: ([Int], [Float])], trainer: Trainer) {
    let out = try Tiny.temporaryDirectory("resumed")
    defer { try? FileManager.default.removeItem(at: out) }
    let task = try make()
    let trainer = try Trainer(task: task, config: config(), train: data, outputDirectory: out)
    var collected: [TrainingEvent] = []
    trainer.onEvent = { collected.append($0) }
    let used = try trainer.resume(from: url)
    try trainer.train()
    events = collected
    return (used, try Tiny.values(task), try trainer.optimizer.stateValues(), trainer)
  }

  func test_resume_fromMidEpochCheckpoint_bitwiseEqualsUninterrupted() throws {
    let dir = try Tiny.temporaryDirectory("resume")
    defer { try? FileManager.default.removeItem(at: dir) }
    let (expected, expectedState) = try Self.uninterrupted()
    try Self.runWithCheckpoints(into: dir)
    XCTAssertEqual(CheckpointLayout.checkpoints(in: dir).map(\.step), [8, 6, 4, 2])
    let checkpoint = dir.appendingPathComponent("checkpoint-4")
    var events: [TrainingEvent] = []
    let r = try Self.resumed(from: checkpoint, events: &events)
    XCTAssertEqual(r.used, checkpoint)
    XCTAssertEqual(r.trainer.step, 9)
    for (name, v) in expected { XCTAssertTrue(r.values[name] == v, "\(name) differs after resuming") }
    for (key, s) in expectedState { XCTAssertTrue(r.state[key]?.1 == s.1, "\(key) differs after resuming") }
  }

  /// LoRA with dropout: the resumed run must also restore the dropout-seed stream.
  func test_resume_loraWithDropout_bitwiseEqualsUninterrupted() throws {
    func make() throws -> TrainingTask {
      let weights = try DecoderWeights(from: Tiny.weights, shape: Tiny.shape, backend: TestBackends.cpu)
      let lora = try LoRAModel(weights: weights, config: LoRAConfig(r: 4, alpha: 8, dropout: 0.2), seed: 3)
      return SFTTask(model: try DecoderModel(weights: weights), lora: lora)
    }
    let dir = try Tiny.temporaryDirectory("resumelora")
    defer { try? FileManager.default.removeItem(at: dir) }
    let (expected, expectedState) = try Self.uninterrupted(make)
    try Self.runWithCheckpoints(into: dir, make)
    var events: [TrainingEvent] = []
    let r = try Self.resumed(from: dir.appendingPathComponent("checkpoint-6"), events: &events, make)
    XCTAssertEqual(r.trainer.step, 9)
    XCTAssertEqual(Set(r.values.keys), Set(expected.keys))
    for (name, v) in expected { XCTAssertTrue(r.values[name] == v, "\(name) differs after resuming") }
    for (key, s) in expectedState { XCTAssertTrue(r.state[key]?.1 == s.1, "\(key) differs after resuming") }
    // Dropout matters here: without it (or with another seed stream) the result differs.
    func noDropout() throws -> TrainingTask {
      let weights = try DecoderWeights(from: Tiny.weights, shape: Tiny.shape, backend: TestBackends.cpu)
      let lora = try LoRAModel(weights: weights, config: LoRAConfig(r: 4, alpha: 8, dropout: 0), seed: 3)
      return SFTTask(model: try DecoderModel(weights: weights), lora: lora)
    }
    let (plain, _) = try Self.uninterrupted(noDropout)
    XCTAssertNotEqual(plain, expected)
  }

  func test_resume_fromOutputDirectory_skipsTmpAndDamaged() throws {
    let dir = try Tiny.temporaryDirectory("damaged")
    defer { try? FileManager.default.removeItem(at: dir) }
    let (expected, _) = try Self.uninterrupted()
    try Self.runWithCheckpoints(into: dir)
    let fm = FileManager.default
    // A crash mid-save: a partial checkpoint-9.tmp with a truncated file and no state.
    try fm.removeItem(at: dir.appendingPathComponent("checkpoint-8"))
    let tmp = dir.appendingPathComponent("checkpoint-9.tmp")
    try fm.copyItem(at: dir.appendingPathComponent("checkpoint-6"), to: tmp)
    try fm.removeItem(at: tmp.appendingPathComponent(CheckpointLayout.state))
    // A damaged complete checkpoint: checkpoint-6's trainables cut in half.
    let file = dir.appendingPathComponent("checkpoint-6").appendingPathComponent(CheckpointLayout.trainables)
    let bytes = try Data(contentsOf: file)
    try bytes.prefix(bytes.count / 2).write(to: file)

    var events: [TrainingEvent] = []
    let r = try Self.resumed(from: dir, events: &events)
    XCTAssertEqual(r.used.lastPathComponent, "checkpoint-4")
    let skipped = events.compactMap { e -> String? in
      if case .checkpointSkipped(let u, _) = e { return u.lastPathComponent } else { return nil }
    }
    XCTAssertEqual(skipped, ["checkpoint-6"])
    for (name, v) in expected { XCTAssertTrue(r.values[name] == v, "\(name) differs after resuming") }
    // An explicitly named damaged checkpoint is an error, not a silent fallback.
    var ignored: [TrainingEvent] = []
    XCTAssertThrowsError(try Self.resumed(from: dir.appendingPathComponent("checkpoint-6"), events: &ignored)) {
      XCTAssertTrue("\($0)".contains("trainables.safetensors"), "\($0)")
    }
  }

  /// A save that fails after its first file (what a crash does, minus the leftovers) leaves
  /// no checkpoint-4 and no .tmp; the run errors and resuming picks checkpoint-2.
  func test_interruptedSave_keepsPreviousCheckpoint() throws {
    let dir = try Tiny.temporaryDirectory("interrupt")
    defer { try? FileManager.default.removeItem(at: dir) }
    struct Crash: Error {}
    let trainer = try Trainer(task: try Tiny.fullTask(on: TestBackends.cpu), config: Self.config(), train: Self.data,
                              outputDirectory: dir)
    trainer.checkpointFileWritten = { file in
      if trainer.step == 4, file == CheckpointLayout.optimizer { throw Crash() }
    }
    XCTAssertThrowsError(try trainer.train()) { XCTAssertTrue($0 is Crash, "\($0)") }
    let names = try FileManager.default.contentsOfDirectory(atPath: dir.path).sorted()
    XCTAssertEqual(names.filter { $0.hasPrefix("checkpoint") }, ["checkpoint-2"])
    let (expected, _) = try Self.uninterrupted()
    var events: [TrainingEvent] = []
    let r = try Self.resumed(from: dir, events: &events)
    XCTAssertEqual(r.used.lastPathComponent, "checkpoint-2")
    for (name, v) in expected { XCTAssertTrue(r.values[name] == v, "\(name) differs after resuming") }
  }

  func test_saveTotalLimit_keepsNewest() throws {
    let dir = try Tiny.temporaryDirectory("limit")
    defer { try? FileManager.default.removeItem(at: dir) }
    var c = Self.config()
    c.saveTotalLimit = 2
    let trainer = try Trainer(task: try Tiny.fullTask(on: TestBackends.cpu), config: c, train: Self.data,
                              outputDirectory: dir)
    try trainer.train()
    XCTAssertEqual(CheckpointLayout.checkpoints(in: dir).map(\.step), [8, 6])
    let files = try FileManager.default.contentsOfDirectory(atPath: dir.appendingPathComponent("checkpoint-8").path).sorted()
    XCTAssertEqual(files, [CheckpointLayout.optimizer, CheckpointLayout.state, CheckpointLayout.trainables].sorted())
  }

  func test_resume_withOtherConfig_refused() throws {
    let dir = try Tiny.temporaryDirectory("otherconfig")
    defer { try? FileManager.default.removeItem(at: dir) }
    try Self.runWithCheckpoints(into: dir)
    var c = Self.config()
    c.learningRate *= 2
    let trainer = try Trainer(task: try Tiny.fullTask(on: TestBackends.cpu), config: c, train: Self.data,
                              outputDirectory: dir.appendingPathComponent("other"))
    XCTAssertThrowsError(try trainer.resume(from: dir.appendingPathComponent("checkpoint-2"))) {
      XCTAssertTrue("\($0)".contains("other training settings"), "\($0)")
    }
    XCTAssertThrowsError(try trainer.resume(from: dir.appendingPathComponent("nowhere")))
  }

  /// The metrics of a resumed run continue the interrupted one: lines after the checkpoint
  /// are dropped before the resumed run appends its own.
  func test_resume_truncatesMetricsAfterCheckpoint() throws {
    let dir = try Tiny.temporaryDirectory("metricsresume")
    defer { try? FileManager.default.removeItem(at: dir) }
    try Self.runWithCheckpoints(into: dir)
    let trainer = try Trainer(task: try Tiny.fullTask(on: TestBackends.cpu), config: Self.config(), train: Self.data,
                              outputDirectory: dir)
    try trainer.resume(from: dir.appendingPathComponent("checkpoint-4"))
    let text = try String(contentsOf: dir.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
    let steps = text.split(separator: "\n").compactMap {
      (try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])?["step"] as? Int
    }
    XCTAssertEqual(steps, [1, 2, 3, 4])
    try trainer.train()
    let after = try String(contentsOf: dir.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
    XCTAssertEqual(after.split(separator: "\n").count, 9)
  }
}
