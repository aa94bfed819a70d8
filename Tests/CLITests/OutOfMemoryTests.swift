import Foundation
import XCTest

/// Out of device memory anywhere in `train` — loading the weights, creating the optimizer
/// state — ends in one line naming the allocation, the estimate and what to change. The
/// device is made small with VKF_DEVICE_MEMORY_LIMIT (the error a full GPU gives, on any machine).
final class OutOfMemoryTests: XCTestCase {
  /// The shared SmolLM2 (or a skip), a fresh directory and `records` alpaca records in it.
  private func workspace(_ tag: String, records: Int) throws -> (model: String, dir: URL, data: URL) {
    let model = try TrainedRun.modelDirectory()
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vkf-\(tag)-\(UUID())")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let data = dir.appendingPathComponent("train.json")
    try TrainedRun.alpaca("alpaca_train.json", count: records, to: data)
    return (model, dir, data)
  }

  func test_train_outOfDeviceMemory_endsInOneLineOfAdvice() throws {
    let (model, dir, data) = try workspace("oom", records: 4)
    defer { try? FileManager.default.removeItem(at: dir) }
    // 100 MB: the first weight upload fails. 1.3 GB: the weights and gradients (1.08 GB) fit,
    // AdamW's state does not.
    // Last: the Vulkan backend (lavapipe), whose buffer pool checks the same limit.
    let cpu = TrainedRun.common(model: model, data: data)
    let vulkan = cpu.filter { $0 != "--cpu" }
    for (limit, stage, args) in [(100_000_000, "loading", cpu), (1_300_000_000, "optimizer state", cpu),
                                 (100_000_000, "loading on Vulkan", vulkan)] {
      // --memory-budget above the limit: the up-front check passes (as when an estimate is
      // too low), so the allocation itself fails.
      let r = try CLITests.run(args
        + ["--method", "full", "--output", dir.appendingPathComponent("out-\(limit)").path, "--max-steps", "1",
           "--memory-budget", "1000GiB"],
        env: ["VKF_DEVICE_MEMORY_LIMIT": "\(limit)", "VKF_DEVICE": "llvmpipe"])
      if args == vulkan, r.stderr.contains("no Vulkan"), ProcessInfo.processInfo.environment["VKF_REQUIRE_VULKAN"] != "1" {
        throw XCTSkip("no Vulkan device: \(r.stderr)")
      }
      XCTAssertNotEqual(r.status, 0, stage)
      let errors = r.stderr.split(separator: "\n").filter { $0.hasPrefix("Error:") }
      XCTAssertEqual(errors.count, 1, "\(stage): \(r.stderr)")
      let line = String(errors.first ?? "")
      XCTAssertTrue(line.contains("out of device memory"), "\(stage): \(line)")
      XCTAssertTrue(line.contains("VKF_DEVICE_MEMORY_LIMIT"), "\(stage): names the failed allocation: \(line)")
      XCTAssertTrue(line.contains("estimated at"), "\(stage): \(line)")
      XCTAssertTrue(line.contains("--method lora") && line.contains("--gradient-checkpointing"), "\(stage): \(line)")
      XCTAssertFalse(r.stderr.contains("Fatal error"), "\(stage) trapped: \(r.stderr)")
    }
  }

  /// Without --memory-budget the device's memory is the budget: a run that cannot fit is
  /// refused before anything is uploaded, and one that fits only with gradient checkpointing
  /// gets it, with a line saying so.
  func test_train_deviceMemoryIsTheBudget_refusesOrCheckpoints() throws {
    let (model, dir, data) = try workspace("fit", records: 8)
    defer { try? FileManager.default.removeItem(at: dir) }
    let refused = try CLITests.run(TrainedRun.common(model: model, data: data)
      + ["--method", "full", "--output", dir.appendingPathComponent("refused").path, "--max-steps", "1"],
      env: ["VKF_DEVICE_MEMORY_LIMIT": "100000000"])
    XCTAssertNotEqual(refused.status, 0)
    let errors = refused.stderr.split(separator: "\n").filter { $0.hasPrefix("Error:") }
    XCTAssertEqual(errors.count, 1, refused.stderr)
    XCTAssertTrue(errors.first?.contains("the device's memory is 95.4 MiB") ?? false, refused.stderr)
    XCTAssertFalse(refused.stdout.contains("full fine-tuning:"), "refused before building the task")

    // LoRA, 8 rows of up to 512 tokens: ~3.5 GiB without checkpointing, ~1.2 GiB with it.
    let args = ["train", "--cpu", "--model", model, "--data", data.path, "--max-seq-length", "512",
                "--batch-size", "8", "--method", "lora", "--output", dir.appendingPathComponent("ckpt").path,
                "--max-steps", "1"]
    let fitted = try CLITests.run(args, env: ["VKF_DEVICE_MEMORY_LIMIT": "\(2 << 30)"])
    XCTAssertEqual(fitted.status, 0, fitted.stderr)
    XCTAssertTrue(fitted.stdout.contains("gradient checkpointing: on, since the estimate without it"), fitted.stdout)
  }
}
