import Foundation
import XCTest
import VKFCore
import VKFData
import VKFModel
import VKFPEFT
import VKFTestSupport
@testable import VKFTrain

/// The same 20-step runs on the CPU and on Vulkan (lavapipe in CI): loss curves agree.
final class BackendTrainingTests: XCTestCase {
  /// Step losses, relative. Each backend's ops match the CPU to ~1e-7 relative (parity
  /// suite); 20 AdamW steps compound that only weakly on this tiny model (measured 1.2e-7
  /// full, 7.8e-8 LoRA on lavapipe). 1e-5 leaves ~100× for other devices and summation
  /// orders while a wrong op, a dropped micro-batch or a mis-scaled update moves the
  /// losses by ≳1e-2.
  static let lossRelative = 1e-5

  func test_fullFineTuning_20steps_cpuMatchesVulkan() throws {
    let vulkan = try Tiny.vulkanOrSkip()
    let cpu = try run { try Tiny.fullTask(on: TestBackends.cpu) }
    let vk = try run { try Tiny.fullTask(on: vulkan) }
    compare(cpu, vk, "full fine-tuning")
  }

  func test_lora_20steps_cpuMatchesVulkan() throws {
    let vulkan = try Tiny.vulkanOrSkip()
    func lora(_ backend: Backend) throws -> SFTTask {
      let weights = try DecoderWeights(from: Tiny.weights, shape: Tiny.shape, backend: backend)
      // Dropout on: the masks are seeded by the trainer and must be the same on both backends.
      let adapters = try LoRAModel(weights: weights, config: LoRAConfig(r: 4, alpha: 8, dropout: 0.1), seed: 5)
      return SFTTask(model: try DecoderModel(weights: weights), lora: adapters)
    }
    let cpu = try run { try lora(TestBackends.cpu) }
    let vk = try run { try lora(vulkan) }
    compare(cpu, vk, "LoRA")
  }

  private func run(_ make: () throws -> SFTTask) throws -> [Double] {
    var c = Tiny.config(steps: 20)
    c.lrSchedulerType = "cosine"
    let trainer = try Trainer(task: try make(), config: c, train: try Tiny.examples(16, seed: 21))
    // The same padded layout on both (dropout masks follow it; the CPU would not pad).
    trainer.stepShapeGranularity = StepShape.granularity
    return try Tiny.run(trainer)
  }

  private func compare(_ cpu: [Double], _ vk: [Double], _ what: String) {
    XCTAssertEqual(cpu.count, 20)
    XCTAssertEqual(vk.count, 20)
    // The run must learn, or equal curves would prove little.
    XCTAssertLessThan(cpu.suffix(3).reduce(0, +), cpu.prefix(3).reduce(0, +), "\(what): \(cpu)")
    var worst = 0.0
    for (a, b) in zip(cpu, vk) { worst = max(worst, abs(a - b) / abs(a)) }
    XCTAssertLessThanOrEqual(worst, Self.lossRelative, "\(what): cpu \(cpu) vs vulkan \(vk)")
    print("\(what): worst relative loss difference CPU vs Vulkan over 20 steps: \(worst)")
  }
}
