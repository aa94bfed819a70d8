import Foundation
import VKFCore
import VKFPEFT
import VKFTokenizer
import VKFTrain

/// Up-front checks of a run's settings, before anything heavy loads: each failure is one line
/// naming the key, the value and what to use instead.
extension TrainSettings {
  /// What to do with an output directory that already holds files.
  enum OutputMode { case refuseExisting, overwrite, resume }

  func validate(output mode: OutputMode, checkFiles: Bool = true) throws {
    func fail(_ key: String, _ value: Any, _ requirement: String) -> RecipeError {
      RecipeError("\(key) = \(value) is invalid: \(requirement)")
    }
    guard model?.isEmpty == false else { throw RecipeError("no model: pass --model or set model: in the recipe") }
    guard let data, !data.isEmpty else { throw RecipeError("no training data: pass --data or set data: in the recipe") }
    guard let outputDir, !outputDir.isEmpty else {
      throw RecipeError("no output directory: pass --output or set output_dir: in the recipe")
    }

    if let qat, method != .full {
      throw RecipeError("qat = \(qat == .q4_0 ? "int4" : "int8") fake-quantises the trained weights: it needs method full, not \(method.rawValue)")
    }
    if bf16 && fp16 { throw RecipeError("bf16 and fp16 are both on; mixed precision uses one 16-bit type: keep one") }
    if let c = bnb4bitComputeDtype {
      let implied: DType = c == "bfloat16" ? .bf16 : c == "float16" ? .f16 : .f32
      let asked: DType? = bf16 ? .bf16 : fp16 ? .f16 : nil
      if let asked, asked != implied {
        throw RecipeError("bnb_4bit_compute_dtype = \(c) disagrees with \(asked == .bf16 ? "bf16" : "fp16") = true; "
          + "make them name the same type")
      }
    }
    guard learningRate > 0 else { throw fail("learning_rate", learningRate, "use a positive number such as 2e-4") }
    // transformers reads max_steps −1 as "unset" (train num_train_epochs epochs); any other
    // value ≤ 0 is a mistake, not a request for a full epoch.
    guard maxSteps > 0 || maxSteps == -1 else {
      throw fail("max_steps", maxSteps, "use a positive number of optimizer steps, or -1 (as in transformers: "
        + "unset, train num_train_epochs epochs)")
    }
    guard maxSteps > 0 || numTrainEpochs > 0 else {
      throw fail("num_train_epochs", StepInterval.formatted(numTrainEpochs), "use a positive number of epochs, or set max_steps")
    }
    guard perDeviceTrainBatchSize > 0 else {
      throw fail("per_device_train_batch_size", perDeviceTrainBatchSize, "use a positive number of rows")
    }
    guard gradientAccumulationSteps > 0 else {
      throw fail("gradient_accumulation_steps", gradientAccumulationSteps, "use a positive count")
    }
    guard maxSeqLength > 1 else { throw fail("max_seq_length", maxSeqLength, "use at least 2 tokens") }
    guard weightDecay >= 0 else { throw fail("weight_decay", weightDecay, "use a number ≥ 0") }
    guard maxGradNorm >= 0 else { throw fail("max_grad_norm", maxGradNorm, "use a number ≥ 0 (0 = no clipping)") }
    if let c = routerAuxLossCoef, !(c.isFinite && c >= 0) {
      throw RecipeError("router_aux_loss_coef = \(c) is invalid: use a weight ≥ 0 (0.001 is Mixtral's; 0 turns the loss off)")
    }
    for (key, beta) in [("adam_beta1", adamBeta1), ("adam_beta2", adamBeta2)] where !(0..<1).contains(beta) {
      throw fail(key, beta, "use a fraction in [0, 1)")
    }
    guard adamEpsilon > 0 else { throw fail("adam_epsilon", adamEpsilon, "use a positive number such as 1e-8") }
    guard (0...1).contains(warmupRatio) else { throw fail("warmup_ratio", warmupRatio, "use a fraction in [0, 1]") }
    guard warmupSteps >= 0 else { throw fail("warmup_steps", warmupSteps, "use a step count ≥ 0") }
    // As datasets' train_test_split reads test_size: a fraction below 1, or a whole count.
    guard valSetSize >= 0, valSetSize < 1 || (valSetSize == valSetSize.rounded() && valSetSize < 1e15) else {
      throw fail("val_set_size", StepInterval.formatted(valSetSize), "use a fraction in [0, 1) or a whole count of examples")
    }
    // transformers reads save_total_limit ≤ 0 as "keep all" and axolotl early_stopping_patience
    // 0 as "off"; ours say 0 for both and refuse negatives rather than guess.
    for (key, n) in [("save_total_limit", saveTotalLimit), ("early_stopping_patience", earlyStoppingPatience),
                     ("max_eval_samples", maxEvalSamples)] where n < 0 {
      throw fail(key, n, "use a count ≥ 0 (0 = off / all)")
    }
    // Step intervals as transformers reads them: a whole count, or a fraction of the run in (0, 1).
    for (key, v) in [("eval_steps", evalSteps), ("save_steps", saveSteps), ("logging_steps", loggingSteps)] {
      if let problem = StepInterval.problem(v) { throw fail(key, StepInterval.formatted(v), problem) }
    }
    guard seed >= 0 else { throw fail("seed", seed, "use an integer ≥ 0") }
    guard loggingSteps > 0 else {
      throw fail("logging_steps", StepInterval.formatted(loggingSteps), "use a positive step count or a fraction of the run in (0, 1)")
    }
    if earlyStoppingPatience > 0, evalData == nil, valSetSize == 0 {
      throw RecipeError("early_stopping_patience needs validation data: set eval_data or val_set_size")
    }
    if method != .full {
      guard loraR > 0 else { throw fail("lora_r", loraR, "use a positive rank such as 8 or 16") }
      guard loraAlpha > 0 else { throw fail("lora_alpha", loraAlpha, "use a positive number such as 16") }
      guard (0..<1).contains(loraDropout) else { throw fail("lora_dropout", loraDropout, "use a fraction in [0, 1)") }
      for m in loraTargetModules where !RecipeKeys.targetableModules.contains(m) {
        throw RecipeError("unknown target module \"\(m)\"; use all-linear or some of "
          + RecipeKeys.targetableModules.joined(separator: ", "))
      }
      try validateLoRAConfig()
    }
    try validatePreference()
    try validateClassification()
    try validateGRPO()
    try validatePPO()
    try validateKTO()
    if let chatTemplate, chatTemplate != "alpaca", !ChatTemplate.builtinNames.contains(chatTemplate.lowercased()) {
      throw fail("chat_template", chatTemplate,
                 "use alpaca or one of \(ChatTemplate.builtinNames.joined(separator: ", ")) (default: the model's own)")
    }
    // The schedule's name and kwargs; the real step count is known once the data is loaded.
    _ = try schedule(steps: maxSteps > 0 ? maxSteps : 1_000_000)

    if checkFiles {
      for (key, path) in [("data", data), ("eval_data", evalData)] {
        guard let path else { continue }
        try Self.checkDataFile(path, key: key)
      }
      try Self.checkOutput(outputDir, mode: mode)
    }
  }

  /// A dataset path must be a readable regular file; a directory or a missing path is named
  /// as what it is.
  static func checkDataFile(_ path: String, key: String) throws {
    var isDir: ObjCBool = false
    guard FileManager.default.fileExists(atPath: path, isDirectory: &isDir) else {
      throw RecipeError("\(key): no such file \(path)")
    }
    guard !isDir.boolValue else {
      throw RecipeError("\(key): \(path) is a directory; give a JSON or JSONL file (the dataset itself)")
    }
    guard FileManager.default.isReadableFile(atPath: path) else {
      throw RecipeError("\(key): \(path) is not readable; check its permissions")
    }
  }

  /// Settings a classification run cannot honour: packing (one sentence per row), adapters
  /// and 16-bit activations (the encoder trains in full f32 fine-tuning).
  func validateClassification() throws {
    guard objective.isEncoder else { return }
    let o = objective.rawValue
    if packing { throw RecipeError("packing applies to SFT only; --objective \(o) trains one sentence or piece per row (drop packing)") }
    if method == .qlora || (method == .lora && objective == .mlm) {
      throw RecipeError("method = \(method.rawValue) is not available for --objective \(o): "
        + (objective == .mlm ? "masked-LM training runs with --method full" : "use --method lora or full"))
    }
    if bf16 || fp16 {
      throw RecipeError("\(bf16 ? "bf16" : "fp16") is not available for --objective \(o): the encoder trains in f32 "
        + "(drop it)")
    }
    if gradientCheckpointing {
      throw RecipeError("gradient_checkpointing is not available for --objective \(o) (the encoder keeps "
        + "every layer's activations; lower --batch-size instead)")
    }
    guard mlmProbability > 0, mlmProbability < 1 else {
      throw RecipeError("mlm_probability = \(mlmProbability) is invalid: use a share in (0, 1) such as 0.15")
    }
  }

  /// The adapter settings as PEFT would take them (target parameters, dropout and DoRA with them).
  func validateLoRAConfig() throws {
    do { try loraConfig.validate(modules: RecipeKeys.targetableModules) } catch let e as PEFTError {
      throw RecipeError(e.message)
    }
  }

  /// The DPO / reward settings (and SFT-only ones given to a preference objective).
  func validatePreference() throws {
    guard objective.isPreference else { return }
    let name = objective.rawValue
    if packing { throw RecipeError("packing applies to SFT only; --objective \(name) trains on whole pairs (drop packing)") }
    if trainOnPrompt {
      throw RecipeError("train_on_prompt applies to SFT only; --objective \(name) scores the answers (drop train_on_prompt)")
    }
    guard promptLimit >= 1, promptLimit < maxSeqLength else {
      throw RecipeError("max_prompt_length = \(promptLimit) is invalid: it must be at least 1 and below "
        + "max_length (max_seq_length) = \(maxSeqLength), so the answers keep some room")
    }
    if objective == .dpo || objective == .orpo {
      do { try dpoLoss.validate() } catch let e as PreferenceLossError { throw RecipeError(e.description) }
      if objective == .orpo, precomputeRefLogProbs {
        throw RecipeError("precompute_ref_log_probs applies to dpo; ORPO has no reference model (drop it)")
      }
    } else {
      guard margin.isFinite else { throw RecipeError("margin = \(margin) is invalid: use a finite number") }
    }
  }

  /// The output directory must be creatable and writable; one that holds files is refused
  /// unless the run overwrites it or resumes into it.
  static func checkOutput(_ path: String, mode: OutputMode) throws {
    let fm = FileManager.default
    var isDir: ObjCBool = false
    if fm.fileExists(atPath: path, isDirectory: &isDir) {
      guard isDir.boolValue else { throw RecipeError("output_dir \(path) is a file; name a directory") }
      let contents = (try? fm.contentsOfDirectory(atPath: path)) ?? []
      switch mode {
      case .refuseExisting where !contents.isEmpty:
        throw RecipeError("output_dir \(path) is not empty; pass --overwrite to replace it or --resume to continue its run")
      case .resume where contents.isEmpty:
        throw RecipeError("--resume: \(path) is empty; there is no run to continue (drop --resume)")
      case .resume:
        // A resumed run appends to metrics.jsonl and rewrites files in place: a symbolic link
        // there would carry those writes outside the output directory.
        for name in contents.sorted() {
          let entry = (path as NSString).appendingPathComponent(name)
          if let target = try? fm.destinationOfSymbolicLink(atPath: entry) {
            throw RecipeError("--resume: \(entry) is a symbolic link (to \(target)); a run writes only inside its "
              + "output directory: replace the link with the file or directory itself")
          }
        }
      default: break
      }
      guard access(path, W_OK) == 0 else {
        throw RecipeError("output_dir: cannot write into \(path) (\(String(cString: strerror(errno))))")
      }
    } else {
      if mode == .resume { throw RecipeError("--resume: \(path) does not exist; there is no run to continue") }
      // The nearest existing ancestor must be a writable directory.
      var parent = URL(fileURLWithPath: path).standardizedFileURL.deletingLastPathComponent()
      while !fm.fileExists(atPath: parent.path), parent.path != "/" { parent = parent.deletingLastPathComponent() }
      guard fm.fileExists(atPath: parent.path, isDirectory: &isDir), isDir.boolValue, access(parent.path, W_OK) == 0 else {
        throw RecipeError("output_dir: cannot create \(path): \(parent.path) is not a writable directory")
      }
    }
  }
}
