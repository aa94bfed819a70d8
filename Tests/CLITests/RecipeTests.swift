import Foundation
import XCTest

/// `train --dry-run`: recipe files (HF / axolotl / LLaMA-Factory names), flag overrides and the
/// up-front validation, through the binary (nothing is loaded, so each case takes milliseconds).
final class RecipeTests: XCTestCase {
  var dir: URL!
  var dataFile: URL!

  override func setUpWithError() throws {
    dir = FileManager.default.temporaryDirectory.appendingPathComponent("vkf-recipe-\(UUID())")
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    dataFile = dir.appendingPathComponent("data.json")
    try Data(#"[{"instruction": "Say hi", "input": "", "output": "hi"}]"#.utf8).write(to: dataFile)
  }

  override func tearDownWithError() throws { try? FileManager.default.removeItem(at: dir) }

  /// Writes `yaml` as a recipe and returns its path.
  func recipe(_ yaml: String, name: String = "recipe.yaml") throws -> String {
    let url = dir.appendingPathComponent(name)
    try Data(yaml.utf8).write(to: url)
    return url.path
  }

  /// The minimal flags a dry run needs (model is not loaded in a dry run).
  var required: [String] {
    ["--model", "some/model", "--data", dataFile.path, "--output", dir.appendingPathComponent("out").path]
  }

  /// Resolved settings from `train --dry-run --print-config --print-format json`.
  func resolved(_ args: [String]) throws -> [String: Any] {
    let r = try CLITests.run(["train", "--dry-run", "--print-config", "--print-format", "json"] + args)
    XCTAssertEqual(r.status, 0, r.stderr)
    let object = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8))
    return try XCTUnwrap(object as? [String: Any], r.stdout)
  }

  /// Runs `train` with `args`, asserts a non-zero exit with exactly one `Error:` line and no
  /// trap, and returns that line.
  @discardableResult
  func rejected(_ args: [String], file: StaticString = #filePath, line: UInt = #line) throws -> String {
    let r = try CLITests.run(["train"] + args)
    XCTAssertNotEqual(r.status, 0, "\(args) was accepted: \(r.stdout)", file: file, line: line)
    XCTAssertFalse(r.stderr.contains("Fatal error"), "\(args) trapped: \(r.stderr)", file: file, line: line)
    let errors = r.stderr.split(separator: "\n").filter { $0.hasPrefix("Error:") }
    XCTAssertEqual(errors.count, 1, "\(args): \(r.stderr)", file: file, line: line)
    return errors.first.map(String.init) ?? ""
  }

  // MARK: - Names and aliases

  func test_axolotlAndLlamaFactoryNames_resolveToCanonicalSettings() throws {
    let path = try recipe("""
      base_model: org/base
      datasets:
        - path: \(dataFile.path)
          type: alpaca
      micro_batch_size: 2
      gradient_accumulation_steps: 4
      num_epochs: 3
      lr: 3e-4
      lr_scheduler: cosine
      lr_scheduler_kwargs: {num_cycles: 0.25}
      lora_rank: 16
      lora_alpha: 32
      lora_target: q_proj, v_proj
      cutoff_len: 256
      train_on_inputs: true
      sample_packing: true
      load_in_4bit: true
      adapter: lora
      val_set_size: 0.1
      output_dir: \(dir.appendingPathComponent("out").path)
      bf16: false
      """)
    let s = try resolved(["--config", path])
    XCTAssertEqual(s["model"] as? String, "org/base")
    XCTAssertEqual(s["data"] as? String, dataFile.path)
    XCTAssertEqual(s["dataset_format"] as? String, "alpaca")
    XCTAssertEqual(s["per_device_train_batch_size"] as? Int, 2)
    XCTAssertEqual(s["gradient_accumulation_steps"] as? Int, 4)
    XCTAssertEqual(s["num_train_epochs"] as? Int, 3)
    XCTAssertEqual(s["learning_rate"] as? Double, 3e-4)
    XCTAssertEqual(s["lr_scheduler_type"] as? String, "cosine")
    XCTAssertEqual((s["lr_scheduler_kwargs"] as? [String: Any])?["num_cycles"] as? Double, 0.25)
    XCTAssertEqual(s["lora_r"] as? Int, 16)
    XCTAssertEqual(s["lora_alpha"] as? Double, 32)
    XCTAssertEqual(s["lora_target_modules"] as? [String], ["q_proj", "v_proj"])
    XCTAssertEqual(s["max_seq_length"] as? Int, 256)
    XCTAssertEqual(s["train_on_prompt"] as? Bool, true)
    XCTAssertEqual(s["packing"] as? Bool, true)
    XCTAssertEqual(s["method"] as? String, "qlora", "load_in_4bit turns adapter: lora into QLoRA")
    XCTAssertEqual(s["val_set_size"] as? Double, 0.1)
  }

  func test_targetModules_acceptListCommaStringAndAllLinear() throws {
    let allLinear = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    for (value, expected) in [("[q_proj, o_proj]", ["q_proj", "o_proj"]), ("\"k_proj,down_proj\"", ["k_proj", "down_proj"]),
                              ("all-linear", allLinear), ("all", allLinear),
                              ("[model.layers.0.self_attn.q_proj, lm_head]", ["q_proj", "lm_head"])] {
      let s = try resolved(["--config", try recipe("lora_target_modules: \(value)")] + required)
      XCTAssertEqual(s["lora_target_modules"] as? [String], expected, value)
    }
  }

  func test_flagsOverrideTheRecipeFile() throws {
    let path = try recipe("learning_rate: 1e-3\nlora_r: 4\npacking: true\nseed: 7\n")
    let s = try resolved(["--config", path, "--learning-rate", "5e-5", "--lora-r", "32", "--no-packing"] + required)
    XCTAssertEqual(s["learning_rate"] as? Double, 5e-5)
    XCTAssertEqual(s["lora_r"] as? Int, 32)
    XCTAssertEqual(s["packing"] as? Bool, false)
    XCTAssertEqual(s["seed"] as? Int, 7, "a key no flag sets keeps the file's value")
  }

  func test_printConfigYAML_readsBackToTheSameSettings() throws {
    let path = try recipe("""
      lr_scheduler_type: cosine_with_min_lr
      lr_scheduler_kwargs: {min_lr_rate: 0.1}
      warmup_ratio: 0.03
      lora_target_modules: [q_proj, v_proj]
      memory_budget: 6GiB
      chat_template: chatml
      """)
    let first = try CLITests.run(["train", "--dry-run", "--print-config", "--config", path] + required)
    XCTAssertEqual(first.status, 0, first.stderr)
    let printed = try recipe(first.stdout, name: "printed.yaml")
    let second = try CLITests.run(["train", "--dry-run", "--print-config", "--config", printed])
    XCTAssertEqual(second.status, 0, second.stderr)
    XCTAssertEqual(second.stdout, first.stdout)
    XCTAssertTrue(first.stdout.contains("memory_budget: 6442450944"), first.stdout)
  }

  func test_exampleRecipes_areValidAndKeepTheirMethod() throws {
    let examples = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../examples")
      .standardized
    let files = try FileManager.default.contentsOfDirectory(atPath: examples.path).filter { $0.hasSuffix(".yaml") }
    XCTAssertGreaterThanOrEqual(files.count, 3, "examples/ holds the LoRA, QLoRA and full recipes")
    var methods: Set<String> = []
    for file in files {
      // Data paths point into ../shared relative to the repository root: replace them here.
      let s = try resolved(["--config", examples.appendingPathComponent(file).path, "--data", dataFile.path,
                            "--eval-data", dataFile.path, "--output", dir.appendingPathComponent(file).path])
      methods.insert(try XCTUnwrap(s["method"] as? String, file))
    }
    XCTAssertEqual(methods, ["lora", "qlora", "full"])
  }

  // MARK: - Rejections, one line each

  func test_badSettings_rejectedWithOneLineNamingTheProblem() throws {
    let cases: [([String], String)] = [
      (["--lora-r", "0"], "lora_r"),
      (["--lora-r=-4"], "lora_r"),
      (["--learning-rate", "0"], "learning_rate"),
      (["--learning-rate=-1e-4"], "learning_rate"),
      (["--lr-scheduler", "cosine_annealing"], "cosine_with_restarts"),  // lists the valid names
      (["--lora-target-modules", "q_prj"], "did you mean q_proj"),
      (["--batch-size", "0"], "per_device_train_batch_size"),
      (["--gradient-accumulation-steps", "0"], "gradient_accumulation_steps"),
      (["--val-set-size", "1.5"], "val_set_size = 1.5 is invalid: use a fraction in [0, 1) or a whole count"),
      (["--val-set-size=-0.1"], "val_set_size"),
      (["--max-eval-samples=-1"], "max_eval_samples"),
      (["--lora-dropout", "1.5"], "lora_dropout"),
      (["--warmup-ratio", "2"], "warmup_ratio"),
      (["--max-seq-length", "1"], "max_seq_length"),
      (["--method", "freeze"], "lora, qlora, full"),
      (["--chat-template", "nope"], "chat_template"),
      (["--memory-budget", "lots"], "memory_budget"),
      (["--early-stopping-patience", "2"], "validation data"),
      (["--overwrite", "--resume"], "--overwrite and --resume"),
      // max_steps ≤ 0 other than transformers' −1 ("unset") is a mistake, not a full epoch.
      (["--max-steps", "0"], "max_steps = 0 is invalid"),
      (["--max-steps=-5"], "max_steps = -5 is invalid"),
      // Step intervals: a whole count or, as transformers reads them, a fraction of the run.
      (["--eval-steps", "2.5"], "eval_steps = 2.5 is invalid: use a whole step count, or a fraction"),
      (["--save-steps=-1"], "save_steps = -1 is invalid"),
      (["--logging-steps", "0"], "logging_steps = 0 is invalid"),
      (["--epochs", "0"], "num_train_epochs = 0 is invalid"),
      (["--save-total-limit=-1"], "save_total_limit = -1 is invalid"),
    ]
    for (args, expected) in cases {
      let line = try rejected(required + args)
      XCTAssertTrue(line.contains(expected), "\(args): expected \(expected) in \(line)")
    }
  }

  /// max_steps −1 is transformers' "unset": accepted, training num_train_epochs epochs.
  func test_maxStepsMinusOne_meansUnsetAsInTransformers() throws {
    let settings = try resolved(required + ["--max-steps=-1", "--epochs", "2"])
    XCTAssertEqual(settings["max_steps"] as? Int, -1)
    XCTAssertEqual(settings["num_train_epochs"] as? Int, 2)
  }

  /// transformers reads eval_steps / save_steps / logging_steps below 1 as fractions of the run
  /// and num_train_epochs as a float: the same values resolve here (the step counts they become
  /// are pinned in VKFTrainTests.StepIntervalTests and printed by the schedule line).
  func test_fractionalIntervalsAndEpochs_acceptedAsInTransformers() throws {
    let path = try recipe("num_train_epochs: 2.5\neval_steps: 0.1\nsave_steps: 0.5\nlogging_steps: 0.05\nval_set_size: 0.2\n")
    let settings = try resolved(required + ["--config", path])
    XCTAssertEqual(settings["num_train_epochs"] as? Double, 2.5)
    XCTAssertEqual(settings["eval_steps"] as? Double, 0.1)
    XCTAssertEqual(settings["save_steps"] as? Double, 0.5)
    XCTAssertEqual(settings["logging_steps"] as? Double, 0.05)
    // Whole values stay whole.
    let flags = try resolved(required + ["--eval-steps", "20", "--epochs", "3"])
    XCTAssertEqual(flags["eval_steps"] as? Int, 20)
    XCTAssertEqual(flags["num_train_epochs"] as? Int, 3)
  }

  func test_missingInputsAndUnwritableOutput_rejected() throws {
    XCTAssertTrue(try rejected(["--data", dataFile.path, "--output", dir.path + "/o", "--dry-run"]).contains("model"))
    XCTAssertTrue(try rejected(["--model", "m", "--output", dir.path + "/o", "--dry-run"]).contains("data"))
    XCTAssertTrue(try rejected(["--model", "m", "--data", dataFile.path, "--dry-run"]).contains("output"))
    XCTAssertTrue(try rejected(["--model", "m", "--data", dir.path + "/none.json", "--output", dir.path + "/o",
                                "--dry-run"]).contains("no such file"))
    // A directory is named as one, for --data and --eval-data.
    for key in ["--data", "--eval-data"] {
      let args = key == "--data" ? ["--data", dir.path] : ["--data", dataFile.path, "--eval-data", dir.path]
      let line = try rejected(["--model", "m", "--output", dir.path + "/o", "--dry-run"] + args)
      XCTAssertTrue(line.contains("\(dir.path) is a directory; give a JSON or JSONL file"), line)
    }
    // Under a regular file nothing can be created, even as root.
    let line = try rejected(["--model", "m", "--data", dataFile.path, "--output", dataFile.path + "/out", "--dry-run"])
    XCTAssertTrue(line.contains("output_dir"), line)
  }

  /// --resume appends to metrics.jsonl and rewrites files in place: a symbolic link in the
  /// output directory (file or directory) would send those writes elsewhere, so it is refused
  /// naming the entry; nothing is written or followed.
  func test_resume_refusesSymbolicLinksInTheOutputDirectory() throws {
    let out = dir.appendingPathComponent("out"), outside = dir.appendingPathComponent("outside")
    let fm = FileManager.default
    try fm.createDirectory(at: out, withIntermediateDirectories: true)
    try fm.createDirectory(at: outside, withIntermediateDirectories: true)
    try Data("keep".utf8).write(to: outside.appendingPathComponent("victim.txt"))
    for (name, target) in [("metrics.jsonl", outside.appendingPathComponent("victim.txt")),
                           ("checkpoint-1", outside)] {
      try fm.createSymbolicLink(at: out.appendingPathComponent(name), withDestinationURL: target)
      let line = try rejected(required + ["--resume", "--dry-run"])
      XCTAssertTrue(line.contains("\(out.path)/\(name) is a symbolic link (to \(target.path))"), line)
      try fm.removeItem(at: out.appendingPathComponent(name))
    }
    XCTAssertEqual(try String(contentsOf: outside.appendingPathComponent("victim.txt"), encoding: .utf8), "keep")
  }

  func test_existingOutputDirectory_refusedUnlessOverwriteOrResume() throws {
    let out = dir.appendingPathComponent("out")
    try FileManager.default.createDirectory(at: out, withIntermediateDirectories: true)
    try Data("x".utf8).write(to: out.appendingPathComponent("metrics.jsonl"))
    let line = try rejected(required + ["--dry-run"])
    XCTAssertTrue(line.contains("not empty") && line.contains("--overwrite"), line)
    for flag in ["--overwrite", "--resume"] {
      let r = try CLITests.run(["train", "--dry-run"] + required + [flag])
      XCTAssertEqual(r.status, 0, "\(flag): \(r.stderr)")
    }
    XCTAssertTrue(FileManager.default.fileExists(atPath: out.appendingPathComponent("metrics.jsonl").path),
                  "a dry run writes and deletes nothing")
    let empty = dir.appendingPathComponent("empty")
    XCTAssertTrue(try rejected(["--model", "m", "--data", dataFile.path, "--output", empty.path, "--resume",
                                "--dry-run"]).contains("no run to continue"))
  }

  func test_recipeFileProblems_oneLineWithPlace() throws {
    var line = try rejected(["--config", try recipe("lora_r: 8\nlearnig_rate: 1e-4\n")] + required)
    XCTAssertTrue(line.contains("recipe.yaml:2") && line.contains("learnig_rate") && line.contains("did you mean learning_rate"), line)
    line = try rejected(["--config", try recipe("lora_r: 8\nlora_alpha: [16\nseed: 1\n")] + required)
    XCTAssertTrue(line.contains("recipe.yaml:") && line.contains("not valid YAML"), line)
    XCTAssertNotNil(line.range(of: #"recipe\.yaml:\d+:\d+"#, options: .regularExpression), "line and column: \(line)")
    line = try rejected(["--config", try recipe("lora_r: many\n")] + required)
    XCTAssertTrue(line.contains("recipe.yaml:1") && line.contains("integer"), line)
    line = try rejected(["--config", try recipe("lr: 1e-4\nlearning_rate: 2e-4\n")] + required)
    XCTAssertTrue(line.contains("learning_rate") && line.contains("already set"), line)
    line = try rejected(["--config", try recipe("pure_bf16: true\n")] + required)
    XCTAssertTrue(line.contains("pure_bf16") && line.contains("bf16: true"), line)
    line = try rejected(["--config", try recipe("- a\n- b\n")] + required)
    XCTAssertTrue(line.contains("mapping"), line)
    line = try rejected(["--config", try recipe("lr_scheduler_type: cosine\nlr_scheduler_kwargs: {min_lr: 1e-6}\n")] + required)
    XCTAssertTrue(line.contains("min_lr"), line)
    line = try rejected(["--config", dir.appendingPathComponent("absent.yaml").path] + required)
    XCTAssertTrue(line.contains("absent.yaml"), line)
  }

  /// Mixed precision under Hugging Face's names (and axolotl's `bf16: auto`, bitsandbytes'
  /// compute dtype); contradictions are refused naming both keys.
  func test_mixedPrecision_keysFlagsAndConflicts() throws {
    var s = try resolved(["--config", try recipe("bf16: auto\n")] + required)
    XCTAssertEqual(s["bf16"] as? Bool, true)
    XCTAssertEqual(s["fp16"] as? Bool, false)
    s = try resolved(["--fp16"] + required)
    XCTAssertEqual(s["fp16"] as? Bool, true)
    s = try resolved(["--config", try recipe("load_in_4bit: true\nbnb_4bit_compute_dtype: bfloat16\n")] + required)
    XCTAssertEqual(s["bnb_4bit_compute_dtype"] as? String, "bfloat16")
    s = try resolved(["--config", try recipe("bf16: true\n"), "--no-bf16"] + required)
    XCTAssertEqual(s["bf16"] as? Bool, false, "the flag overrides the file")
    var line = try rejected(["--bf16", "--fp16", "--dry-run"] + required)
    XCTAssertTrue(line.contains("bf16") && line.contains("fp16") && line.contains("keep one"), line)
    line = try rejected(["--config", try recipe("fp16: true\nbnb_4bit_compute_dtype: bfloat16\n"), "--dry-run"] + required)
    XCTAssertTrue(line.contains("bnb_4bit_compute_dtype") && line.contains("fp16"), line)
    line = try rejected(["--config", try recipe("bnb_4bit_compute_dtype: float64\n"), "--dry-run"] + required)
    XCTAssertTrue(line.contains("recipe.yaml:1") && line.contains("bnb_4bit_compute_dtype"), line)
  }
}
