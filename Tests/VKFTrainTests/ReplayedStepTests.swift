import Foundation
import XCTest
import VKFCore
import VKFData
import VKFModel
import VKFPEFT
import VKFTestSupport
@testable import VKFTrain

/// Optimizer steps replayed from recordings (`ReplayedSteps`): the same numbers as running
/// the same ops eagerly, bit for bit, at one submission and one host wait per step with
/// nothing allocated or compiled after warm-up; a NaN/inf still stops the run naming the
/// step with the previous parameters kept.
final class ReplayedStepTests: XCTestCase {
  private static func loraTask(on backend: Backend, dropout: Float = 0.1) throws -> SFTTask {
    let weights = try LlamaWeights(from: Tiny.weights, shape: Tiny.shape, backend: backend)
    let adapters = try LoRAModel(weights: weights, config: LoRAConfig(r: 4, alpha: 8, dropout: dropout), seed: 5)
    return SFTTask(model: try LlamaModel(weights: weights), lora: adapters)
  }

  /// Runs `steps` steps and returns the logged losses and the final trainables.
  private func train(_ task: SFTTask, replays: Bool, steps: Int = 6, accumulation: Int = 2,
                     maxSeqLength: Int = 10) throws -> (losses: [Double], values: [String: [Float]], trainer: Trainer) {
    var c = Tiny.config(steps: steps, accumulation: accumulation)
    c.maxSeqLength = maxSeqLength
    let trainer = try Trainer(task: task, config: c, train: try Tiny.examples(16, seed: 21))
    trainer.replaysSteps = replays
    let losses = try Tiny.run(trainer)
    return (losses, try Tiny.values(task), trainer)
  }

  private func checkReplayEqualsEager(_ make: () throws -> SFTTask, _ what: String) throws {
    let eager = try train(try make(), replays: false)
    let replayed = try train(try make(), replays: true)
    XCTAssertEqual(replayed.losses, eager.losses, what)
    XCTAssertEqual(replayed.values, eager.values, "\(what): trained values")
    XCTAssertEqual(replayed.trainer.replayedSteps?.recordedShapes.count, 1, "\(what): one shape at max_seq_length 10")
    // The run learned something, so equal values are not equal zeros.
    XCTAssertLessThan(eager.losses.last ?? 0, eager.losses.first ?? 0, what)
  }

  func test_replayEqualsEager_fullFineTuning_cpu() throws {
    try checkReplayEqualsEager({ try Tiny.fullTask(on: TestBackends.cpu) }, "full, cpu")
  }

  func test_replayEqualsEager_loraWithDropout_cpu() throws {
    try checkReplayEqualsEager({ try Self.loraTask(on: TestBackends.cpu) }, "LoRA, cpu")
  }

  func test_replayEqualsEager_fullFineTuning_vulkan() throws {
    let vk = try Tiny.vulkanOrSkip()
    try checkReplayEqualsEager({ try Tiny.fullTask(on: vk) }, "full, vulkan")
  }

  func test_replayEqualsEager_loraWithDropout_vulkan() throws {
    let vk = try Tiny.vulkanOrSkip()
    try checkReplayEqualsEager({ try Self.loraTask(on: vk) }, "LoRA, vulkan")
  }

  /// The staged path (rows padded to a multiple of 64 tokens) trains like the old one
  /// (unpadded rows, host-read loss).
  /// Step losses, relative: padding adds ignored targets and rows, so reductions and matmul
  /// blockings see other lengths (f32 rounding ~1e-7 per op); a dropped or mis-weighted
  /// token moves a loss by ≳1e-3.
  static let paddedLossRelative = 1e-5

  func test_paddedShapes_trainLikeUnpaddedEagerSteps() throws {
    let padded = try train(try Tiny.fullTask(on: TestBackends.cpu), replays: true, maxSeqLength: 100)
    XCTAssertEqual(padded.trainer.replayedSteps?.recordedShapes.map(\.tokens), [64], "rows padded to 64 tokens")
    // The old path: the plain `TrainingTask` API (no staging, no padding).
    let plain = try train(try Tiny.fullTask(on: TestBackends.cpu), replays: false, maxSeqLength: 100)
    let reference = try trainUnstaged(try Tiny.fullTask(on: TestBackends.cpu), maxSeqLength: 100)
    XCTAssertEqual(padded.losses, plain.losses, "replayed vs eager staged")
    XCTAssertEqual(padded.losses.count, reference.count)
    for (a, b) in zip(padded.losses, reference) {
      XCTAssertEqual(a, b, accuracy: Self.paddedLossRelative * abs(b), "padded \(padded.losses) vs unpadded \(reference)")
    }
  }

  private func trainUnstaged(_ task: SFTTask, maxSeqLength: Int) throws -> [Double] {
    var c = Tiny.config(steps: 6)
    c.maxSeqLength = maxSeqLength
    return try Tiny.run(try Trainer(task: Unstaged(task), config: c, train: try Tiny.examples(16, seed: 21)))
  }

  /// Per optimizer step after the first (which records): one submission, one host wait, no
  /// descriptor set or pipeline made, 8 bytes read back, and barriers only where a dispatch
  /// depends on an earlier one — with 4 micro-batches per step.
  func test_countsPerStep_floorOnVulkan() throws {
    let vk = try Tiny.vulkanOrSkip()
    for (task, what) in [(try Tiny.fullTask(on: vk), "full"), (try Self.loraTask(on: vk), "LoRA")] {
      var c = Tiny.config(steps: 4, micro: 2, accumulation: 4)
      c.maxSeqLength = 10
      let trainer = try Trainer(task: task, config: c, train: try Tiny.examples(16, seed: 21))
      var snapshots: [ExecutionStatistics] = []
      trainer.onEvent = { e in if case .progress = e { snapshots.append(vk.statistics) } }
      try trainer.train()
      XCTAssertEqual(snapshots.count, 4, what)
      for k in 1..<snapshots.count {
        let d = snapshots[k] - snapshots[k - 1]
        let tag = "\(what) step \(k + 1): \(d.per(1).summary)"
        XCTAssertEqual(d.submits, 1, tag)
        XCTAssertEqual(d.hostWaits, 1, tag)
        XCTAssertEqual(d.descriptorSetAllocations, 0, tag)
        XCTAssertEqual(d.pipelineCreations, 0, tag)
        XCTAssertEqual(d.bytesDownloaded, 8, tag)
        XCTAssertGreaterThan(d.dispatches, 100, tag)
        XCTAssertLessThanOrEqual(Double(d.barriers), Self.barriersPerDispatch * Double(d.dispatches), tag)
        print(tag)
      }
    }
  }

  /// Barriers per dispatch at most: the tracked engine measured 0.48 on SmolLM2 LoRA and
  /// ≈0.5 on the tiny model (a full barrier per dispatch, the old engine, is 1.0).
  static let barriersPerDispatch = 0.6

  // MARK: - Non-finite steps

  func test_nanLoss_replayed_stopsNamingStep_keepsPreviousParameters_cpu() throws {
    try checkNonFinite(.nanLoss, what: "the training loss", on: TestBackends.cpu)
  }

  func test_nanGradient_replayed_stopsNamingStep_keepsPreviousParameters_cpu() throws {
    try checkNonFinite(.nanGradient, what: "the gradient norm", on: TestBackends.cpu)
  }

  func test_nanLoss_replayed_stopsNamingStep_keepsPreviousParameters_vulkan() throws {
    try checkNonFinite(.nanLoss, what: "the training loss", on: try Tiny.vulkanOrSkip())
  }

  func test_nanGradient_replayed_stopsNamingStep_keepsPreviousParameters_vulkan() throws {
    try checkNonFinite(.nanGradient, what: "the gradient norm", on: try Tiny.vulkanOrSkip())
  }

  /// Micro-batch 9 (step 5 at 2 per step) gets a NaN written into the loss slot or a
  /// gradient on the device, between replays: the update queued with it must be skipped
  /// there, so the parameters still equal step 4's checkpoint.
  private func checkNonFinite(_ injection: StagedScriptedTask.Injection, what: String, on backend: Backend) throws {
    let dir = try Tiny.temporaryDirectory("nan-replayed")
    defer { try? FileManager.default.removeItem(at: dir) }
    let task = StagedScriptedTask(try Tiny.fullTask(on: backend))
    task.inject[9] = injection
    var c = Tiny.config(steps: 8)
    c.saveSteps = 2
    let trainer = try Trainer(task: task, config: c, train: try Tiny.examples(12, seed: 8), outputDirectory: dir)
    XCTAssertThrowsError(try trainer.train()) { error in
      guard case TrainingError.nonFinite(let step, let w, _, _) = error else { return XCTFail("unexpected \(error)") }
      XCTAssertEqual(step, 5)
      XCTAssertEqual(w, what)
    }
    XCTAssertNotNil(trainer.replayedSteps, "the replayed path ran")
    XCTAssertEqual(trainer.step, 4)
    XCTAssertEqual(trainer.optimizer.step, 4, "the skipped step is not counted")
    let saved = try SafetensorsFile(contentsOf: dir.appendingPathComponent("checkpoint-4/trainables.safetensors"))
    for t in task.trainableTensors {
      XCTAssertEqual(try saved.floats(t.name), try backend.floats(t.value), "\(t.name) on \(backend.name)")
    }
  }
}

/// Forwards a task's `TrainingTask` calls and hides its staging, so the trainer takes the
/// plain per-micro-batch path.
class Unstaged: TrainingTask {
  let inner: TrainingTask
  init(_ inner: TrainingTask) { self.inner = inner }
  var backend: Backend { inner.backend }
  var trainableTensors: [TrainableTensor] { inner.trainableTensors }
  func zeroGradients() throws { try inner.zeroGradients() }
  func forwardBackward(_ batch: Batch, lossNormalizer: Float, dropoutSeed: UInt64) throws -> Float {
    try inner.forwardBackward(batch, lossNormalizer: lossNormalizer, dropoutSeed: dropoutSeed)
  }
  func evaluate(_ batch: Batch) throws -> (lossSum: Double, tokens: Int) { try inner.evaluate(batch) }
}

/// A staged task that writes a NaN on the device before a chosen micro-batch (counted from
/// 0): into the step's loss slot (a NaN loss) or the first gradient (a NaN gradient norm).
final class StagedScriptedTask: Unstaged, StagedTrainingTask {
  let sft: SFTTask
  var inject: [Int: Injection] = [:]
  private var calls = 0
  private var lossSum: Tensor?

  enum Injection { case nanLoss, nanGradient }

  init(_ sft: SFTTask) { self.sft = sft; super.init(sft) }
  func reserve(_ shape: StepShape) throws { try sft.reserve(shape) }

  func stage(_ batch: Batch, as shape: StepShape, dropoutSeed: UInt64) throws -> Bool {
    defer { calls += 1 }
    switch inject[calls] {
    case .nanLoss?:
      if let lossSum { try backend.upload([Float.nan], to: lossSum) }
    case .nanGradient?:
      let g = trainableTensors[0].gradient
      try backend.upload([Float](repeating: .nan, count: g.count), to: g)
    case nil: break
    }
    return try sft.stage(batch, as: shape, dropoutSeed: dropoutSeed)
  }

  func queueForwardBackward(lossNormalizer: Tensor, lossSum: Tensor) throws {
    self.lossSum = lossSum
    try sft.queueForwardBackward(lossNormalizer: lossNormalizer, lossSum: lossSum)
  }
}
