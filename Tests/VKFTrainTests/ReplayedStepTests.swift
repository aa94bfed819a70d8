import Foundation
import XCTest
import VKFCore
import VKFData
import VKFModel
import VKFPEFT
import VKFTestSupport
import VKFVulkan
@testable import VKFTrain

/// Optimizer steps replayed from recordings (`ReplayedSteps`): the same numbers as running
/// the same ops eagerly, bit for bit, at one submission and one host wait per step with
/// nothing allocated or compiled after warm-up; a NaN/inf still stops the run naming the
/// step with the previous parameters kept.
final class ReplayedStepTests: XCTestCase {
  private static func loraTask(on backend: Backend, dropout: Float = 0.1) throws -> SFTTask {
    let weights = try DecoderWeights(from: Tiny.weights, shape: Tiny.shape, backend: backend)
    let adapters = try LoRAModel(weights: weights, config: LoRAConfig(r: 4, alpha: 8, dropout: dropout), seed: 5)
    return SFTTask(model: try DecoderModel(weights: weights), lora: adapters)
  }

  /// LoRA on the attention and on the experts (target_parameters) of the tiny MoE model.
  private static func expertLoRATask(on backend: Backend) throws -> SFTTask {
    let weights = try DecoderWeights(from: Tiny.expertWeights, shape: Tiny.expertShape, backend: backend)
    let config = LoRAConfig(r: 4, alpha: 8, targetModules: ["q_proj", "v_proj"],
                            targetParameters: ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"])
    let adapters = try LoRAModel(weights: weights, config: config, seed: 5)
    return SFTTask(model: try DecoderModel(weights: weights), lora: adapters)
  }

  /// Runs `steps` steps and returns the logged losses and the final trainables.
  private func train(_ task: SFTTask, replays: Bool, steps: Int = 6, accumulation: Int = 2,
                     maxSeqLength: Int = 10) throws -> (losses: [Double], values: [String: [Float]], trainer: Trainer) {
    var c = Tiny.config(steps: steps, accumulation: accumulation)
    c.maxSeqLength = maxSeqLength
    let trainer = try Trainer(task: task, config: c, train: try Tiny.examples(16, seed: 21))
    trainer.replaysSteps = replays
    trainer.stepShapeGranularity = StepShape.granularity  // pad on the CPU too
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

  /// Mixture of experts (routing, dispatch, grouped matmuls, the load-balancing loss over
  /// accumulated micro-batches with padding masked out): replayed equals eager.
  func test_replayEqualsEager_experts_cpu() throws {
    try checkReplayEqualsEager({ try Tiny.expertTask(on: TestBackends.cpu) }, "experts, cpu")
  }

  func test_replayEqualsEager_experts_vulkan() throws {
    let vk = try Tiny.vulkanOrSkip()
    try checkReplayEqualsEager({ try Tiny.expertTask(on: vk) }, "experts, vulkan")
  }

  /// LoRA on the experts: its grouped rank products (and their recomputation in the
  /// backward) replay like the eager step.
  func test_replayEqualsEager_expertLoRA_cpu() throws {
    try checkReplayEqualsEager({ try Self.expertLoRATask(on: TestBackends.cpu) }, "expert LoRA, cpu")
  }

  func test_replayEqualsEager_expertLoRA_vulkan() throws {
    let vk = try Tiny.vulkanOrSkip()
    try checkReplayEqualsEager({ try Self.expertLoRATask(on: vk) }, "expert LoRA, vulkan")
  }

  /// The staged path (rows padded to a multiple of 64 tokens) trains like the old one
  /// (unpadded rows, host-read loss).
  /// Step losses, relative: padding adds ignored targets and rows, so reductions and matmul
  /// blockings see other lengths (f32 rounding ~1e-7 per op); a dropped or mis-weighted
  /// token moves a loss by ≳1e-3.
  static let paddedLossRelative = 1e-5

  /// With experts, padding is masked out of the load-balancing loss: padded replayed steps
  /// train like unpadded unstaged ones.
  func test_paddedShapes_trainLikeUnpaddedEagerSteps_experts() throws {
    let padded = try train(try Tiny.expertTask(on: TestBackends.cpu), replays: true, maxSeqLength: 100)
    let reference = try trainUnstaged(try Tiny.expertTask(on: TestBackends.cpu), maxSeqLength: 100)
    XCTAssertEqual(padded.losses.count, reference.count)
    for (a, b) in zip(padded.losses, reference) {
      XCTAssertEqual(a, b, accuracy: Self.paddedLossRelative * abs(b), "padded \(padded.losses) vs unpadded \(reference)")
    }
  }

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

  /// One submission and one host wait per optimizer step over the whole run (4 micro-batches
  /// per step; the host reads step N while step N+1 runs), and after the first step (which
  /// records): no descriptor set or pipeline made, 8 bytes read back per step, barriers only
  /// where a dispatch depends on an earlier one.
  func test_countsPerStep_floorOnVulkan() throws {
    let vk = try Tiny.vulkanOrSkip()
    for (task, what, barrierBound) in [(try Tiny.fullTask(on: vk), "full", Self.fullBarriersPerDispatch),
                                       (try Self.loraTask(on: vk), "LoRA", Self.barriersPerDispatch)] {
      let steps = 6
      var c = Tiny.config(steps: steps, micro: 2, accumulation: 4)
      c.maxSeqLength = 10
      let trainer = try Trainer(task: task, config: c, train: try Tiny.examples(16, seed: 21))
      try vk.synchronize()
      let start = vk.statistics
      var snapshots: [ExecutionStatistics] = []
      trainer.onEvent = { e in if case .progress = e { snapshots.append(vk.statistics) } }
      try trainer.train()
      XCTAssertEqual(snapshots.count, steps, what)
      let whole = vk.statistics - start
      XCTAssertEqual(whole.submits, steps, "\(what): \(whole.per(steps).summary)")
      XCTAssertEqual(whole.hostWaits, steps, "\(what): \(whole.per(steps).summary)")
      // From step 1's progress line (all recording done) to the end: steps 2…6 read back.
      let d = vk.statistics - snapshots[0]
      let tag = "\(what), steps 2–\(steps): \(d.per(steps - 1).summary)"
      XCTAssertEqual(d.descriptorSetAllocations, 0, tag)
      XCTAssertEqual(d.pipelineCreations, 0, tag)
      XCTAssertEqual(d.bytesDownloaded, 8 * (steps - 1), tag)
      XCTAssertGreaterThan(d.dispatches, 100 * (steps - 1), tag)
      XCTAssertLessThanOrEqual(Double(d.barriers), barrierBound * Double(d.dispatches), tag)
      print(tag)
      // Steps overlapping the host's reads and uploads: synchronization validation is on.
      if let v = vk as? VulkanBackend { XCTAssertEqual(v.validationMessages, [], what); v.clearValidationMessages() }
    }
  }

  /// The host reads a step while the next one runs: between two progress lines of the
  /// middle of a run the next step has already been submitted.
  func test_stepsOverlap_nextSubmittedBeforePreviousRead_vulkan() throws {
    let vk = try Tiny.vulkanOrSkip()
    var c = Tiny.config(steps: 4, micro: 2, accumulation: 2)
    c.maxSeqLength = 10
    let trainer = try Trainer(task: try Tiny.fullTask(on: vk), config: c, train: try Tiny.examples(16, seed: 21))
    try vk.synchronize()
    let start = vk.statistics
    var submitsAtProgress: [Int] = []
    trainer.onEvent = { e in if case .progress = e { submitsAtProgress.append((vk.statistics - start).submits) } }
    try trainer.train()
    // Step n's line comes after step n+1's submission, except the last (read at once).
    XCTAssertEqual(submitsAtProgress, [2, 3, 4, 4])
  }

  /// Barriers per dispatch at most for LoRA, the target: measured 0.37 on SmolLM2
  /// LoRA and 0.52 on the tiny model (a full barrier per dispatch, the old engine, is 1.0).
  static let barriersPerDispatch = 0.6
  /// Full fine-tuning of the 2-layer tiny model is mostly a chain of dependent small ops
  /// (every weight's gradient, then its AdamW): measured 0.61; a barrier per dispatch is 1.0.
  static let fullBarriersPerDispatch = 0.7

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
  var exampleGroupSize: Int { inner.exampleGroupSize }
  func lossNormalizer(for batches: [Batch]) -> Float { inner.lossNormalizer(for: batches) }
  func takeMetrics(training: Bool) -> [String: Double] { inner.takeMetrics(training: training) }
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
