import Foundation
import XCTest

/// Tiny DPO and reward-model runs on the shared SmolLM2-135M (CPU, 2 steps, 64-token pairs, 6
/// training and 2 validation pairs of hh-rlhf), made once and shared by the tests below.
enum PreferenceRuns {
  static let maxLength = "64"
  static let maxPromptLength = "32"

  struct Made {
    var dir: URL
    var model: String
    var train: URL
    var validation: URL
    var dpo: URL
    var dpoRun: CLITests.Run
    var reward: URL
    var rewardRun: CLITests.Run
  }

  nonisolated(unsafe) private static var made: Result<Made, Error>?
  private static let lock = NSLock()

  /// Lines `range` of the shared hh-rlhf pairs, written to `url`.
  static func pairs(_ range: Range<Int>, to url: URL) throws {
    let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
      .appendingPathComponent("../../../shared/data/hh-rlhf/harmless_pairs.jsonl").standardized
    guard let data = FileManager.default.contents(atPath: path.path) else {
      throw XCTSkip("shared hh-rlhf pairs absent at \(path.path)")
    }
    let lines = String(decoding: data, as: UTF8.self).split(separator: "\n")
    try Data(lines[range].joined(separator: "\n").utf8).write(to: url)
  }

  /// The flags every preference run here shares.
  static func common(_ objective: String, model: String, data: URL) -> [String] {
    ["train", "--cpu", "--objective", objective, "--model", model, "--data", data.path, "--max-length", maxLength,
     "--max-prompt-length", maxPromptLength, "--batch-size", "2", "--lora-target-modules", "q_proj,v_proj",
     "--learning-rate", "1e-4"]
  }

  /// Trains both once (the first caller pays ~40 s in a debug build).
  static func shared() throws -> Made {
    lock.lock(); defer { lock.unlock() }
    if let made { return try made.get() }
    let result = Result { () throws -> Made in
      let model = try TrainedRun.modelDirectory()
      let dir = try SharedTemporaryDirectories.make(
        FileManager.default.temporaryDirectory.appendingPathComponent("vkf-pref-\(UUID())"))
      let train = dir.appendingPathComponent("train.jsonl"), validation = dir.appendingPathComponent("val.jsonl")
      try pairs(0..<6, to: train)
      try pairs(100..<102, to: validation)
      let dpo = dir.appendingPathComponent("dpo"), reward = dir.appendingPathComponent("reward")
      let dpoRun = try CLITests.run(common("dpo", model: model, data: train)
        + ["--output", dpo.path, "--max-steps", "2", "--eval-data", validation.path])
      let rewardRun = try CLITests.run(common("reward", model: model, data: train)
        + ["--output", reward.path, "--max-steps", "2", "--eval-data", validation.path])
      return Made(dir: dir, model: model, train: train, validation: validation, dpo: dpo, dpoRun: dpoRun,
                  reward: reward, rewardRun: rewardRun)
    }
    made = result
    return try result.get()
  }

  /// adapter_config.json (or config.json) of `dir` as an object.
  static func json(_ url: URL) throws -> [String: Any] {
    try XCTUnwrap(JSONSerialization.jsonObject(with: Data(contentsOf: url)) as? [String: Any])
  }

  /// The safetensors header of `url`: tensor name → shape.
  static func tensorShapes(_ url: URL) throws -> [String: [Int]] {
    let data = try Data(contentsOf: url)
    let n = data.prefix(8).enumerated().reduce(0) { $0 | Int($1.element) << (8 * $1.offset) }
    let header = try XCTUnwrap(JSONSerialization.jsonObject(with: data.subdata(in: 8..<(8 + n))) as? [String: Any])
    var out: [String: [Int]] = [:]
    for (k, v) in header where k != "__metadata__" {
      out[k] = (v as? [String: Any])?["shape"] as? [Int]
    }
    return out
  }
}

/// `train --objective dpo|reward` and `score` end to end on the CPU.
final class PreferenceTrainTests: XCTestCase {
  /// With LoRA's B = 0 the policy is the reference, so Δ = 0 and the first sigmoid loss is
  /// log 2 — up to the decimal round trip of metrics.jsonl (17 digits), f32 → f64, and the
  /// fused LoRA forward's rounding (the base product accumulated with a zero low-rank term):
  /// exact with the SKYLAKEX kernels tools/test selects, a margin of 1.1e-6 with the
  /// Cooperlake kernels OpenBLAS picks here by itself.
  static let firstLossTolerance = 4e-6
  /// `score` re-runs the trainer's evaluation forward in different batches (same kernels, a
  /// different row count per matmul): OpenBLAS may sum in another order, ~1e-6 on scores of ~1.
  static let rescoreTolerance = 1e-4

  func test_dpo_lora_writesAdapterAndRewardMetrics() throws {
    let made = try PreferenceRuns.shared()
    XCTAssertEqual(made.dpoRun.status, 0, made.dpoRun.stderr + made.dpoRun.stdout)
    let out = made.dpoRun.stdout
    XCTAssertTrue(out.contains("data: 6 training pairs, 2 validation from val.jsonl; max_length 64, max_prompt_length 32: "),
                  out)
    XCTAssertNotNil(out.range(of: #"\d+ truncated"#, options: .regularExpression), "reports truncated pairs: \(out)")
    let line = #"(?m)^step 2/2 \| loss \d+\.\d{3} \| lr \d\.\de-\d\d \| acc \d\.\d{3} \| margin [+-]\d+\.\d{3} \| \d+ tok/s \| ETA \d+s$"#
    XCTAssertNotNil(out.range(of: line, options: .regularExpression), out)
    XCTAssertNotNil(out.range(of: #"(?m)^eval step 2 \| loss \d\.\d{4} \| acc \d\.\d{3} \| margin [+-]\d+\.\d{3} \|"#,
                              options: .regularExpression), out)
    for file in ["adapter_model.safetensors", "adapter_config.json", "metrics.jsonl", "checkpoint-2/trainer_state.json",
                 "best/adapter_model.safetensors"] {
      XCTAssertTrue(FileManager.default.fileExists(atPath: made.dpo.appendingPathComponent(file).path), "missing \(file)")
    }
    XCTAssertFalse(FileManager.default.fileExists(atPath: made.dpo.appendingPathComponent("reference_logps.json").path),
                   "LoRA without precompute_ref_log_probs uses the disabled adapter, no cache")
    let config = try PreferenceRuns.json(made.dpo.appendingPathComponent("adapter_config.json"))
    XCTAssertEqual(config["task_type"] as? String, "CAUSAL_LM")
    let metrics = try TrainedRun.metrics(made.dpo)
    let steps = metrics.filter { $0["loss"] != nil }
    XCTAssertEqual(steps.count, 2)
    for key in ["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies", "logps/chosen",
                "logps/rejected"] {
      XCTAssertTrue(steps.allSatisfy { ($0[key] as? Double)?.isFinite == true }, "\(key) in every step: \(steps)")
    }
    XCTAssertEqual(try XCTUnwrap(steps.first?["loss"] as? Double), log(2.0), accuracy: Self.firstLossTolerance)
    XCTAssertEqual(try XCTUnwrap(steps.first?["rewards/margins"] as? Double), 0, accuracy: Self.firstLossTolerance)
    let evals = metrics.filter { $0["eval_loss"] != nil }
    XCTAssertEqual(evals.compactMap { $0["step"] as? Int }, [0, 2], "eval_on_start and the end")
    let start = try XCTUnwrap(evals.first)
    XCTAssertEqual(try XCTUnwrap(start["eval_loss"] as? Double), log(2.0), accuracy: Self.firstLossTolerance,
                   "before training the policy is the reference")
    XCTAssertEqual(try XCTUnwrap(start["eval_rewards/margins"] as? Double), 0, accuracy: Self.firstLossTolerance)
    let eval = try XCTUnwrap(evals.last)
    XCTAssertEqual(eval["eval_tokens"] as? Int, 2, "evaluation counts pairs")
    XCTAssertNotNil(eval["eval_rewards/accuracies"] as? Double, "\(eval)")
  }

  /// ORPO (no reference): LoRA trains 2 steps with TRL's logged values, the logged loss being
  /// nll_loss − beta·log_odds_ratio; the adapter is a CAUSAL_LM one.
  func test_orpo_lora_trainsAndLogsTRLsValues() throws {
    let made = try PreferenceRuns.shared()
    let out = made.dir.appendingPathComponent("orpo")
    let r = try CLITests.run(PreferenceRuns.common("orpo", model: made.model, data: made.train)
      + ["--output", out.path, "--max-steps", "2", "--beta", "0.2"])
    XCTAssertEqual(r.status, 0, r.stderr)
    XCTAssertTrue(r.stdout.contains("ORPO: beta 0.2"), r.stdout)
    let steps = try TrainedRun.metrics(out).filter { $0["loss"] != nil }
    XCTAssertEqual(steps.count, 2)
    for s in steps {
      let nll = try XCTUnwrap(s["nll_loss"] as? Double), ratio = try XCTUnwrap(s["log_odds_ratio"] as? Double)
      XCTAssertNotNil(s["log_odds_chosen"] as? Double)
      XCTAssertLessThan(ratio, 0)
      XCTAssertEqual(try XCTUnwrap(s["loss"] as? Double), nll - 0.2 * ratio, accuracy: Self.firstLossTolerance * 10,
                     "\(s)")
    }
    XCTAssertEqual(try PreferenceRuns.json(out.appendingPathComponent("adapter_config.json"))["task_type"] as? String,
                   "CAUSAL_LM")
  }

  func test_reward_lora_writesSeqClsAdapterThatScoreReads() throws {
    let made = try PreferenceRuns.shared()
    XCTAssertEqual(made.rewardRun.status, 0, made.rewardRun.stderr + made.rewardRun.stdout)
    let config = try PreferenceRuns.json(made.reward.appendingPathComponent("adapter_config.json"))
    XCTAssertEqual(config["task_type"] as? String, "SEQ_CLS")
    XCTAssertEqual(config["modules_to_save"] as? [String], ["classifier", "score"])
    let shapes = try PreferenceRuns.tensorShapes(made.reward.appendingPathComponent("adapter_model.safetensors"))
    XCTAssertEqual(shapes["base_model.model.score.weight"], [1, 576])
    XCTAssertEqual(shapes.count, 1 + 2 * 2 * 30, "score head + A and B of q_proj and v_proj in 30 layers")
    let eval = try XCTUnwrap(TrainedRun.metrics(made.reward).last { $0["eval_loss"] != nil })

    // `score` on the validation pairs gives the rewards the trainer's evaluation logged.
    let json = made.dir.appendingPathComponent("score.json")
    let r = try CLITests.run(["score", "--cpu", "--model", made.model, "--adapter", made.reward.path, "--data",
                              made.validation.path, "--max-length", PreferenceRuns.maxLength, "--max-prompt-length",
                              PreferenceRuns.maxPromptLength, "--batch-size", "1", "--json", json.path])
    XCTAssertEqual(r.status, 0, r.stderr)
    XCTAssertNotNil(r.stdout.range(of: #"(?m)^pair 2 \| chosen [+-]\d\.\d{4} \| rejected [+-]\d\.\d{4} \| margin"#,
                                   options: .regularExpression), r.stdout)
    XCTAssertNotNil(r.stdout.range(of: #"(?m)^accuracy \d\.\d{4} \(\d/2 pairs"#, options: .regularExpression), r.stdout)
    let report = try PreferenceRuns.json(json)
    XCTAssertEqual(report["pairs"] as? Int, 2)
    XCTAssertEqual(report["pad_token_id"] as? Int, 2, "SmolLM2's config pad_token_id")
    XCTAssertEqual(try XCTUnwrap(report["mean_chosen"] as? Double),
                   try XCTUnwrap(eval["eval_rewards/chosen"] as? Double), accuracy: Self.rescoreTolerance)
    XCTAssertEqual(try XCTUnwrap(report["mean_rejected"] as? Double),
                   try XCTUnwrap(eval["eval_rewards/rejected"] as? Double), accuracy: Self.rescoreTolerance)
    XCTAssertEqual(try XCTUnwrap(report["accuracy"] as? Double),
                   try XCTUnwrap(eval["eval_rewards/accuracies"] as? Double))

    // Merged into a reward model directory, it scores the same.
    let merged = made.dir.appendingPathComponent("reward-merged")
    let m = try CLITests.run(["merge", "--cpu", "--model", made.model, "--adapter", made.reward.path, "--output", merged.path])
    XCTAssertEqual(m.status, 0, m.stderr)
    let mergedConfig = try PreferenceRuns.json(merged.appendingPathComponent("config.json"))
    XCTAssertEqual(mergedConfig["architectures"] as? [String], ["LlamaForSequenceClassification"])
    let json2 = made.dir.appendingPathComponent("score-merged.json")
    let r2 = try CLITests.run(["score", "--cpu", "--model", merged.path, "--data", made.validation.path,
                               "--max-length", PreferenceRuns.maxLength, "--max-prompt-length",
                               PreferenceRuns.maxPromptLength, "--json", json2.path])
    XCTAssertEqual(r2.status, 0, r2.stderr)
    let a = try XCTUnwrap(report["rewards"] as? [[String: Any]]), b = try XCTUnwrap(PreferenceRuns.json(json2)["rewards"] as? [[String: Any]])
    XCTAssertEqual(a.count, b.count)
    for (x, y) in zip(a, b) {
      for k in ["chosen", "rejected"] {
        XCTAssertEqual(try XCTUnwrap(x[k] as? Double), try XCTUnwrap(y[k] as? Double), accuracy: Self.rescoreTolerance,
                       "merged W + sBA vs adapter")
      }
    }
  }

  func test_reward_full_writesSequenceClassificationDirectory() throws {
    let made = try PreferenceRuns.shared()
    let out = made.dir.appendingPathComponent("reward-full")
    let r = try CLITests.run(PreferenceRuns.common("reward", model: made.model, data: made.train)
      + ["--output", out.path, "--max-steps", "1", "--method", "full", "--learning-rate", "1e-5"])
    XCTAssertEqual(r.status, 0, r.stderr + r.stdout)
    XCTAssertTrue(r.stdout.contains("wrote reward model to"), r.stdout)
    let config = try PreferenceRuns.json(out.appendingPathComponent("config.json"))
    XCTAssertEqual(config["architectures"] as? [String], ["LlamaForSequenceClassification"])
    XCTAssertEqual(config["id2label"] as? [String: String], ["0": "LABEL_0"])
    XCTAssertEqual(config["label2id"] as? [String: Int], ["LABEL_0": 0])
    XCTAssertEqual(config["pad_token_id"] as? Int, 2)
    let shapes = try PreferenceRuns.tensorShapes(out.appendingPathComponent("model.safetensors"))
    XCTAssertEqual(shapes["score.weight"], [1, 576])
    XCTAssertNil(shapes["lm_head.weight"])
    XCTAssertEqual(shapes["model.embed_tokens.weight"], [49152, 576])
    let s = try CLITests.run(["score", "--cpu", "--model", out.path, "--data", made.validation.path,
                              "--max-length", PreferenceRuns.maxLength])
    XCTAssertEqual(s.status, 0, s.stderr)
    XCTAssertTrue(s.stdout.contains("accuracy "), s.stdout)
  }

  /// LoRA DPO with precompute_ref_log_probs caches the reference in the output directory and a
  /// resumed run reads it back instead of recomputing.
  func test_dpo_precomputedReference_cachedAndReusedOnResume() throws {
    let made = try PreferenceRuns.shared()
    let out = made.dir.appendingPathComponent("dpo-precomputed")
    let flags = PreferenceRuns.common("dpo", model: made.model, data: made.train)
      + ["--output", out.path, "--precompute-ref-log-probs", "--lr-scheduler", "constant"]
    let r1 = try CLITests.run(flags + ["--max-steps", "1"])
    XCTAssertEqual(r1.status, 0, r1.stderr + r1.stdout)
    XCTAssertTrue(r1.stdout.contains("reference log-probs: 12 sequences in"), r1.stdout)
    let cache = try PreferenceRuns.json(out.appendingPathComponent("reference_logps.json"))
    XCTAssertEqual((cache["values"] as? [String: Double])?.count, 12, "6 pairs × (chosen, rejected)")
    let first = try XCTUnwrap(TrainedRun.metrics(out).first?["loss"] as? Double)
    XCTAssertEqual(first, log(2.0), accuracy: PreferenceTrainTests.firstLossTolerance,
                   "precomputed reference = the disabled adapter's log-probs")
    let r2 = try CLITests.run(flags + ["--max-steps", "2", "--resume"])
    XCTAssertEqual(r2.status, 0, r2.stderr + r2.stdout)
    XCTAssertTrue(r2.stdout.contains("reference log-probs: 12 sequences read from reference_logps.json"), r2.stdout)
    XCTAssertTrue(r2.stdout.contains("step 2/2"), r2.stdout)
    // The loss is not in the trainer's fingerprint: a changed beta is refused by objective.json.
    let r3 = try CLITests.run(flags + ["--max-steps", "3", "--resume", "--beta", "0.2"])
    XCTAssertNotEqual(r3.status, 0)
    XCTAssertTrue(r3.stderr.contains("started with beta = 0.1, now 0.2"), r3.stderr)
    XCTAssertFalse(r3.stdout.contains("backend:"), "refused before loading: \(r3.stdout)")
  }
}

/// Preference settings that cannot work: one line, non-zero exit, before anything loads.
final class PreferenceSettingsTests: XCTestCase {
  func test_badPreferenceSettings_failWithOneLine() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vkf-prefset-\(UUID())")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let data = dir.appendingPathComponent("pairs.jsonl")
    try Data(#"{"prompt": "p", "chosen": "a", "rejected": "b"}"#.utf8).write(to: data)
    let base = ["train", "--dry-run", "--model", "some/model", "--data", data.path, "--output",
                dir.appendingPathComponent("out").path]
    let cases: [([String], String)] = [
      (["--objective", "dpo", "--beta", "0"], "beta"),
      (["--objective", "dpo", "--beta=-0.1"], "beta must be > 0 (got -0.1)"),
      (["--objective", "dpo", "--loss-type", "kto"], "loss_type"),
      (["--objective", "dpo", "--label-smoothing", "0.5"], "label_smoothing"),
      (["--objective", "dpo", "--loss-type", "ipo", "--label-smoothing", "0.1"], "label_smoothing"),
      (["--objective", "dpo", "--loss-type", "hinge", "--label-smoothing", "0.2"], "label_smoothing"),
      (["--objective", "dpo", "--rpo-alpha=-1"], "rpo_alpha"),
      (["--objective", "dpo", "--max-prompt-length", "64", "--max-length", "64"], "max_prompt_length"),
      (["--objective", "reward", "--max-prompt-length", "0"], "max_prompt_length"),
      (["--objective", "dpo", "--packing"], "packing"),
      (["--objective", "reward", "--train-on-prompt"], "train_on_prompt"),
      (["--objective", "reward", "--margin", "inf"], "margin"),
      (["--objective", "ppo"], "objective"),
      (["--objective", "orpo", "--loss-type", "ipo"], "ORPO takes beta only"),
      (["--objective", "orpo", "--rpo-alpha", "0.5"], "ORPO takes beta only"),
      (["--objective", "orpo", "--precompute-ref-log-probs"], "ORPO has no reference model"),
    ]
    for (args, expected) in cases {
      let r = try CLITests.run(base + args)
      XCTAssertNotEqual(r.status, 0, "\(args) was accepted: \(r.stdout)")
      XCTAssertFalse(r.stderr.contains("Fatal error"), "\(args) trapped: \(r.stderr)")
      let errors = r.stderr.split(separator: "\n").filter { $0.hasPrefix("Error:") }
      XCTAssertEqual(errors.count, 1, "\(args): \(r.stderr)")
      XCTAssertTrue(errors.first?.contains(expected) == true, "\(args) → \(r.stderr)")
    }
    // The same settings are fine for the objective they belong to (robust with ε, packing for SFT).
    for args in [["--objective", "dpo", "--loss-type", "robust", "--label-smoothing", "0.1"], ["--packing"],
                 ["--objective", "reward", "--margin", "0.5"], ["--objective", "orpo", "--beta", "0.2"]] {
      let r = try CLITests.run(base + args)
      XCTAssertEqual(r.status, 0, "\(args): \(r.stderr)")
    }
  }

  /// Records a preference objective cannot use name the missing key and the preference
  /// formats (SFT records are called SFT records), and nothing is written.
  func test_recordsWithoutPairs_nameTheMissingKey() throws {
    let model = try TrainedRun.modelDirectory()
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vkf-prefkeys-\(UUID())")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let cases: [(objective: String, record: String, expected: String)] = [
      ("dpo", #"{"instruction": "Say hi", "input": "", "output": "hi"}"#, "an SFT record, format alpaca"),
      ("reward", #"{"messages": [{"role": "user", "content": "hi"}]}"#, "an SFT record, format messages"),
      ("dpo", #"{"prompt": "p", "chosen": "a"}"#, "has keys [chosen, prompt] but no \"rejected\""),
    ]
    for (i, c) in cases.enumerated() {
      let data = dir.appendingPathComponent("data\(i).jsonl"), out = dir.appendingPathComponent("out\(i)")
      try Data((c.record + "\n").utf8).write(to: data)
      let r = try CLITests.run(["train", "--cpu", "--objective", c.objective, "--model", model, "--data", data.path,
                                "--output", out.path])
      XCTAssertNotEqual(r.status, 0, "\(c.record) was accepted")
      let errors = r.stderr.split(separator: "\n").filter { $0.hasPrefix("Error:") }
      XCTAssertEqual(errors.count, 1, r.stderr)
      XCTAssertTrue(errors.first?.contains("data\(i).jsonl: record 0: ") == true, r.stderr)
      XCTAssertTrue(errors.first?.contains(c.expected) == true, "\(c.expected) → \(r.stderr)")
      XCTAssertFalse(FileManager.default.fileExists(atPath: out.path), "nothing written for \(c.record)")
    }
  }

  /// TRL's DPOConfig names and LLaMA-Factory's `stage` / `pref_*` in a recipe.
  func test_trlNamesInRecipe_resolve() throws {
    let dir = FileManager.default.temporaryDirectory.appendingPathComponent("vkf-prefrecipe-\(UUID())")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(at: dir) }
    let data = dir.appendingPathComponent("pairs.jsonl")
    try Data(#"{"prompt": "p", "chosen": "a", "rejected": "b"}"#.utf8).write(to: data)
    /// The settings `--dry-run --print-config` resolves from a recipe: `lines` after the model,
    /// data and output keys (LLaMA-Factory's spelling with `factory`).
    func resolved(_ name: String, factory: Bool = false, _ lines: String) throws -> [String: Any] {
      let recipe = dir.appendingPathComponent(name + ".yaml")
      let head = factory ? "model_name_or_path: some/model\ndataset: " : "model: some/model\ndata: "
      try Data((head + data.path + "\noutput_dir: " + dir.appendingPathComponent("out").path + "\n" + lines).utf8)
        .write(to: recipe)
      let r = try CLITests.run(["train", "--dry-run", "--print-config", "--print-format", "json", "--config", recipe.path])
      XCTAssertEqual(r.status, 0, "\(name): \(r.stderr)")
      return try XCTUnwrap(JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any])
    }
    let s = try resolved("dpo", """
      objective: dpo
      beta: 0.25
      loss_type: robust
      label_smoothing: 0.1
      rpo_alpha: 0.5
      max_length: 256
      max_prompt_length: 128
      precompute_ref_log_probs: true
      eval_on_start: false
      """)
    XCTAssertEqual(s["objective"] as? String, "dpo")
    XCTAssertEqual(s["beta"] as? Double, 0.25)
    XCTAssertEqual(s["loss_type"] as? String, "robust")
    XCTAssertEqual(s["label_smoothing"] as? Double, 0.1)
    XCTAssertEqual(s["rpo_alpha"] as? Double, 0.5)
    XCTAssertEqual(s["max_seq_length"] as? Int, 256, "TRL's max_length is max_seq_length")
    XCTAssertEqual(s["max_prompt_length"] as? Int, 128)
    XCTAssertEqual(s["precompute_ref_log_probs"] as? Bool, true)
    XCTAssertEqual(s["eval_on_start"] as? Bool, false)
    XCTAssertEqual(try resolved("rm", factory: true, "stage: rm")["objective"] as? String, "reward",
                   "LLaMA-Factory's stage: rm")
    // LLaMA-Factory's ORPO: stage dpo with pref_loss orpo (pref_beta is ORPO's beta), in either key order.
    let orpo = try resolved("orpo", factory: true, "pref_loss: orpo\npref_beta: 0.2\nstage: dpo")
    XCTAssertEqual(orpo["objective"] as? String, "orpo", "LLaMA-Factory's pref_loss: orpo")
    XCTAssertEqual(orpo["beta"] as? Double, 0.2)
  }
}
