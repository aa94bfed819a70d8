// Reward-model steps as replays: trunk, scalar head, the Bradley–Terry loss on the device
// (`preferenceLoss`, kind .reward) and the backward through the head, recorded once per shape.
import Foundation
import XCTest
import VKFCore
import VKFData
import VKFModel
import VKFPEFT
import VKFTestSupport
import VKFVulkan
@testable import VKFTrain

final class ReplayedRewardTests: XCTestCase {
  /// The staged step against the host-loss step: the loss math in f32 (device) vs Double
  /// (host), a row's score as a masked row sum vs a host read — f32 reassociation on
  /// gradients of magnitude ≤ 1, as ReplayedDPOTests.
  static let hostPathLossRelative = 1e-5
  static let hostPathGradientNMSE = 1e-9, hostPathGradientMaxAbs = 1e-5

  private func task(on backend: Backend, dropout: Float = 0.1, margin: Double = 0.25) throws -> RewardTask {
    let weights = try LlamaWeights(from: Tiny.weights, shape: Tiny.shape, backend: backend)
    let lora = try LoRAModel(weights: weights, config: LoRAConfig(r: 4, alpha: 8, dropout: dropout), seed: 5)
    let head = try RewardHead(hidden: Tiny.shape.hidden, backend: backend, seed: 6)
    return RewardTask(model: try LlamaModel(weights: weights), lora: lora, head: head, padID: 0, margin: margin)
  }

  private func train(_ task: TrainingTask, replays: Bool, steps: Int = 4)
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

  func test_replayEqualsEager_andHostLossPath_cpu() throws { try checkPaths(on: TestBackends.cpu) }
  func test_replayEqualsEager_andHostLossPath_vulkan() throws { try checkPaths(on: try Tiny.vulkanOrSkip()) }

  /// Replayed = the same staged ops run eagerly, bit for bit (losses, metrics, values incl.
  /// the head), over 4 optimizer steps; and one accumulated step (2 micro-batches of
  /// different lengths, padded, with a margin) equals the host-loss path (`forwardBackward`).
  private func checkPaths(on backend: Backend) throws {
    let replayed = try train(try task(on: backend), replays: true)
    let eager = try train(try task(on: backend), replays: false)
    let what = "reward on \(backend.name)"
    XCTAssertNotNil(replayed.trainer.replayedSteps, what)
    XCTAssertEqual(replayed.losses, eager.losses, what)
    XCTAssertEqual(replayed.values, eager.values, what)
    XCTAssertEqual(replayed.extras, eager.extras, what)
    XCTAssertEqual(replayed.losses.count, 4)
    for (i, e) in replayed.extras.enumerated() {
      XCTAssertEqual(Set(e.keys), ["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"],
                     "step \(i + 1)")
    }
    XCTAssertTrue(replayed.values.keys.contains(RewardHead.peftKey))

    let batches = Batching.batches(try Tiny.examples(8, seed: 29), batchSize: 4, padID: 0)
    XCTAssertEqual(batches.map(\.seqLength), [10, 9])
    let seeds: [UInt64] = [11, 12]
    let staged = try task(on: backend, dropout: 0), host = try task(on: backend, dropout: 0)
    let normalizer = staged.lossNormalizer(for: batches)
    let engine = try ReplayedSteps(task: staged, optimizer: try AdamW(parameters: staged.trainableTensors,
                                                                     backend: backend), maxTokens: 16,
                                   shapeGranularity: StepShape.granularity)
    let out = try engine.step(batches, dropoutSeeds: seeds, lossNormalizer: normalizer, lr: 0)
    XCTAssertEqual(engine.recordedShapes, [StepShape(batch: 4, tokens: 16)], what)
    try host.zeroGradients()
    var hostLoss: Float = 0
    for (b, seed) in zip(batches, seeds) {
      hostLoss += try host.forwardBackward(b, lossNormalizer: normalizer, dropoutSeed: seed)
    }
    XCTAssertEqual(Double(out.loss), Double(hostLoss), accuracy: Self.hostPathLossRelative * Double(abs(hostLoss)), what)
    staged.absorbStepMetrics(out.taskMetrics)
    let stagedMetrics = staged.takeMetrics(training: true), hostMetrics = host.takeMetrics(training: true)
    XCTAssertEqual(Set(stagedMetrics.keys), Set(hostMetrics.keys), what)
    for (k, v) in hostMetrics {
      XCTAssertEqual(stagedMetrics[k] ?? .nan, v, accuracy: Self.hostPathLossRelative * max(1, abs(v)), "\(what) \(k)")
    }
    for (s, h) in zip(staged.trainableTensors, host.trainableTensors) {
      let expected = try backend.floats(h.gradient)
      if h.name.contains("lora_B") || h.name == RewardHead.peftKey {
        XCTAssertTrue(expected.contains { $0 != 0 }, "\(what) \(h.name) has a gradient")
      }
      if let why = Compare.check(expected, try backend.floats(s.gradient), nmse: Self.hostPathGradientNMSE,
                                 maxAbs: Self.hostPathGradientMaxAbs) {
        XCTFail("\(what) \(s.name): \(why)")
      }
    }
  }

  /// One submission and one wait per optimizer step (2 micro-batches), nothing made after the
  /// first step, and [loss, S] + 8 metric sums (40 bytes) read per step.
  func test_countsPerStep_floorOnVulkan() throws {
    let vk = try Tiny.vulkanOrSkip()
    let steps = 4
    var c = Tiny.config(steps: steps, micro: 2, accumulation: 2)
    c.maxSeqLength = 10
    let trainer = try Trainer(task: try task(on: vk), config: c, train: try Tiny.examples(32, seed: 23))
    try vk.synchronize()
    let start = vk.statistics
    var snapshots: [ExecutionStatistics] = []
    trainer.onEvent = { e in if case .progress = e { snapshots.append(vk.statistics) } }
    try trainer.train()
    let whole = vk.statistics - start
    XCTAssertEqual(whole.submits, steps, whole.per(steps).summary)
    XCTAssertEqual(whole.hostWaits, steps, whole.per(steps).summary)
    let d = vk.statistics - snapshots[0]
    let tag = "reward steps 2–\(steps): \(d.per(steps - 1).summary)"
    XCTAssertEqual(d.descriptorSetAllocations, 0, tag)
    XCTAssertEqual(d.pipelineCreations, 0, tag)
    XCTAssertEqual(d.bytesDownloaded, (2 + PreferenceLossParameters.metricCount) * 4 * (steps - 1), tag)
    print(tag)
    if let v = vk as? VulkanBackend { XCTAssertEqual(v.validationMessages, []); v.clearValidationMessages() }
  }
}
