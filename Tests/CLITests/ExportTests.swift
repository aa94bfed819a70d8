import Foundation
import XCTest

/// `vkfinetune export --format gguf-lora` of the shared trained SmolLM2 adapter: the file and
/// Modelfile are written, existing files are kept without --overwrite, and bad flags are
/// refused in one line; a tiny Hugging Face llama exported whole at q4_k_m loads back and
/// generates (the bytes: GGUFHFExportTests, GGUFModelExportTests and tools/check_gguf_export.py).
final class ExportTests: XCTestCase {
  func test_exportGGUFLoRA_andModelfile_refusals() throws {
    let made = try TrainedRun.shared()
    XCTAssertEqual(made.run.status, 0, made.run.stderr)
    let out = made.dir.appendingPathComponent("export/adapter.gguf")
    try FileManager.default.createDirectory(at: out.deletingLastPathComponent(), withIntermediateDirectories: true)
    let base = ["export", "--cpu", "--model", made.model, "--adapter", made.output.path, "--output", out.path]
    let r = try CLITests.run(base + ["--ollama"])
    XCTAssertEqual(r.status, 0, r.stderr)
    XCTAssertTrue(r.stdout.contains("architecture llama, alpha 16.0, rank 8"), r.stdout)
    let bytes = try Data(contentsOf: out)
    XCTAssertEqual(String(decoding: bytes.prefix(4), as: UTF8.self), "GGUF")
    let modelfile = try String(contentsOf: out.deletingLastPathComponent().appendingPathComponent("Modelfile"),
                               encoding: .utf8)
    XCTAssertTrue(modelfile.hasPrefix("FROM \(made.model)"), modelfile)
    for line in ["ADAPTER ./adapter.gguf", "SYSTEM \"\"\"You are a helpful AI assistant named SmolLM, trained by Hugging Face\"\"\"",
                 "<|im_start|>assistant", "PARAMETER stop \"<|im_end|>\""] {
      XCTAssertTrue(modelfile.contains(line), "\(line) missing from\n\(modelfile)")
    }
    let cases: [([String], String)] = [
      (base, "exists; pass --overwrite"),
      (base + ["--overwrite", "--outtype", "q8_0"], "--outtype must be f32, f16 or bf16"),
      (base + ["--overwrite", "--format", "gguf", "--outtype", "q3_k"], "--outtype must be one of f32, f16, bf16, q8_0, q4_0, q4_k_m, q5_k_m, q6_k"),
      (base + ["--overwrite", "--format", "ggml"], "--format must be gguf-lora or gguf"),
      (["export", "--cpu", "--model", made.model, "--adapter", made.dir.path + "/nope", "--output", out.path, "--overwrite"],
       "--adapter: no such directory"),
    ]
    for (args, message) in cases {
      let e = try CLITests.run(args)
      XCTAssertNotEqual(e.status, 0, "\(args)")
      XCTAssertTrue(e.stderr.contains(message), "\(args): \(e.stderr)")
      XCTAssertFalse(e.stderr.contains("Fatal error"), e.stderr)
    }
    XCTAssertEqual(try Data(contentsOf: out), bytes, "a refused export leaves the file as it was")
  }

  func test_exportHuggingFaceDirectory_q4KM_loadsAndGenerates() throws {
    let dir = try SharedTemporaryDirectories.make(
      FileManager.default.temporaryDirectory.appendingPathComponent("vkf-export-hf-\(UUID())"))
    let model = try QuantizationCacheTests.tinyLlama(in: dir)
    let out = dir.appendingPathComponent("tiny.q4_k_m.gguf")
    let r = try CLITests.run(["export", "--cpu", "--format", "gguf", "--outtype", "q4_k_m", "--model", model.path,
                              "--output", out.path, "--ollama"])
    XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
    XCTAssertTrue(r.stdout.contains("q4_k_m"), r.stdout)
    let g = try CLITests.run(["generate", "--cpu", "--model", out.path, "--prompt", "Hello", "--max-new-tokens", "3"])
    XCTAssertEqual(g.status, 0, g.stdout + g.stderr)
    let modelfile = try String(contentsOf: dir.appendingPathComponent("Modelfile"), encoding: .utf8)
    XCTAssertTrue(modelfile.hasPrefix("FROM ./tiny.q4_k_m.gguf") && modelfile.contains("<|im_start|>assistant"), modelfile)
    // A tokenizer the exporter cannot write is refused by name before anything is written.
    let tok = model.appendingPathComponent("tokenizer.json")
    var json = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: tok)) as? [String: Any])
    json["decoder"] = ["type": "Metaspace", "replacement": "\u{2581}"]
    try JSONSerialization.data(withJSONObject: json).write(to: tok)
    let bad = dir.appendingPathComponent("bad.gguf")
    let e = try CLITests.run(["export", "--cpu", "--format", "gguf", "--model", model.path, "--output", bad.path])
    XCTAssertNotEqual(e.status, 0)
    XCTAssertTrue(e.stderr.contains("tokenizer.json") && e.stderr.contains("byte-level BPE"), e.stderr)
    XCTAssertFalse(FileManager.default.fileExists(atPath: bad.path))
  }
}
