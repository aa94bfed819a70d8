import Foundation
import XCTest

/// Bad input through the built CLI, one table per class of fault: every case must exit
/// non-zero without a trap, print exactly one `Error:` line naming the file, key or record
/// (the fragments), and leave the output directory — which holds a finished earlier run that
/// `--overwrite` would replace — byte for byte as it was.
///
/// The model is a tiny HF directory (the PEFT interop base: 2 layers, hidden 32, vocab 61, with
/// a one-character BPE tokenizer), so each case runs in well under a second; a baseline run of
/// the same command must succeed, so every refusal below is the fault's doing.
final class BadInputTableTests: XCTestCase {
  private var dir: URL!
  private var output: URL!

  /// One bad input: what to break (in a fresh copy of the model directory and data), the
  /// flags to add, and what the error line must contain.
  private struct Case {
    var name: String
    var flags: [String] = []
    var fragments: [String]
    var breakInputs: (Inputs) throws -> Void = { _ in }
  }

  /// A case's own model directory and data file.
  private struct Inputs {
    var model: URL
    var data: URL
    var file: (String) -> URL
    func write(_ text: String, to name: String) throws { try Data(text.utf8).write(to: file(name)) }
  }

  override func setUpWithError() throws {
    dir = FileManager.default.temporaryDirectory.appendingPathComponent("vkf-bad-input-\(UUID())")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    output = dir.appendingPathComponent("out")
  }

  override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

  // MARK: - The tables

  func test_badFlags() throws {
    try check([
      Case(name: "rank 0", flags: ["--lora-r", "0"], fragments: ["lora_r = 0 is invalid"]),
      Case(name: "not a number", flags: ["--learning-rate", "fast"], fragments: ["fast", "--learning-rate"]),
      Case(name: "max_steps 0", flags: ["--max-steps", "0"], fragments: ["max_steps = 0 is invalid", "-1"]),
      Case(name: "fractional count", flags: ["--eval-steps", "2.5"], fragments: ["eval_steps = 2.5 is invalid"]),
      Case(name: "unknown flag", flags: ["--lora-rank", "8"], fragments: ["--lora-rank"]),
      Case(name: "unknown module", flags: ["--lora-target-modules", "qproj"], fragments: ["qproj", "q_proj"]),
      Case(name: "recipe key", flags: ["--config", "RECIPE"], fragments: ["recipe.yaml", "lora_rr", "lora_r"]) {
        try $0.write("lora_rr: 8\n", to: "recipe.yaml")
      },
      Case(name: "recipe syntax", flags: ["--config", "RECIPE"], fragments: ["recipe.yaml:3:1", "not valid YAML"]) {
        try $0.write("lora_r: 8\nlora_alpha: [16\n", to: "recipe.yaml")
      },
    ])
  }

  func test_malformedFiles() throws {
    try check([
      Case(name: "data line", fragments: ["data.jsonl:3", "malformed JSON line"]) {
        try $0.write("{\"text\": \"ABC\"}\n{\"text\": \"DEF\"}\n{\"text\": \n", to: "data.jsonl")
      },
      Case(name: "data is a directory", fragments: ["is a directory"]) {
        try FileManager.default.removeItem(at: $0.data)
        try FileManager.default.createDirectory(at: $0.data, withIntermediateDirectories: false)
      },
      Case(name: "config.json", fragments: ["config.json"]) { try $0.write("{\"hidden_size\": ", to: "model/config.json") },
      Case(name: "tokenizer.json", fragments: ["tokenizer.json"]) { try $0.write("{\"model\": 3}", to: "model/tokenizer.json") },
      Case(name: "tokenizer_config.json", fragments: ["tokenizer_config.json", "not valid JSON"]) {
        try $0.write("{\"eos_token\": \"Z\"", to: "model/tokenizer_config.json")
      },
      Case(name: "truncated safetensors", fragments: ["model.safetensors"]) { inputs in
        let url = inputs.file("model/model.safetensors")
        let bytes = try Data(contentsOf: url)
        try bytes.prefix(bytes.count / 2).write(to: url)
      },
      // Fails mid-run (after --overwrite moved the earlier run aside), which must put it back.
      Case(name: "diverging run", flags: ["--learning-rate", "1e38", "--max-steps", "3"], fragments: ["training stopped at step 2", "loss is NaN", "no checkpoint was saved yet"]),
      Case(name: "NaN weight", fragments: ["lm_head.weight", "holds nan at element 0"]) { try Self.poisonFirstTensor($0.file("model/model.safetensors")) },
    ])
  }

  func test_filesThatDisagree() throws {
    try check([
      Case(name: "added token beyond the vocabulary", fragments: ["tokenizer.json", "token id 70", "vocabulary of 61"]) {
        try Self.editJSON($0.file("model/tokenizer.json")) { tokenizer in
          tokenizer["added_tokens"] = [["id": 70, "content": "<|end|>", "special": true, "single_word": false,
                                        "lstrip": false, "rstrip": false, "normalized": false]]
        }
      },
      // vocab_size 50 with 61 embedding rows (the tokenizer cut to 40 tokens so it fits both).
      Case(name: "config vocabulary vs weights", fragments: ["model.embed_tokens.weight", "[61, 32]", "[50, 32]"]) { inputs in
        try Self.editJSON(inputs.file("model/config.json")) { $0["vocab_size"] = 50 }
        try Self.editJSON(inputs.file("model/tokenizer.json")) { tokenizer in
          tokenizer["model"] = ["type": "BPE", "merges": [],
                                "vocab": Dictionary(uniqueKeysWithValues: (0..<40).map { (String(UnicodeScalar(UInt8(48 + $0))), $0) })]
        }
        try inputs.write(#"{"eos_token": "A"}"#, to: "model/tokenizer_config.json")
      },
      Case(name: "SFT records for DPO", flags: ["--objective", "dpo"], fragments: ["data.jsonl", "SFT record"]),
      Case(name: "pair without rejected", flags: ["--objective", "dpo"], fragments: ["data.jsonl", "\"rejected\""]) {
        try $0.write("{\"prompt\": \"AB\", \"chosen\": \"CD\"}\n", to: "data.jsonl")
      },
    ])
  }

  func test_oversizedAndHostileFiles() throws {
    try check([
      Case(name: "1 TiB data file", fragments: ["data.jsonl", "1024.0 GiB", "split it"]) { try Self.sparse($0.data, bytes: 1 << 40) },
      Case(name: "2 GiB tokenizer.json", fragments: ["tokenizer.json", "1.0 GiB a tokenizer.json may be"]) {
        try Self.sparse($0.file("model/tokenizer.json"), bytes: 2 << 30)
      },
      Case(name: "pickle weights", fragments: ["pytorch_model.bin", "pickle", "safetensors"]) { inputs in
        try FileManager.default.removeItem(at: inputs.file("model/model.safetensors"))
        try inputs.write("not really a pickle", to: "model/pytorch_model.bin")
      },
      Case(name: "shard outside the directory", fragments: ["model.safetensors.index.json", "weight_map entry"]) { inputs in
        try FileManager.default.moveItem(at: inputs.file("model/model.safetensors"), to: inputs.file("model.safetensors"))
        try inputs.write(#"{"weight_map": {"model.embed_tokens.weight": "../model.safetensors"}}"#,
                         to: "model/model.safetensors.index.json")
      },
      Case(name: "endless chat template", flags: ["--dataset-format", "messages"], fragments: ["chat template"]) { inputs in
        try inputs.write(#"{"eos_token": "Z", "chat_template": "{% for i in range(1000000000) %}A{% endfor %}"}"#,
                         to: "model/tokenizer_config.json")
        try inputs.write(#"{"messages": [{"role": "user", "content": "AB"}, {"role": "assistant", "content": "CD"}]}"# + "\n",
                         to: "data.jsonl")
      },
    ])
  }

  /// eval, score, merge and generate read the same files: the same faults end the same way,
  /// and what they would write (merge's directory, eval's --json report) stays as it was.
  func test_otherCommands() throws {
    let baseline = try makeInputs("baseline")
    XCTAssertEqual(try CLITests.run(command(baseline, [])).status, 0, "the baseline must train")
    let adapter = output.path, merged = dir.appendingPathComponent("merged"), report = dir.appendingPathComponent("report.json")
    XCTAssertEqual(try CLITests.run(["merge", "--cpu", "--model", baseline.model.path, "--adapter", adapter,
                                     "--output", merged.path]).status, 0, "the baseline must merge")
    try Data("{\"earlier\": true}".utf8).write(to: report)
    // (command line with MODEL / DATA / ADAPTER placeholders, break, fragments)
    typealias Row = (name: String, args: [String], fragments: [String], breakInputs: (Inputs) throws -> Void)
    let rows: [Row] = [
      ("eval: config.json", ["eval", "--model", "MODEL", "--data", "DATA", "--json", report.path], ["config.json"],
       { try $0.write("[]", to: "model/config.json") }),
      ("eval: 1 TiB data", ["eval", "--model", "MODEL", "--data", "DATA", "--json", report.path], ["data.jsonl", "split it"],
       { try Self.sparse($0.data, bytes: 1 << 40) }),
      ("eval: adapter_config.json", ["eval", "--model", "MODEL", "--adapter", "ADAPTER", "--data", "DATA", "--json", report.path],
       ["adapter_config.json"], { try $0.write("{", to: "adapter/adapter_config.json") }),
      ("eval: adapter for another model", ["eval", "--model", "MODEL", "--adapter", "ADAPTER", "--data", "DATA"],
       ["adapter_model.safetensors", "has shape [8, 32] but this model needs [4, 32]"], { try Self.editJSON($0.file("adapter/adapter_config.json")) { $0["r"] = 4 } }),
      ("score: SFT records", ["score", "--model", "MODEL", "--data", "DATA"], ["data.jsonl", "SFT record"], { _ in }),
      ("merge: broken adapter", ["merge", "--model", "MODEL", "--adapter", "ADAPTER", "--output", merged.path, "--overwrite"],
       ["adapter_model.safetensors"], { inputs in
         let url = inputs.file("adapter/adapter_model.safetensors")
         try Data(try Data(contentsOf: url).prefix(100)).write(to: url)
       }),
      ("generate: pickle", ["generate", "--model", "MODEL", "--prompt", "AB"], ["pickle"], { inputs in
        try FileManager.default.removeItem(at: inputs.file("model/model.safetensors"))
        try inputs.write("x", to: "model/pytorch_model.bin")
      }),
    ]
    let guarded = try (Self.snapshot(merged), Data(contentsOf: report))
    for (i, row) in rows.enumerated() {
      let inputs = try makeInputs("other-\(i)")
      try FileManager.default.copyItem(at: output, to: inputs.file("adapter"))
      try row.breakInputs(inputs)
      let args = row.args.map { ["MODEL": inputs.model.path, "DATA": inputs.data.path, "ADAPTER": inputs.file("adapter").path][$0] ?? $0 }
      let r = try CLITests.run([args[0], "--cpu"] + args.dropFirst())
      let errors = r.stderr.split(separator: "\n").filter { $0.hasPrefix("Error:") }
      print("\(row.name) → \(errors.first ?? "no Error line")")
      XCTAssertNotEqual(r.status, 0, "\(row.name) was accepted: \(r.stdout)")
      XCTAssertFalse(r.stderr.contains("Fatal error") || r.status > 128, "\(row.name) trapped: \(r.stderr)")
      XCTAssertEqual(errors.count, 1, "\(row.name): \(r.stderr)")
      for f in row.fragments { XCTAssertTrue(errors.first?.contains(f) == true, "\(row.name): \"\(f)\" missing from \(errors)") }
      XCTAssertEqual(try Self.snapshot(merged), guarded.0, "\(row.name) changed the merged model")
      XCTAssertEqual(try Data(contentsOf: report), guarded.1, "\(row.name) changed the --json report")
    }
  }

  // MARK: - Running a table

  /// Runs every case against a fresh copy of the inputs, with `--overwrite` into `output`,
  /// which holds the baseline's finished run.
  private func check(_ cases: [Case], file: StaticString = #filePath, line: UInt = #line) throws {
    let baseline = try makeInputs("baseline")
    let ok = try CLITests.run(command(baseline, []))
    XCTAssertEqual(ok.status, 0, "the baseline must train: \(ok.stderr)", file: file, line: line)
    let before = try Self.snapshot(output)
    XCTAssertTrue(before.keys.contains("adapter_model.safetensors"), "\(before.keys.sorted())", file: file, line: line)
    for (i, c) in cases.enumerated() {
      let inputs = try makeInputs("case-\(i)")
      try c.breakInputs(inputs)
      let flags = c.flags.map { $0 == "RECIPE" ? inputs.file("recipe.yaml").path : $0 }
      let r = try CLITests.run(command(inputs, flags + ["--overwrite"]))
      let context = "\(c.name): \(r.stderr)"
      XCTAssertNotEqual(r.status, 0, "\(c.name) was accepted", file: file, line: line)
      XCTAssertFalse(r.stderr.contains("Fatal error") || r.status > 128, "trapped: \(context)", file: file, line: line)
      let errors = r.stderr.split(separator: "\n").filter { $0.hasPrefix("Error:") }
      print("\(c.name) → \(errors.first ?? "no Error line")")
      XCTAssertEqual(errors.count, 1, "one Error line: \(context)", file: file, line: line)
      for f in c.fragments {
        XCTAssertTrue(errors.first?.contains(f) == true, "\(c.name): \"\(f)\" missing from \(errors)", file: file, line: line)
      }
      XCTAssertEqual(try Self.snapshot(output), before, "\(c.name) changed the output directory", file: file, line: line)
    }
  }

  private func command(_ inputs: Inputs, _ flags: [String]) -> [String] {
    ["train", "--cpu", "--model", inputs.model.path, "--data", inputs.data.path, "--output", output.path,
     "--max-steps", "1", "--batch-size", "2", "--max-seq-length", "16"] + flags
  }

  /// A copy of the tiny model (with a tokenizer whose 61 tokens are the characters "0"…"l"
  /// and EOS "Z") and 8 text records under `dir/name`.
  private func makeInputs(_ name: String) throws -> Inputs {
    let root = dir.appendingPathComponent(name), model = root.appendingPathComponent("model")
    let fm = FileManager.default
    try fm.createDirectory(at: model, withIntermediateDirectories: true)
    let base = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .appendingPathComponent("../VKFPEFTTests/Fixtures/peftio/base").standardized
    for f in ["config.json", "model.safetensors"] {
      try fm.copyItem(at: base.appendingPathComponent(f), to: model.appendingPathComponent(f))
    }
    let vocab = Dictionary(uniqueKeysWithValues: (0..<61).map { (String(UnicodeScalar(UInt8(48 + $0))), $0) })
    let tokenizer: [String: Any] = [
      "version": "1.0", "normalizer": NSNull(), "post_processor": NSNull(), "added_tokens": [],
      "pre_tokenizer": ["type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true],
      "decoder": ["type": "ByteLevel"], "model": ["type": "BPE", "vocab": vocab, "merges": []]]
    try JSONSerialization.data(withJSONObject: tokenizer).write(to: model.appendingPathComponent("tokenizer.json"))
    try Data(#"{"eos_token": "Z"}"#.utf8).write(to: model.appendingPathComponent("tokenizer_config.json"))
    let data = root.appendingPathComponent("data.jsonl")
    let records = (0..<8).map { "{\"text\": \"\(String("ABCDEFGH0123456789".dropFirst($0)))XYZ\"}\n" }
    try Data(records.joined().utf8).write(to: data)
    return Inputs(model: model, data: data, file: { root.appendingPathComponent($0) })
  }

  // MARK: - Helpers

  /// Every file under `url` (relative path → bytes), directories as empty entries.
  static func snapshot(_ url: URL) throws -> [String: Data] {
    var out: [String: Data] = [:]
    let fm = FileManager.default
    guard let walker = fm.enumerator(atPath: url.path) else { return out }
    for case let relative as String in walker {
      let path = url.appendingPathComponent(relative).path
      var isDirectory: ObjCBool = false
      _ = fm.fileExists(atPath: path, isDirectory: &isDirectory)
      out[relative] = isDirectory.boolValue ? Data() : try Data(contentsOf: URL(fileURLWithPath: path))
    }
    return out
  }

  /// Rewrites a JSON object file through `edit`.
  static func editJSON(_ url: URL, _ edit: (inout [String: Any]) -> Void) throws {
    var object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
    edit(&object)
    try JSONSerialization.data(withJSONObject: object).write(to: url)
  }

  /// A sparse file of `bytes` (nothing is really written).
  static func sparse(_ url: URL, bytes: UInt64) throws {
    try? FileManager.default.removeItem(at: url)
    FileManager.default.createFile(atPath: url.path, contents: nil)
    let handle = try FileHandle(forWritingTo: url)
    try handle.truncate(atOffset: bytes)
    try handle.close()
  }

  /// Writes a NaN into the first element of the first F32 tensor of a safetensors file.
  static func poisonFirstTensor(_ url: URL) throws {
    var bytes = try Data(contentsOf: url)
    let headerLength = bytes.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
    let header = try XCTUnwrap(JSONSerialization.jsonObject(with: bytes.subdata(in: 8..<(8 + headerLength))) as? [String: Any])
    let entry = try XCTUnwrap(header.filter { $0.key != "__metadata__" }.sorted { $0.key < $1.key }
      .compactMap { $0.value as? [String: Any] }.first { $0["dtype"] as? String == "F32" })
    let start = 8 + headerLength + (try XCTUnwrap((entry["data_offsets"] as? [Int])?.first))
    bytes.replaceSubrange(start..<(start + 4), with: [0x00, 0x00, 0xC0, 0x7F])
    try bytes.write(to: url)
  }
}
