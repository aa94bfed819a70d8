import Foundation
import XCTest

/// `vkfinetune quantize` on a tiny llama: the compressed-tensors directory is written with its
/// quantization_config and packed tensors, the held-out loss before and after is reported, the
/// directory loads back for eval and generate (int8 bases), the GGUF route writes q8_0, and bad
/// settings are refused in one line.
final class QuantizeTests: XCTestCase {
  func test_quantize_writesCompressedTensors_reportsLoss_andLoadsBack() throws {
    let dir = try SharedTemporaryDirectories.make(
      FileManager.default.temporaryDirectory.appendingPathComponent("vkf-quantize-\(UUID())"))
    let model = try QuantizationCacheTests.tinyLlama(in: dir)
    let data = dir.appendingPathComponent("val.json")
    try TrainedRun.alpaca("alpaca_val.json", count: 4, to: data)
    let out = dir.appendingPathComponent("int8"), report = dir.appendingPathComponent("report.json")
    let r = try CLITests.run(["quantize", "--cpu", "--model", model.path, "--output", out.path, "--scheme", "asymmetric",
                              "--strategy", "group", "--group-size", "32", "--eval-data", data.path,
                              "--max-seq-length", "128", "--json", report.path])
    XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
    XCTAssertTrue(r.stdout.contains("quantised 14 projections to int8 (asymmetric, group 32)"), r.stdout)
    XCTAssertTrue(r.stdout.contains("held-out loss"), r.stdout)
    let json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: report)) as? [String: Any])
    let before = try XCTUnwrap(json["lossBefore"] as? Double), after = try XCTUnwrap(json["lossAfter"] as? Double)
    XCTAssertTrue(before.isFinite && after.isFinite && before != after, "\(before) → \(after)")
    let config = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: out.appendingPathComponent("config.json"))) as? [String: Any])
    let qc = try XCTUnwrap(config["quantization_config"] as? [String: Any])
    XCTAssertEqual(qc["quant_method"] as? String, "compressed-tensors")
    XCTAssertEqual(qc["format"] as? String, "pack-quantized")
    // The written directory is what `eval` reads: its loss is the report's "after".
    let e = try CLITests.run(["eval", "--cpu", "--model", out.path, "--data", data.path, "--max-seq-length", "128",
                              "--batch-size", "4", "--json", dir.appendingPathComponent("eval.json").path])
    XCTAssertEqual(e.status, 0, e.stdout + e.stderr)
    let evalJSON = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: dir.appendingPathComponent("eval.json"))) as? [String: Any])
    XCTAssertEqual(try XCTUnwrap(evalJSON["loss"] as? Double), after, accuracy: 1e-9)
    let g = try CLITests.run(["generate", "--cpu", "--model", out.path, "--prompt", "Hello", "--max-new-tokens", "3"])
    XCTAssertEqual(g.status, 0, g.stdout + g.stderr)
    // LoRA trains on top of the int8 base.
    let t = try CLITests.run(["train", "--cpu", "--model", out.path, "--data", data.path, "--max-seq-length", "128",
                              "--batch-size", "2", "--max-steps", "1", "--output", dir.appendingPathComponent("lora").path])
    XCTAssertEqual(t.status, 0, t.stdout + t.stderr)
    let q4 = try CLITests.run(["train", "--cpu", "--model", out.path, "--data", data.path, "--max-seq-length", "128",
                               "--max-steps", "1", "--method", "qlora", "--output", dir.appendingPathComponent("q").path])
    XCTAssertNotEqual(q4.status, 0)
    XCTAssertTrue(q4.stderr.contains("is already an int8 (compressed-tensors) checkpoint"), q4.stderr)
    let m = try CLITests.run(["merge", "--cpu", "--model", out.path, "--adapter", dir.appendingPathComponent("lora").path,
                              "--output", dir.appendingPathComponent("merged").path])
    XCTAssertNotEqual(m.status, 0)
    XCTAssertTrue(m.stderr.contains("is an int8 (compressed-tensors) weight"), m.stderr)
    // GGUF q8_0.
    let gguf = dir.appendingPathComponent("tiny.q8_0.gguf")
    let q = try CLITests.run(["quantize", "--cpu", "--model", model.path, "--format", "gguf", "--output", gguf.path])
    XCTAssertEqual(q.status, 0, q.stdout + q.stderr)
    XCTAssertEqual(String(decoding: try Data(contentsOf: gguf).prefix(4), as: UTF8.self), "GGUF")

    let cases: [([String], String)] = [
      (["--scheme", "skewed"], "--scheme must be symmetric or asymmetric"),
      (["--strategy", "row"], "--strategy must be channel, group or tensor"),
      (["--strategy", "group", "--group-size", "0"], "--group-size must be a positive integer"),
      (["--strategy", "group", "--group-size", "48"], "--group-size 48 does not divide the model's hidden_size 64; 32 would"),
      (["--format", "gguf", "--scheme", "asymmetric"], "--format gguf writes llama.cpp's q8_0"),
      (["--format", "awq"], "--format must be compressed-tensors or gguf"),
      (["--output", out.path], "exists"),
    ]
    for (i, (extra, message)) in cases.enumerated() {
      let fresh = dir.appendingPathComponent("bad-\(i)").path
      let e = try CLITests.run(["quantize", "--cpu", "--model", model.path]
        + (extra.contains("--output") ? [] : ["--output", fresh]) + extra)
      XCTAssertNotEqual(e.status, 0, "\(extra)")
      XCTAssertTrue(e.stderr.contains(message), "\(extra): \(e.stderr)")
      XCTAssertFalse(e.stderr.contains("Fatal error"), e.stderr)
      XCTAssertFalse(FileManager.default.fileExists(atPath: fresh), "\(extra) left \(fresh)")
    }
    let again = try CLITests.run(["quantize", "--cpu", "--model", out.path, "--output", dir.appendingPathComponent("twice").path])
    XCTAssertTrue(again.stderr.contains("already an int8"), again.stderr)
  }

  /// `--qat int4` trains the full model under Q4_0 fake quantisation and writes plain f32
  /// weights; QAT with adapters is refused in one line.
  func test_qat_fullFineTuning_andRefusals() throws {
    let dir = try SharedTemporaryDirectories.make(
      FileManager.default.temporaryDirectory.appendingPathComponent("vkf-qat-\(UUID())"))
    let model = try QuantizationCacheTests.tinyLlama(in: dir)
    let data = dir.appendingPathComponent("train.json")
    try TrainedRun.alpaca("alpaca_train.json", count: 4, to: data)
    let common = ["train", "--cpu", "--model", model.path, "--data", data.path, "--max-seq-length", "128",
                  "--batch-size", "2", "--max-steps", "2"]
    let out = dir.appendingPathComponent("qat")
    let r = try CLITests.run(common + ["--method", "full", "--qat", "int4", "--output", out.path])
    XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
    XCTAssertTrue((r.stdout + r.stderr).contains("QAT: 14 projections train under Q4_0"), r.stdout + r.stderr)
    XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent("model.safetensors").path))
    // Resuming without --qat would silently change the training: refused.
    let resumed = try CLITests.run(common.dropLast(2) + ["--max-steps", "3", "--method", "full", "--resume", "--output", out.path])
    XCTAssertNotEqual(resumed.status, 0)
    XCTAssertTrue(resumed.stderr.contains("started with qat = int4, now unset"), resumed.stderr)
    let lora = try CLITests.run(common + ["--method", "lora", "--qat", "int8", "--output", dir.appendingPathComponent("l").path])
    XCTAssertNotEqual(lora.status, 0)
    XCTAssertTrue(lora.stderr.contains("qat = int8 fake-quantises the trained weights: it needs method full"), lora.stderr)
    let bad = try CLITests.run(common + ["--method", "full", "--qat", "int3", "--output", dir.appendingPathComponent("b").path])
    XCTAssertNotEqual(bad.status, 0)
    XCTAssertTrue(bad.stderr.contains("qat must be int8, int4 or none"), bad.stderr)
  }
}
