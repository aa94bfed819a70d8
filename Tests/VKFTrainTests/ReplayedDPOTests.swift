// DPO steps as replays: the reference pass, the policy pass, the loss on the device
// (`preferenceLoss`) and the weighted backward recorded once per shape.
import Foundation
import XCTest
import VKFCore
import VKFData
import VKFModel
import VKFPEFT
import VKFTestSupport
import VKFVulkan
@testable import VKFTrain

final class ReplayedDPOTests: XCTestCase {
  private func task(on backend: Backend, dropout: Float = 0.1) throws -> DPOTask {
    let loss = DPOLossConfig(rpoAlpha: 0.5)
    let weights = try DecoderWeights(from: Tiny.weights, shape: Tiny.shape, backend: backend)
    let lora = try LoRAModel(weights: weights, config: LoRAConfig(r: 4, alpha: 8, dropout: dropout), seed: 5)
    return try DPOTask(model: try DecoderModel(weights: weights), lora: lora, loss: loss)
  }

  func test_replayEqualsEager_andHostLossPath_cpu() throws { try checkPaths(on: TestBackends.cpu) }
  func test_replayEqualsEager_andHostLossPath_vulkan() throws { try checkPaths(on: try Tiny.vulkanOrSkip()) }

  /// Replayed = the same staged ops run eagerly, bit for bit (losses, metrics, values), over
  /// 4 optimizer steps; and one accumulated step (2 micro-batches, dropout, RPO) equals the
  /// host-loss path (`forwardBackward`) in loss and gradients.
  private func checkPaths(on backend: Backend) throws {
    let replayed = try StagedPreferenceChecks.train(try task(on: backend), replays: true)
    let eager = try StagedPreferenceChecks.train(try task(on: backend), replays: false)
    let what = "DPO on \(backend.name)"
    XCTAssertEqual(replayed.losses, eager.losses, what)
    XCTAssertEqual(replayed.values, eager.values, what)
    XCTAssertEqual(replayed.extras, eager.extras, what)
    XCTAssertNotNil(replayed.trainer.replayedSteps, what)
    XCTAssertEqual(replayed.losses.count, 4)
    // DPO's metrics come back with the loss, every step.
    for (i, e) in replayed.extras.enumerated() {
      XCTAssertEqual(Set(e.keys), ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins",
                                   "rewards/accuracies", "logps/chosen", "logps/rejected"], "step \(i + 1)")
      XCTAssertLessThan(e["logps/chosen"] ?? 0, 0)
      // The logged loss adds RPO's α·NLL (> 0) to the pairs' mean DPO loss.
      XCTAssertGreaterThan(replayed.losses[i], e["loss"] ?? .nan)
    }
    XCTAssertEqual(replayed.extras.first?["rewards/chosen"] ?? .nan, 0, accuracy: 1e-6,
                   "a fresh adapter is the reference at step 1")
    try StagedPreferenceChecks.checkHostPath(staged: try task(on: backend, dropout: 0),
                                             host: try task(on: backend, dropout: 0), on: backend, what,
                                             mustMove: { $0.contains("lora_B") })
  }

  /// One submission and one wait per optimizer step (2 micro-batches), nothing made after the
  /// first step, and [loss, S] + 8 metric sums (40 bytes) read per step.
  func test_countsPerStep_floorOnVulkan() throws {
    let vk = try Tiny.vulkanOrSkip()
    try StagedPreferenceChecks.checkCountsPerStep(try task(on: vk), on: vk, "DPO")
  }

  /// ORPO (no reference pass; the NLL and the answer mask on the device): replayed = eager bit
  /// for bit, and the same per-step floor (one submission, one wait, nothing made after warm-up).
  func test_orpo_replayEqualsEager_andCountsFloorOnVulkan() throws {
    func orpo(on backend: Backend) throws -> DPOTask {
      let weights = try DecoderWeights(from: Tiny.weights, shape: Tiny.shape, backend: backend)
      let lora = try LoRAModel(weights: weights, config: LoRAConfig(r: 4, alpha: 8), seed: 5)
      return try DPOTask(model: try DecoderModel(weights: weights), lora: lora, loss: .orpo(beta: 0.2))
    }
    for backend in [TestBackends.cpu as Backend] + [try? Tiny.vulkanOrSkip()].compactMap({ $0 }) {
      let replayed = try StagedPreferenceChecks.train(try orpo(on: backend), replays: true)
      let eager = try StagedPreferenceChecks.train(try orpo(on: backend), replays: false)
      XCTAssertEqual(replayed.losses, eager.losses, "ORPO on \(backend.name)")
      XCTAssertEqual(replayed.values, eager.values, "ORPO on \(backend.name)")
      XCTAssertNotNil(replayed.extras.first?["nll_loss"], "ORPO logs TRL's nll_loss")
    }
    let vk = try Tiny.vulkanOrSkip()
    try StagedPreferenceChecks.checkCountsPerStep(try orpo(on: vk), on: vk, "ORPO")
  }
}
