// Checks shared by the replayed DPO and reward tests: one accumulated step of the staged
// task against its host-loss path, and the per-step counts on a Vulkan device.
import Foundation
import XCTest
import VKFCore
import VKFData
import VKFModel
import VKFTestSupport
import VKFVulkan
@testable import VKFTrain

enum StagedPreferenceChecks {
  /// The staged step against the host-loss step: the loss math in f32 (device) vs Double
  /// (host), sequence sums or scores as matmuls vs host reads — f32 reassociation on
  /// gradients of magnitude ≤ 1.
  static let hostPathLossRelative = 1e-5
  static let hostPathGradientNMSE = 1e-9, hostPathGradientMaxAbs = 1e-5

  /// Trains `task` for `steps` optimizer steps of 2 micro-batches of 2 pairs (replayed or
  /// the same staged ops run eagerly): the logged losses, the trained values, each step's
  /// logged metrics and the trainer.
  static func train(_ task: TrainingTask, replays: Bool, steps: Int = 4)
    throws -> (losses: [Double], values: [String: [Float]], extras: [[String: Double]], trainer: Trainer) {
    var c = Tiny.config(steps: steps, micro: 2, accumulation: 2)
    c.maxSeqLength = 10
    let trainer = try Trainer(task: task, config: c, train: try Tiny.examples(32, seed: 23))
    trainer.replaysSteps = replays
    var extras: [[String: Double]] = []
    trainer.onEvent = { e in if case .progress(let p) = e { extras.append(p.extra) } }
    let losses = try Tiny.run(trainer)
    return (losses, try Tiny.values(task), extras, trainer)
  }

  /// One optimizer step of two micro-batches (10 and 9 tokens, both padded to 16) through
  /// `staged`'s engine equals `host.forwardBackward` over the same batches: loss, metrics and
  /// every gradient; each trainable whose name `mustMove` accepts has a non-zero gradient.
  /// Both tasks must be without dropout: its masks follow the padded layout (a token's mask
  /// element is row·T + t), so padding redraws them.
  static func checkHostPath(staged: StagedTrainingTask, host: TrainingTask, on backend: Backend, _ what: String,
                            mustMove: (String) -> Bool, file: StaticString = #filePath, line: UInt = #line) throws {
    let batches = Batching.batches(try Tiny.examples(8, seed: 29), batchSize: 4, padID: 0)
    XCTAssertEqual(batches.map(\.seqLength), [10, 9], file: file, line: line)
    let seeds: [UInt64] = [11, 12]
    let normalizer = staged.lossNormalizer(for: batches)
    let engine = try ReplayedSteps(task: staged, optimizer: try AdamW(parameters: staged.trainableTensors,
                                                                     backend: backend), maxTokens: 16,
                                   shapeGranularity: StepShape.granularity)
    let out = try engine.step(batches, dropoutSeeds: seeds, lossNormalizer: normalizer, lr: 0)
    XCTAssertEqual(engine.recordedShapes, [StepShape(batch: 4, tokens: 16)], what, file: file, line: line)
    try host.zeroGradients()
    var hostLoss: Float = 0
    for (b, seed) in zip(batches, seeds) {
      hostLoss += try host.forwardBackward(b, lossNormalizer: normalizer, dropoutSeed: seed)
    }
    XCTAssertEqual(Double(out.loss), Double(hostLoss), accuracy: hostPathLossRelative * Double(abs(hostLoss)), what,
                   file: file, line: line)
    staged.absorbStepMetrics(out.taskMetrics)
    let stagedMetrics = staged.takeMetrics(training: true), hostMetrics = host.takeMetrics(training: true)
    XCTAssertEqual(Set(stagedMetrics.keys), Set(hostMetrics.keys), what, file: file, line: line)
    for (k, v) in hostMetrics {
      XCTAssertEqual(stagedMetrics[k] ?? .nan, v, accuracy: hostPathLossRelative * max(1, abs(v)), "\(what) \(k)",
                     file: file, line: line)
    }
    for (s, h) in zip(staged.trainableTensors, host.trainableTensors) {
      let expected = try backend.floats(h.gradient)
      if mustMove(h.name) {
        XCTAssertTrue(expected.contains { $0 != 0 }, "\(what) \(h.name) has a gradient", file: file, line: line)
      }
      if let why = Compare.check(expected, try backend.floats(s.gradient), nmse: hostPathGradientNMSE,
                                 maxAbs: hostPathGradientMaxAbs) {
        XCTFail("\(what) \(s.name): \(why)", file: file, line: line)
      }
    }
  }

  /// Training `task` for 4 optimizer steps of 2 micro-batches on `vk`: one submission and
  /// one wait per step, nothing made after the first step, and [loss, S] + 8 metric sums
  /// (40 bytes) read per step.
  static func checkCountsPerStep(_ task: TrainingTask, on vk: Backend, _ label: String,
                                 file: StaticString = #filePath, line: UInt = #line) throws {
    let steps = 4
    var c = Tiny.config(steps: steps, micro: 2, accumulation: 2)
    c.maxSeqLength = 10
    let trainer = try Trainer(task: task, config: c, train: try Tiny.examples(32, seed: 23))
    try vk.synchronize()
    let start = vk.statistics
    var snapshots: [ExecutionStatistics] = []
    trainer.onEvent = { e in if case .progress = e { snapshots.append(vk.statistics) } }
    try trainer.train()
    let whole = vk.statistics - start
    XCTAssertEqual(whole.submits, steps, whole.per(steps).summary, file: file, line: line)
    XCTAssertEqual(whole.hostWaits, steps, whole.per(steps).summary, file: file, line: line)
    let d = vk.statistics - snapshots[0]
    let tag = "\(label) steps 2–\(steps): \(d.per(steps - 1).summary)"
    XCTAssertEqual(d.descriptorSetAllocations, 0, tag, file: file, line: line)
    XCTAssertEqual(d.pipelineCreations, 0, tag, file: file, line: line)
    XCTAssertEqual(d.bytesDownloaded, (2 + PreferenceLossParameters.metricCount) * 4 * (steps - 1), tag,
                   file: file, line: line)
    print(tag)
    if let v = vk as? VulkanBackend {
      XCTAssertEqual(v.validationMessages, [], file: file, line: line); v.clearValidationMessages()
    }
  }
}

/// Reading the committed preference goldens (padded (rows, T) ids with id 0 ending each row).
enum PreferenceGoldenFile {
  /// The rows without their padding, `pairs` pairs per micro-batch (each padded to its longest).
  static func batches(_ file: SafetensorsFile, tokens t: Int, pairs: Int) throws -> [Batch] {
    let ids = try file.floats("ids").map { Int($0) }, targets = try file.floats("targets").map { Int($0) }
    let examples = (0..<(ids.count / t)).map { r in
      let row = (r * t)..<((r + 1) * t)
      let real = ids[row].lastIndex { $0 != 0 }.map { $0 - row.lowerBound + 1 } ?? t
      return TokenizedExample(inputIds: Array(ids[row].prefix(real)), targets: Array(targets[row].prefix(real)))
    }
    return Batching.batches(examples, batchSize: 2 * pairs, padID: 0)
  }

  /// Every trainable's gradient against `prefix + name` in `file`.
  static func checkGradients(_ task: TrainingTask, _ file: SafetensorsFile, prefix: String, nmse: Double,
                             maxAbs: Double, _ what: String) throws {
    for t in task.trainableTensors {
      if let why = Compare.check(try file.floats(prefix + t.name), try task.backend.floats(t.gradient),
                                 nmse: nmse, maxAbs: maxAbs) {
        XCTFail("\(what) \(t.name): \(why)")
      }
    }
  }
}
