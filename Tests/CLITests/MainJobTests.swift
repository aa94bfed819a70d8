import Foundation
import XCTest

/// The README's main job in small: a LoRA fine-tune of the shared SmolLM2-135M-Instruct on
/// alpaca_train.json lowers the validation loss on alpaca_val.json (the first 12 of 16 records,
/// through --max-eval-samples), measured by the evaluation before the first step and the one
/// after the last.
final class MainJobTests: XCTestCase {
  func test_readmeMainJob_inSmall_lowersValidationLoss() throws {
    let model = try TrainedRun.modelDirectory()
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vkf-main-job-\(UUID())")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let data = dir.appendingPathComponent("train.json"), validation = dir.appendingPathComponent("val.json")
    try TrainedRun.alpaca("alpaca_train.json", count: 48, to: data)
    try TrainedRun.alpaca("alpaca_val.json", count: 16, to: validation)
    let output = dir.appendingPathComponent("out")
    let run = try CLITests.run([
      "train", "--cpu", "--model", model, "--data", data.path, "--eval-data", validation.path,
      "--method", "lora", "--max-steps", "6", "--batch-size", "4", "--max-seq-length", "128",
      "--learning-rate", "1e-3", "--max-eval-samples", "12", "--output", output.path])
    XCTAssertEqual(run.status, 0, run.stderr)
    XCTAssertTrue(run.stdout.contains("12 validation from val.json, first 12 used"), run.stdout)
    let text = try String(contentsOf: output.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
    let evals = try text.split(separator: "\n").compactMap { line -> (Int, Double)? in
      let obj = try XCTUnwrap(try JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
      guard let loss = obj["eval_loss"] as? Double, let step = obj["step"] as? Int else { return nil }
      return (step, loss)
    }
    XCTAssertEqual(evals.map(\.0), [0, 6], "an evaluation before the first step and after the last")
    guard let first = evals.first?.1, let last = evals.last?.1 else { return }
    XCTAssertLessThan(last, first, "validation loss before \(first), after \(last)")
    for file in ["adapter_model.safetensors", "adapter_config.json", "README.md", "loss-curve.svg"] {
      XCTAssertTrue(FileManager.default.fileExists(atPath: output.appendingPathComponent(file).path), file)
    }
  }
}
