import Foundation
import XCTest

/// A tiny LoRA run on the shared SmolLM2-135M (CPU, 2 steps, 64-token rows, 8 alpaca records,
/// 4 validation records), made once and shared by the train, eval and merge tests.
enum TrainedRun {
  /// Rows per micro-batch, also the eval batch (the trainer evaluates with the train batch size).
  static let batchSize = "2"
  static let maxSeqLength = "64"

  struct Made {
    var dir: URL
    var model: String
    var data: URL
    var validation: URL
    var output: URL
    var run: CLITests.Run
  }

  nonisolated(unsafe) private static var made: Result<Made, Error>?
  private static let lock = NSLock()

  /// The shared SmolLM2 directory beside the repository, or a skip.
  static func modelDirectory() throws -> String {
    let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .appendingPathComponent("../../../shared/models/smollm2-135m-instruct").standardized.path
    guard FileManager.default.fileExists(atPath: path) else {
      throw XCTSkip("shared SmolLM2 model absent at \(path); end-to-end train tests skipped")
    }
    return path
  }

  /// The first `count` records of the shared alpaca `file`, written to `url`.
  static func alpaca(_ file: String, count: Int, to url: URL) throws {
    let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .appendingPathComponent("../../../shared/data/alpaca/\(file)").standardized
    guard let data = FileManager.default.contents(atPath: path.path) else {
      throw XCTSkip("shared alpaca data absent at \(path.path)")
    }
    let records = try XCTUnwrap(JSONSerialization.jsonObject(with: data) as? [Any])
    try JSONSerialization.data(withJSONObject: Array(records.prefix(count))).write(to: url)
  }

  /// The flags every run of these tests shares.
  static func common(model: String, data: URL) -> [String] {
    ["train", "--cpu", "--model", model, "--data", data.path, "--max-seq-length", maxSeqLength,
     "--batch-size", batchSize, "--lora-target-modules", "q_proj,v_proj"]
  }

  /// Trains once (the first caller pays ~30 s in a debug build), then returns the same run.
  static func shared() throws -> Made {
    lock.lock(); defer { lock.unlock() }
    if let made { return try made.get() }
    let result = Result { () throws -> Made in
      let model = try modelDirectory()
      let dir = try SharedTemporaryDirectories.make(
        FileManager.default.temporaryDirectory.appendingPathComponent("vkf-train-\(UUID())"))
      let data = dir.appendingPathComponent("train.json"), validation = dir.appendingPathComponent("val.json")
      try alpaca("alpaca_train.json", count: 8, to: data)
      try alpaca("alpaca_val.json", count: 4, to: validation)
      let output = dir.appendingPathComponent("adapter")
      let run = try CLITests.run(common(model: model, data: data)
        + ["--output", output.path, "--max-steps", "2", "--eval-data", validation.path])
      return Made(dir: dir, model: model, data: data, validation: validation, output: output, run: run)
    }
    made = result
    return try result.get()
  }

  /// metrics.jsonl as objects.
  static func metrics(_ output: URL) throws -> [[String: Any]] {
    let text = try String(contentsOf: output.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
    return try text.split(separator: "\n").map {
      try XCTUnwrap(JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any])
    }
  }
}

/// `vkfinetune train` end to end on the CPU.
final class TrainTests: XCTestCase {
  func test_train_lora_writesPEFTAdapterMetricsAndCheckpoint() throws {
    let made = try TrainedRun.shared()
    XCTAssertEqual(made.run.status, 0, made.run.stderr + made.run.stdout)
    let fm = FileManager.default
    for file in ["adapter_model.safetensors", "adapter_config.json", "README.md", "metrics.jsonl", "loss-curve.svg",
                 "checkpoint-2/trainer_state.json", "best/adapter_model.safetensors"] {
      XCTAssertTrue(fm.fileExists(atPath: made.output.appendingPathComponent(file).path), "missing \(file)")
    }
    XCTAssertFalse(try fm.contentsOfDirectory(atPath: made.output.path).contains { $0.hasPrefix(".") },
                   "no temporary file is left behind")
    let config = try XCTUnwrap(JSONSerialization.jsonObject(
      with: Data(contentsOf: made.output.appendingPathComponent("adapter_config.json"))) as? [String: Any])
    XCTAssertEqual(config["peft_type"] as? String, "LORA")
    XCTAssertEqual(config["r"] as? Int, 8)
    XCTAssertEqual(Set(config["target_modules"] as? [String] ?? []), ["q_proj", "v_proj"])

    let metrics = try TrainedRun.metrics(made.output)
    XCTAssertEqual(metrics.compactMap { $0["loss"] as? Double }.count, 2, "one line per step (logging_steps 1)")
    XCTAssertTrue(metrics.compactMap { $0["loss"] as? Double }.allSatisfy { $0.isFinite && $0 > 0 })
    XCTAssertEqual(metrics.filter { $0["eval_loss"] != nil }.compactMap { $0["step"] as? Int }, [0, 2],
                   "evaluations before the first step (eval_on_start) and at the end")
  }

  func test_train_progressLines_arePlainLinesWhenNotATerminal() throws {
    let made = try TrainedRun.shared()
    XCTAssertFalse(made.run.stdout.contains("\r"), "no carriage returns in a pipe")
    let pattern = #"(?m)^step 2/2 \| loss \d+\.\d{3} \| lr \d\.\de-\d\d \| \d+ tok/s \| ETA \d+s$"#
    XCTAssertNotNil(made.run.stdout.range(of: pattern, options: .regularExpression), made.run.stdout)
    XCTAssertTrue(made.run.stdout.contains("estimated memory:"), made.run.stdout)
    // The plan line says where its step count comes from.
    XCTAssertTrue(made.run.stdout.contains("training (sft): 2 optimizer steps (max_steps 2), "), made.run.stdout)
    // The schedule line spells out what the 0s (eval_steps, save_steps) mean.
    XCTAssertTrue(made.run.stdout.contains(
      "schedule: evaluate on 4 examples at the end; checkpoint at the end; log every step\n"), made.run.stdout)
    // Records cut to max_seq_length are a warning saying how many and by how much (the 8
    // alpaca records, 64-token rows; the validation file's 4 records as well).
    XCTAssertTrue(made.run.stderr.contains("warning: 7 of 8 training records (87.5%) are longer than max_seq_length 64 "
      + "and were cut: 539 tokens dropped, the longest had 222; raise --max-seq-length (now 64)"), made.run.stderr)
    XCTAssertTrue(made.run.stderr.contains("warning: ") && made.run.stderr.contains(" of 4 validation records"),
                  made.run.stderr)
  }

  func test_train_intoExistingOutput_refusedBeforeLoading() throws {
    let made = try TrainedRun.shared()
    let before = try FileManager.default.contentsOfDirectory(atPath: made.output.path).sorted()
    let r = try CLITests.run(TrainedRun.common(model: made.model, data: made.data)
      + ["--output", made.output.path, "--max-steps", "2"])
    XCTAssertNotEqual(r.status, 0)
    XCTAssertTrue(r.stderr.contains("not empty"), r.stderr)
    XCTAssertFalse(r.stdout.contains("backend:"), "refused before loading anything: \(r.stdout)")
    XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: made.output.path).sorted(), before)
  }

  func test_train_overMemoryBudget_refusedWithAdvice() throws {
    let made = try TrainedRun.shared()
    let out = made.dir.appendingPathComponent("budget")
    let r = try CLITests.run(TrainedRun.common(model: made.model, data: made.data)
      + ["--output", out.path, "--max-steps", "1", "--memory-budget", "64MiB"])
    XCTAssertNotEqual(r.status, 0)
    let errors = r.stderr.split(separator: "\n").filter { $0.hasPrefix("Error:") }
    XCTAssertEqual(errors.count, 1, r.stderr)
    XCTAssertTrue(r.stderr.contains("budget") && r.stderr.contains("--method qlora"), r.stderr)
    // Checkpointing was tried first (it lowers the estimate), and said so.
    XCTAssertTrue(r.stdout.contains("gradient checkpointing: on"), r.stdout)
    XCTAssertFalse(r.stdout.contains("step 1/"), "no step ran")
  }

  /// An interrupted run (its last checkpoint and outputs gone) resumed from checkpoint-2
  /// ends with the same adapter bytes as the uninterrupted 4-step run.
  func test_resume_fromCheckpoint_equalsStraightRun() throws {
    let made = try TrainedRun.shared()
    let fm = FileManager.default
    let straight = made.dir.appendingPathComponent("straight"), resumed = made.dir.appendingPathComponent("resumed")
    // Constant LR and dropout on, so the schedule and the dropout RNG state both have to resume right.
    let flags = TrainedRun.common(model: made.model, data: made.data)
      + ["--max-steps", "4", "--save-steps", "2", "--lr-scheduler", "constant", "--lora-dropout", "0.1"]
    let r1 = try CLITests.run(flags + ["--output", straight.path])
    XCTAssertEqual(r1.status, 0, r1.stderr)
    try fm.copyItem(at: straight, to: resumed)
    for gone in ["checkpoint-4", "adapter_model.safetensors", "adapter_config.json", "README.md"] {
      try fm.removeItem(at: resumed.appendingPathComponent(gone))
    }
    let r2 = try CLITests.run(flags + ["--output", resumed.path, "--resume"])
    XCTAssertEqual(r2.status, 0, r2.stderr)
    XCTAssertTrue(r2.stdout.contains("resumed from checkpoint-2 at step 2/4"), r2.stdout)
    XCTAssertFalse(r2.stdout.contains("step 1/4"), "steps 1–2 are not run again")
    let a = try Data(contentsOf: straight.appendingPathComponent("adapter_model.safetensors"))
    let b = try Data(contentsOf: resumed.appendingPathComponent("adapter_model.safetensors"))
    XCTAssertEqual(a, b, "resumed adapter differs from the straight run's")
    let losses = { (dir: URL) in try TrainedRun.metrics(dir).compactMap { $0["loss"] as? Double } }
    XCTAssertEqual(try losses(resumed), try losses(straight), "metrics.jsonl continues where the checkpoint was")
  }

  /// A finished constant-LR run extended with a larger max_steps (`--resume`) ends with the same
  /// adapter bytes and losses as one run of the larger length: under a schedule that does not
  /// depend on the run's length the checkpoint's fingerprint accepts the new max_steps.
  func test_resume_extendsFinishedConstantScheduleRun_equalsStraightRun() throws {
    let made = try TrainedRun.shared()
    let straight = made.dir.appendingPathComponent("straight-constant"), extended = made.dir.appendingPathComponent("extended")
    let flags = TrainedRun.common(model: made.model, data: made.data) + ["--lr-scheduler", "constant", "--lora-dropout", "0.1"]
    let r1 = try CLITests.run(flags + ["--output", straight.path, "--max-steps", "4"])
    XCTAssertEqual(r1.status, 0, r1.stderr)
    let r2 = try CLITests.run(flags + ["--output", extended.path, "--max-steps", "2"])
    XCTAssertEqual(r2.status, 0, r2.stderr)
    let r3 = try CLITests.run(flags + ["--output", extended.path, "--max-steps", "4", "--resume"])
    XCTAssertEqual(r3.status, 0, r3.stderr)
    XCTAssertTrue(r3.stdout.contains("resumed from checkpoint-2 at step 2/4"), r3.stdout)
    let a = try Data(contentsOf: straight.appendingPathComponent("adapter_model.safetensors"))
    let b = try Data(contentsOf: extended.appendingPathComponent("adapter_model.safetensors"))
    XCTAssertEqual(a, b, "the extended run's adapter differs from the straight 4-step run's")
    let losses = { (dir: URL) in try TrainedRun.metrics(dir).compactMap { $0["loss"] as? Double } }
    XCTAssertEqual(try losses(extended), try losses(straight))
  }
}
