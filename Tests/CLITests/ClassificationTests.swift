import Foundation
import XCTest

/// `train --objective classification` end to end on a tiny random BERT (hidden 64, 2 layers,
/// the 1 200-word WordPiece tokenizer of the tokenizer goldens): string labels, an eval file,
/// the BertForSequenceClassification directory it writes, training again from that directory,
/// and the refusals.
final class ClassificationTests: XCTestCase {
  struct Made { var dir: URL; var model: URL; var train: URL; var eval: URL; var output: URL; var run: CLITests.Run }

  nonisolated(unsafe) private static var made: Result<Made, Error>?
  private static let lock = NSLock()

  static let sentences = [
    ("a good and happy film", "pos"), ("the best movie this year", "pos"), ("I loved it", "pos"),
    ("warm, funny and wise", "pos"), ("a great cast", "pos"), ("smart and moving", "pos"),
    ("a bad and boring film", "neg"), ("the worst movie this year", "neg"), ("I hated it", "neg"),
    ("cold, dull and silly", "neg"), ("a weak cast", "neg"), ("dumb and tedious", "neg"),
  ]

  /// The tiny model's directory: config.json, random weights of a bare BertModel (no pooler,
  /// no classifier: both are initialised by the run), tokenizer.json.
  static func tinyModel(in dir: URL) throws -> URL {
    let model = dir.appendingPathComponent("tiny-bert")
    try FileManager.default.createDirectory(at: model, withIntermediateDirectories: true)
    let tokenizer = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .appendingPathComponent("../VKFTokenizerTests/Fixtures/tokenizers/bert.json").standardized
    try FileManager.default.copyItem(at: tokenizer, to: model.appendingPathComponent("tokenizer.json"))
    let (v, h, f, p, layers) = (1200, 64, 96, 64, 2)
    let config: [String: Any] = [
      "model_type": "bert", "architectures": ["BertModel"], "vocab_size": v, "hidden_size": h,
      "num_hidden_layers": layers, "num_attention_heads": 2, "intermediate_size": f, "max_position_embeddings": p,
      "type_vocab_size": 2, "hidden_act": "gelu", "layer_norm_eps": 1e-12, "pad_token_id": 0,
    ]
    try JSONSerialization.data(withJSONObject: config).write(to: model.appendingPathComponent("config.json"))
    var shapes: [(String, [Int])] = [("embeddings.word_embeddings.weight", [v, h]),
                                     ("embeddings.position_embeddings.weight", [p, h]),
                                     ("embeddings.token_type_embeddings.weight", [2, h]),
                                     ("embeddings.LayerNorm.weight", [h]), ("embeddings.LayerNorm.bias", [h])]
    for l in 0..<layers {
      let pre = "encoder.layer.\(l)."
      for (name, out, inF) in [("attention.self.query", h, h), ("attention.self.key", h, h), ("attention.self.value", h, h),
                               ("attention.output.dense", h, h), ("intermediate.dense", f, h), ("output.dense", h, f)] {
        shapes += [(pre + name + ".weight", [out, inF]), (pre + name + ".bias", [out])]
      }
      for norm in ["attention.output.LayerNorm", "output.LayerNorm"] {
        shapes += [(pre + norm + ".weight", [h]), (pre + norm + ".bias", [h])]
      }
    }
    var seed: UInt64 = 7
    try writeSafetensors(shapes.map { name, shape in
      let n = shape.reduce(1, *)
      let values = (0..<n).map { _ -> Float in
        seed = seed &* 6364136223846793005 &+ 1442695040888963407
        let u = Float(seed >> 40) / Float(1 << 24)
        return name.contains("LayerNorm.weight") ? 1 : name.contains("LayerNorm.bias") ? 0 : (u - 0.5) * 0.1
      }
      return (name, shape, values)
    }, to: model.appendingPathComponent("model.safetensors"))
    return model
  }

  /// A safetensors file of F32 tensors.
  static func writeSafetensors(_ tensors: [(String, [Int], [Float])], to url: URL) throws {
    var header: [String: Any] = [:], body = Data(), offset = 0
    for (name, shape, values) in tensors {
      header[name] = ["dtype": "F32", "shape": shape, "data_offsets": [offset, offset + 4 * values.count]]
      values.withUnsafeBytes { body.append(contentsOf: $0) }
      offset += 4 * values.count
    }
    var json = try JSONSerialization.data(withJSONObject: header)
    while json.count % 8 != 0 { json.append(0x20) }
    var file = Data()
    withUnsafeBytes(of: UInt64(json.count).littleEndian) { file.append(contentsOf: $0) }
    file.append(json); file.append(body)
    try file.write(to: url)
  }

  static func jsonl(_ rows: [(String, String)], to url: URL) throws {
    let lines = try rows.map { text, label in
      String(decoding: try JSONSerialization.data(withJSONObject: ["text": text, "label": label]), as: UTF8.self)
    }
    try Data(lines.joined(separator: "\n").utf8).write(to: url)
  }

  static func common(model: URL, train: URL) -> [String] {
    ["train", "--cpu", "--objective", "classification", "--method", "full", "--model", model.path, "--data", train.path,
     "--batch-size", "4", "--learning-rate", "1e-3", "--max-seq-length", "32"]
  }

  /// Trains once (3 steps, evaluated at the start and the end) and shares the result.
  static func shared() throws -> Made {
    lock.lock(); defer { lock.unlock() }
    if let made { return try made.get() }
    let result = Result { () throws -> Made in
      let dir = try SharedTemporaryDirectories.make(
        FileManager.default.temporaryDirectory.appendingPathComponent("vkf-cls-\(UUID())"))
      let model = try tinyModel(in: dir)
      let train = dir.appendingPathComponent("train.jsonl"), eval = dir.appendingPathComponent("eval.jsonl")
      try jsonl(sentences, to: train)
      try jsonl([("a good movie", "pos"), ("a bad movie", "neg"), ("happy and wise", "pos"), ("dull", "neg")], to: eval)
      let output = dir.appendingPathComponent("out")
      let run = try CLITests.run(common(model: model, train: train)
        + ["--output", output.path, "--max-steps", "3", "--eval-data", eval.path])
      return Made(dir: dir, model: model, train: train, eval: eval, output: output, run: run)
    }
    made = result
    return try result.get()
  }

  func test_train_writesASequenceClassificationDirectory() throws {
    let m = try Self.shared()
    XCTAssertEqual(m.run.status, 0, m.run.stdout + m.run.stderr)
    XCTAssertTrue(m.run.stdout.contains("labels: 0 neg, 1 pos"), m.run.stdout)
    XCTAssertTrue(m.run.stdout.contains("initialised (not in the checkpoint): bert.pooler.dense.weight"), m.run.stdout)
    XCTAssertTrue(m.run.stdout.contains("dropout: off"), m.run.stdout)
    let evalLines = m.run.stdout.split(separator: "\n").filter { $0.hasPrefix("eval step") }
    XCTAssertEqual(evalLines.count, 2, m.run.stdout)
    XCTAssertTrue(evalLines.allSatisfy { $0.contains("accuracy") && $0.contains("f1") && !$0.contains("ppl") },
                  "\(evalLines)")
    let config = try XCTUnwrap(JSONSerialization.jsonObject(
      with: Data(contentsOf: m.output.appendingPathComponent("config.json"))) as? [String: Any])
    XCTAssertEqual(config["architectures"] as? [String], ["BertForSequenceClassification"])
    XCTAssertEqual(config["id2label"] as? [String: String], ["0": "neg", "1": "pos"])
    XCTAssertEqual(config["label2id"] as? [String: Int], ["neg": 0, "pos": 1])
    XCTAssertEqual(config["problem_type"] as? String, "single_label_classification")
    XCTAssertEqual(config["hidden_size"] as? Int, 64)
    let weights = try Data(contentsOf: m.output.appendingPathComponent("model.safetensors"))
    let headerLength = weights.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
    let header = try XCTUnwrap(JSONSerialization.jsonObject(with: weights.subdata(in: 8..<(8 + headerLength))) as? [String: Any])
    XCTAssertEqual((header["classifier.weight"] as? [String: Any])?["shape"] as? [Int], [2, 64])
    XCTAssertNotNil(header["bert.pooler.dense.weight"])
    XCTAssertNotNil(header["bert.encoder.layer.1.output.LayerNorm.bias"])
    XCTAssertEqual(header.keys.filter { $0 != "__metadata__" }.count, 5 + 2 * 16 + 4)
    XCTAssertTrue(FileManager.default.fileExists(atPath: m.output.appendingPathComponent("tokenizer.json").path))
    let metrics = try String(contentsOf: m.output.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
    XCTAssertTrue(metrics.contains("\"eval_accuracy\""), metrics)
  }

  /// `eval` on the written classifier reproduces the run's last evaluation (the same model and
  /// file): loss, accuracy and F1.
  func test_eval_reproducesTheRunsLastEvaluation() throws {
    let m = try Self.shared()
    try XCTSkipIf(m.run.status != 0, "the shared run failed")
    let json = m.dir.appendingPathComponent("eval.json")
    let r = try CLITests.run(["eval", "--cpu", "--model", m.output.path, "--data", m.eval.path, "--json", json.path])
    XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
    let report = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: json)) as? [String: Any])
    let metrics = try String(contentsOf: m.output.appendingPathComponent("metrics.jsonl"), encoding: .utf8)
    let last = try XCTUnwrap(metrics.split(separator: "\n").compactMap {
      try? JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any]
    }.last { $0["eval_loss"] != nil })
    XCTAssertEqual(try XCTUnwrap(report["loss"] as? Double), try XCTUnwrap(last["eval_loss"] as? Double), accuracy: 1e-6)
    XCTAssertEqual(report["accuracy"] as? Double, last["eval_accuracy"] as? Double)
    XCTAssertEqual(report["f1"] as? Double, last["eval_f1"] as? Double)
    XCTAssertEqual(report["tokens"] as? Int, 4)
    XCTAssertTrue(r.stdout.contains("| accuracy "), r.stdout)
  }

  /// Its own output trains again: "bert."-prefixed names, the classifier kept, the label
  /// names read from id2label (the data's strings map onto them).
  func test_train_fromItsOwnOutput() throws {
    let m = try Self.shared()
    try XCTSkipIf(m.run.status != 0, "the shared run failed")
    let again = m.dir.appendingPathComponent("again")
    let r = try CLITests.run(Self.common(model: m.output, train: m.train) + ["--output", again.path, "--max-steps", "1"])
    XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
    XCTAssertFalse(r.stdout.contains("initialised"), r.stdout)
    XCTAssertTrue(r.stdout.contains("labels: 0 neg, 1 pos"), r.stdout)
  }

  /// Masked-LM training on the same tiny model writes a BertForMaskedLM directory: the head
  /// under cls.predictions (no decoder weight: tied), no pooler or classifier.
  func test_mlm_writesAMaskedLMDirectory() throws {
    let m = try Self.shared()
    let out = m.dir.appendingPathComponent("mlm")
    var args = Self.common(model: m.model, train: m.train) + ["--output", out.path, "--max-steps", "2",
                                                               "--eval-data", m.eval.path, "--mlm-probability", "0.3"]
    args[args.firstIndex(of: "classification") ?? 0] = "mlm"
    let r = try CLITests.run(args)
    XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
    XCTAssertTrue(r.stdout.contains("masked tokens (mlm_probability 0.3"), r.stdout)
    XCTAssertTrue(r.stdout.contains("initialised (not in the checkpoint): cls.predictions.transform.dense.weight"), r.stdout)
    XCTAssertEqual(r.stdout.split(separator: "\n").filter { $0.hasPrefix("eval step") && $0.contains("ppl") }.count, 2,
                   r.stdout)
    let config = try XCTUnwrap(JSONSerialization.jsonObject(
      with: Data(contentsOf: out.appendingPathComponent("config.json"))) as? [String: Any])
    XCTAssertEqual(config["architectures"] as? [String], ["BertForMaskedLM"])
    XCTAssertNil(config["id2label"])
    let weights = try Data(contentsOf: out.appendingPathComponent("model.safetensors"))
    let headerLength = weights.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
    let header = try XCTUnwrap(JSONSerialization.jsonObject(with: weights.subdata(in: 8..<(8 + headerLength))) as? [String: Any])
    XCTAssertEqual((header["cls.predictions.bias"] as? [String: Any])?["shape"] as? [Int], [1200])
    XCTAssertNotNil(header["cls.predictions.transform.LayerNorm.weight"])
    XCTAssertNil(header["cls.predictions.decoder.weight"])
    XCTAssertNil(header["bert.pooler.dense.weight"])
    XCTAssertEqual(header.keys.filter { $0 != "__metadata__" }.count, 5 + 2 * 16 + 5)
  }

  /// LoRA on its own output (which has a pooler): a PEFT SEQ_CLS adapter with PEFT's default
  /// bert targets (query, value) and the classifier in modules_to_save.
  func test_lora_writesASequenceClassificationAdapter() throws {
    let m = try Self.shared()
    try XCTSkipIf(m.run.status != 0, "the shared run failed")
    let out = m.dir.appendingPathComponent("lora")
    var args = Self.common(model: m.output, train: m.train) + ["--output", out.path, "--max-steps", "2", "--lora-r", "4"]
    args[args.firstIndex(of: "full") ?? 0] = "lora"
    let r = try CLITests.run(args)
    XCTAssertEqual(r.status, 0, r.stdout + r.stderr)
    XCTAssertTrue(r.stdout.contains("4 adapters on query,value and the classifier"), r.stdout)
    let config = try XCTUnwrap(JSONSerialization.jsonObject(
      with: Data(contentsOf: out.appendingPathComponent("adapter_config.json"))) as? [String: Any])
    XCTAssertEqual(config["task_type"] as? String, "SEQ_CLS")
    XCTAssertEqual(config["target_modules"] as? [String], ["query", "value"])
    XCTAssertEqual(config["modules_to_save"] as? [String], ["classifier", "score"])
    let weights = try Data(contentsOf: out.appendingPathComponent("adapter_model.safetensors"))
    let headerLength = weights.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
    let header = try XCTUnwrap(JSONSerialization.jsonObject(with: weights.subdata(in: 8..<(8 + headerLength))) as? [String: Any])
    let keys = Set(header.keys.filter { $0 != "__metadata__" })
    XCTAssertEqual(keys.count, 2 * 2 * 2 + 2, "\(keys.sorted())")
    XCTAssertTrue(keys.contains("base_model.model.bert.encoder.layer.1.attention.self.value.lora_B.weight"))
    XCTAssertEqual((header["base_model.model.classifier.weight"] as? [String: Any])?["shape"] as? [Int], [2, 64])
    XCTAssertNotNil(header["base_model.model.classifier.bias"])
  }

  /// `--resume` from a mid-run checkpoint ends with the same model bytes and losses as the
  /// straight run (full fine-tuning: every encoder tensor, the new pooler and classifier, AdamW).
  func test_resume_fromCheckpoint_equalsStraightRun() throws {
    let m = try Self.shared()
    let fm = FileManager.default
    let straight = m.dir.appendingPathComponent("straight"), resumed = m.dir.appendingPathComponent("resumed")
    let flags = Self.common(model: m.model, train: m.train) + ["--max-steps", "4", "--save-steps", "2",
                                                               "--lr-scheduler", "constant"]
    let r1 = try CLITests.run(flags + ["--output", straight.path])
    XCTAssertEqual(r1.status, 0, r1.stdout + r1.stderr)
    try fm.copyItem(at: straight, to: resumed)
    for gone in ["checkpoint-4", "model.safetensors", "config.json"] {
      try fm.removeItem(at: resumed.appendingPathComponent(gone))
    }
    let r2 = try CLITests.run(flags + ["--output", resumed.path, "--resume"])
    XCTAssertEqual(r2.status, 0, r2.stdout + r2.stderr)
    XCTAssertTrue(r2.stdout.contains("resumed from checkpoint-2 at step 2/4"), r2.stdout)
    let a = try Data(contentsOf: straight.appendingPathComponent("model.safetensors"))
    let b = try Data(contentsOf: resumed.appendingPathComponent("model.safetensors"))
    XCTAssertEqual(a, b, "the resumed model differs from the straight run's")
    func losses(_ dir: URL) throws -> [Double] {
      try String(contentsOf: dir.appendingPathComponent("metrics.jsonl"), encoding: .utf8).split(separator: "\n")
        .compactMap { try JSONSerialization.jsonObject(with: Data($0.utf8)) as? [String: Any] }
        .compactMap { $0["loss"] as? Double }
    }
    XCTAssertEqual(try losses(resumed), try losses(straight))
  }

  func test_refusals_nameWhatToChange() throws {
    let m = try Self.shared()
    let out = m.dir.appendingPathComponent("refused")
    let sft = try CLITests.run(["train", "--cpu", "--model", m.model.path, "--data", m.train.path, "--output", out.path])
    XCTAssertNotEqual(sft.status, 0)
    XCTAssertTrue(sft.stderr.contains("--objective classification"), sft.stderr)
    var args = Self.common(model: m.model, train: m.train) + ["--output", out.path]
    args[args.firstIndex(of: "full") ?? 0] = "qlora"
    let qlora = try CLITests.run(args)
    XCTAssertNotEqual(qlora.status, 0)
    XCTAssertTrue(qlora.stderr.contains("use --method lora or full"), qlora.stderr)
    // A bare encoder without a pooler: a PEFT adapter would meet a random pooler at load.
    args[args.firstIndex(of: "qlora") ?? 0] = "lora"
    let lora = try CLITests.run(args)
    XCTAssertNotEqual(lora.status, 0)
    XCTAssertTrue(lora.stderr.contains("has no pooler"), lora.stderr)
    let bad = m.dir.appendingPathComponent("nolabel.jsonl")
    try Data("{\"text\": \"fine\", \"label\": \"pos\"}\n{\"text\": \"no label here\"}\n".utf8).write(to: bad)
    let missing = try CLITests.run(Self.common(model: m.model, train: bad) + ["--output", out.path])
    XCTAssertNotEqual(missing.status, 0)
    XCTAssertTrue(missing.stderr.contains("nolabel.jsonl: record 2: has no \"label\""), missing.stderr)
    XCTAssertFalse(FileManager.default.fileExists(atPath: out.path))
  }
}
