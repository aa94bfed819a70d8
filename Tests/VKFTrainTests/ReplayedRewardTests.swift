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
  private func task(on backend: Backend, dropout: Float = 0.1, margin: Double = 0.25) throws -> RewardTask {
    let weights = try DecoderWeights(from: Tiny.weights, shape: Tiny.shape, backend: backend)
    let lora = try LoRAModel(weights: weights, config: LoRAConfig(r: 4, alpha: 8, dropout: dropout), seed: 5)
    let head = try ScoreHead(hidden: Tiny.shape.hidden, backend: backend, seed: 6)
    return RewardTask(model: try DecoderModel(weights: weights), lora: lora, head: head, padID: 0, margin: margin)
  }

  func test_replayEqualsEager_andHostLossPath_cpu() throws { try checkPaths(on: TestBackends.cpu) }
  func test_replayEqualsEager_andHostLossPath_vulkan() throws { try checkPaths(on: try Tiny.vulkanOrSkip()) }

  /// Replayed = the same staged ops run eagerly, bit for bit (losses, metrics, values incl.
  /// the head), over 4 optimizer steps; and one accumulated step (2 micro-batches of
  /// different lengths, padded, with a margin) equals the host-loss path (`forwardBackward`).
  private func checkPaths(on backend: Backend) throws {
    let replayed = try StagedPreferenceChecks.train(try task(on: backend), replays: true)
    let eager = try StagedPreferenceChecks.train(try task(on: backend), replays: false)
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
    XCTAssertTrue(replayed.values.keys.contains(ScoreHead.peftKey))
    try StagedPreferenceChecks.checkHostPath(staged: try task(on: backend, dropout: 0),
                                             host: try task(on: backend, dropout: 0), on: backend, what,
                                             mustMove: { $0.contains("lora_B") || $0 == ScoreHead.peftKey })
  }

  /// One submission and one wait per optimizer step (2 micro-batches), nothing made after the
  /// first step, and [loss, S] + 8 metric sums (40 bytes) read per step.
  func test_countsPerStep_floorOnVulkan() throws {
    let vk = try Tiny.vulkanOrSkip()
    try StagedPreferenceChecks.checkCountsPerStep(try task(on: vk), on: vk, "reward")
  }
}
