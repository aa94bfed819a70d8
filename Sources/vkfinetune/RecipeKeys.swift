import Foundation
import VKFData
import VKFModel
import VKFTrain

/// Every key a recipe may hold: the canonical (Hugging Face / PEFT) name, the axolotl and
/// LLaMA-Factory spellings accepted for it, and how its value lands in `TrainSettings`.
struct RecipeKey: Sendable {
  let name: String
  let aliases: [String]
  let apply: @Sendable (inout TrainSettings, RecipeEntry) throws -> Void

  init(_ name: String, _ aliases: [String] = [], _ apply: @escaping @Sendable (inout TrainSettings, RecipeEntry) throws -> Void) {
    self.name = name; self.aliases = aliases; self.apply = apply
  }
}

enum RecipeKeys {
  /// PEFT's `all-linear`: every projection of each decoder layer (not lm_head).
  static let allLinear = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
  /// Modules an adapter can target: the projections, Phi-3's fused qkv_proj / gate_up_proj,
  /// and the LM head.
  static let targetableModules = allLinear + ["qkv_proj", "gate_up_proj", "lm_head"] + BertWeights.projectionModules

  /// The key table, in the order `--print-config` writes.
  static let all: [RecipeKey] = [
    RecipeKey("model", ["base_model", "model_name_or_path"]) { s, e in s.model = try e.text() },
    RecipeKey("data", ["dataset", "train_file", "data_path", "datasets"]) { s, e in try applyData(&s, e) },
    RecipeKey("eval_data", ["eval_file", "validation_file", "eval_dataset", "test_datasets"]) { s, e in
      s.evalData = try dataPath(e)
    },
    RecipeKey("output_dir", ["output"]) { s, e in s.outputDir = try e.text() },
    RecipeKey("method", ["finetuning_type", "adapter"]) { s, e in
      // LLaMA-Factory's finetuning_type has `freeze`; axolotl's adapter has lora/qlora.
      guard let m = FineTuneMethod(rawValue: try e.choice(FineTuneMethod.allCases.map(\.rawValue))) else { return }
      s.method = m
    },
    RecipeKey("objective", ["stage"]) { s, e in
      // LLaMA-Factory's stage names the reward model `rm`.
      let choice = try e.choice(TrainObjective.allCases.map(\.rawValue) + ["rm"])
      s.objective = choice == "rm" ? .reward : TrainObjective(rawValue: choice) ?? .sft
    },
    RecipeKey("load_in_4bit", ["quantization_bit"]) { s, e in
      // axolotl `load_in_4bit: true` / LLaMA-Factory `quantization_bit: 4` turn LoRA into QLoRA.
      if e.key == "quantization_bit" {
        guard try e.int() == 4 else {
          throw RecipeError("\(e.origin): quantization_bit must be 4 (NF4); 8-bit bases are not supported")
        }
        s.method = .qlora
      } else if try e.bool() {
        s.method = .qlora
      }
    },
    RecipeKey("bf16") { s, e in
      // axolotl's `bf16: auto` means "when the hardware has it": bf16 storage needs no device
      // feature here (bit conversion in the shaders), so auto is on.
      if case .scalar(let t) = e.value, t.lowercased() == "auto" { s.bf16 = true } else { s.bf16 = try e.bool() }
    },
    RecipeKey("fp16", ["float16"]) { s, e in s.fp16 = try e.bool() },
    RecipeKey("bnb_4bit_compute_dtype", ["compute_dtype"]) { s, e in
      let names = ["float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
                   "float16": "float16", "fp16": "float16", "half": "float16"]
      let choice = try e.choice(names.keys.sorted())
      s.bnb4bitComputeDtype = names[choice] ?? choice
    },
    RecipeKey("learning_rate", ["lr"]) { s, e in s.learningRate = try e.double() },
    RecipeKey("num_train_epochs", ["num_epochs", "epochs"]) { s, e in s.numTrainEpochs = try e.double() },
    RecipeKey("max_steps") { s, e in s.maxSteps = try e.int() },
    RecipeKey("per_device_train_batch_size", ["micro_batch_size", "batch_size"]) { s, e in
      s.perDeviceTrainBatchSize = try e.int()
    },
    RecipeKey("gradient_accumulation_steps") { s, e in s.gradientAccumulationSteps = try e.int() },
    RecipeKey("lr_scheduler_type", ["lr_scheduler"]) { s, e in s.lrSchedulerType = try e.text() },
    RecipeKey("lr_scheduler_kwargs") { s, e in s.lrSchedulerKwargs = try schedulerKwargs(e) },
    RecipeKey("warmup_ratio") { s, e in s.warmupRatio = try e.double() },
    RecipeKey("warmup_steps") { s, e in s.warmupSteps = try e.double() },
    RecipeKey("weight_decay") { s, e in s.weightDecay = try e.double() },
    RecipeKey("max_grad_norm") { s, e in s.maxGradNorm = try e.double() },
    RecipeKey("adam_beta1") { s, e in s.adamBeta1 = try e.double() },
    RecipeKey("adam_beta2") { s, e in s.adamBeta2 = try e.double() },
    RecipeKey("adam_epsilon", ["adam_eps"]) { s, e in s.adamEpsilon = try e.double() },
    RecipeKey("optimizer_state") { s, e in
      s.optimizerState = OptimizerStateSetting(rawValue: try e.choice(OptimizerStateSetting.allCases.map(\.rawValue))) ?? .auto
    },
    RecipeKey("optim", ["optimizer"]) { s, e in
      // HF `optim` names: plain AdamW keeps the state on the device, the paged ones let it page out.
      switch try e.choice(["adamw_torch", "adamw_torch_fused", "adamw_hf", "adamw", "paged_adamw_32bit", "paged_adamw"]) {
      case "paged_adamw_32bit", "paged_adamw": s.optimizerState = .auto
      default: s.optimizerState = .device
      }
    },
    RecipeKey("memory_budget", ["max_memory"]) { s, e in s.memoryBudget = try e.bytes() },
    RecipeKey("lora_r", ["r", "lora_rank"]) { s, e in s.loraR = try e.int() },
    RecipeKey("lora_alpha") { s, e in s.loraAlpha = try e.double() },
    RecipeKey("lora_dropout") { s, e in s.loraDropout = try e.double() },
    RecipeKey("lora_target_modules", ["target_modules", "lora_target"]) { s, e in s.loraTargetModules = try targets(e) },
    RecipeKey("lora_target_parameters", ["target_parameters"]) { s, e in s.loraTargetParameters = try e.names() },
    RecipeKey("lora_target_linear") { s, e in if try e.bool() { s.loraTargetModules = allLinear } },
    RecipeKey("use_rslora", ["peft_use_rslora"]) { s, e in s.useRslora = try e.bool() },
    RecipeKey("use_dora", ["peft_use_dora"]) { s, e in s.useDora = try e.bool() },
    RecipeKey("double_quant", ["bnb_4bit_use_double_quant", "double_quantization"]) { s, e in
      s.doubleQuant = try e.bool()
    },
    RecipeKey("quantization_cache") { s, e in s.quantizationCache = try e.bool() },
    RecipeKey("qat", ["quantization_aware_training"]) { s, e in
      switch try e.text().lowercased() {
      case "none", "false", "no": s.qat = nil
      case "int8": s.qat = .int8Channel
      case "int4", "q4_0": s.qat = .q4_0
      default: throw RecipeError("\(e.origin): qat must be int8, int4 or none, got \(try e.text())")
      }
    },
    RecipeKey("quantization_cache_dir", ["quantization_dir"]) { s, e in s.quantizationCacheDir = try e.text() },
    RecipeKey("max_seq_length", ["cutoff_len", "sequence_len", "max_length", "max_seq_len"]) { s, e in
      s.maxSeqLength = try e.int()
    },
    RecipeKey("seed") { s, e in s.seed = try e.int() },
    RecipeKey("eval_steps") { s, e in s.evalSteps = try e.double() },
    RecipeKey("eval_on_start") { s, e in s.evalOnStart = try e.bool() },
    RecipeKey("save_steps") { s, e in s.saveSteps = try e.double() },
    RecipeKey("save_total_limit") { s, e in s.saveTotalLimit = try e.int() },
    RecipeKey("logging_steps") { s, e in s.loggingSteps = try e.double() },
    RecipeKey("early_stopping_patience") { s, e in s.earlyStoppingPatience = try e.int() },
    RecipeKey("val_set_size", ["validation_fraction", "val_size"]) { s, e in s.valSetSize = try e.double() },
    RecipeKey("max_eval_samples") { s, e in s.maxEvalSamples = try e.int() },
    RecipeKey("gradient_checkpointing") { s, e in s.gradientCheckpointing = try e.bool() },
    RecipeKey("packing", ["sample_packing"]) { s, e in s.packing = try e.bool() },
    RecipeKey("train_on_prompt", ["train_on_inputs"]) { s, e in s.trainOnPrompt = try e.bool() },
    RecipeKey("chat_template", ["template"]) { s, e in s.chatTemplate = try e.text() },
    RecipeKey("dataset_format", ["format"]) { s, e in s.datasetFormat = try format(e) },
    RecipeKey("beta", ["pref_beta", "rl_beta", "dpo_beta"]) { s, e in s.beta = try e.double() },
    RecipeKey("loss_type", ["pref_loss"]) { s, e in
      // LLaMA-Factory's `stage: dpo` + `pref_loss: orpo` is TRL's ORPOTrainer: the orpo objective
      // (applied after `objective` in table order, so the file's order does not matter).
      let grpo = GRPOLossType.allCases.map(\.rawValue), dpo = DPOLossType.allCases.map(\.rawValue)
      let kto = KTOLossType.allCases.map(\.rawValue)
      let choice = try e.choice(s.objective == .grpo ? grpo : s.objective == .kto ? kto : dpo + ["orpo"])
      if choice == "orpo" {
        guard [.dpo, .orpo].contains(s.objective) else {
          throw RecipeError("\(e.origin): \(e.key) orpo is a preference loss; it needs objective dpo or orpo")
        }
        s.objective = .orpo
      } else {
        s.lossType = choice
      }
    },
    RecipeKey("label_smoothing", ["dpo_label_smoothing"]) { s, e in s.labelSmoothing = try e.double() },
    RecipeKey("rpo_alpha") { s, e in s.rpoAlpha = try e.double() },
    RecipeKey("max_prompt_length") { s, e in s.maxPromptLength = try e.int() },
    RecipeKey("precompute_ref_log_probs") { s, e in s.precomputeRefLogProbs = try e.bool() },
    RecipeKey("margin") { s, e in s.margin = try e.double() },
    RecipeKey("mlm_probability") { s, e in s.mlmProbability = try e.double() },
    RecipeKey("router_aux_loss_coef", ["moe_aux_loss_coef"]) { s, e in s.routerAuxLossCoef = try e.double() },
    RecipeKey("num_generations") { s, e in s.numGenerations = try e.int() },
    RecipeKey("max_completion_length", ["max_new_tokens", "response_length"]) { s, e in s.maxCompletionLengthSetting = try e.int() },
    RecipeKey("epsilon", ["cliprange"]) { s, e in s.epsilon = try e.double() },
    RecipeKey("epsilon_high") { s, e in s.epsilonHigh = try e.double() },
    RecipeKey("scale_rewards") { s, e in
      let choice = try e.choice(GRPORewardScaling.allCases.map(\.rawValue) + ["true", "false"])
      s.scaleRewards = choice == "true" ? "group" : choice == "false" ? "none" : choice
    },
    RecipeKey("temperature") { s, e in s.temperatureSetting = try e.double() },
    RecipeKey("top_k") { s, e in s.topK = try e.int() },
    RecipeKey("top_p") { s, e in s.topP = try e.double() },
    RecipeKey("repetition_penalty") { s, e in s.repetitionPenalty = try e.double() },
    RecipeKey("num_iterations") { s, e in s.numIterations = try e.int() },
    RecipeKey("mask_truncated_completions") { s, e in s.maskTruncatedCompletions = try e.bool() },
    RecipeKey("use_bias_correction_kl") { s, e in s.useBiasCorrectionKL = try e.bool() },
    RecipeKey("reward_functions", ["reward_funcs"]) { s, e in s.rewardFunctions = try rewardFunctions(e) },
    RecipeKey("reward_weights") { s, e in s.rewardWeights = try numbers(e) },
    RecipeKey("reward_model", ["reward_model_path"]) { s, e in s.rewardModel = try e.text() },
    RecipeKey("desirable_weight") { s, e in s.desirableWeight = try e.double() },
    RecipeKey("undesirable_weight") { s, e in s.undesirableWeight = try e.double() },
    RecipeKey("kl_coef", ["init_kl_coef"]) { s, e in s.klCoef = try e.double() },
    RecipeKey("kl_estimator") { s, e in s.klEstimator = try e.choice(PPOKLEstimator.allCases.map(\.rawValue)) },
    RecipeKey("cliprange_value") { s, e in s.cliprangeValue = try e.double() },
    RecipeKey("vf_coef") { s, e in s.vfCoef = try e.double() },
    RecipeKey("gamma") { s, e in s.gamma = try e.double() },
    RecipeKey("lam") { s, e in s.lam = try e.double() },
    RecipeKey("num_ppo_epochs", ["ppo_epochs"]) { s, e in s.numPPOEpochs = try e.int() },
    RecipeKey("num_mini_batches") { s, e in s.numMiniBatches = try e.int() },
    RecipeKey("whiten_rewards") { s, e in s.whitenRewards = try e.bool() },
    RecipeKey("missing_eos_penalty") { s, e in s.missingEOSPenalty = try e.double() },
  ]

  /// `reward_functions`: a list of mappings of scalars ({type: regex, pattern: …}), or of
  /// bare type names (`[valid_json, think_format]`).
  static func rewardFunctions(_ e: RecipeEntry) throws -> [[String: String]] {
    guard case .list(let items) = e.value else {
      throw RecipeError("\(e.origin): \(e.key) must be a list of reward functions ({type: …, …}), got \(e.value.shortText)")
    }
    return try items.enumerated().map { i, item in
      switch item {
      case .scalar(let type): return ["type": type]
      case .map(let pairs):
        var out: [String: String] = [:]
        for (k, v) in pairs {
          guard case .scalar(let text) = v else {
            throw RecipeError("\(e.origin): \(e.key)[\(i)].\(k) must be a single value, got \(v.shortText)")
          }
          out[k] = text
        }
        return out
      default:
        throw RecipeError("\(e.origin): \(e.key)[\(i)] must be a mapping such as {type: numeric_match, column: answer}")
      }
    }
  }

  /// A list of numbers (or one number, or a comma-separated string).
  static func numbers(_ e: RecipeEntry) throws -> [Double] {
    try e.names().map {
      guard let v = Double($0), v.isFinite else {
        throw RecipeError("\(e.origin): \(e.key) must be a list of numbers, got \"\($0)\"")
      }
      return v
    }
  }

  /// Keys of the tools users copy recipes from that ask for something vkfinetune does not do.
  static let unsupported: [String: String] = [
    "tf32": "TF32 is a CUDA matmul mode; vkfinetune accumulates in fp32 (use bf16 or fp16 for mixed precision)",
    "pure_bf16": "pure bf16 (no fp32 master weights) is not supported; use bf16: true (fp32 masters, bf16 frozen weights)",
    "load_in_8bit": "8-bit bases are not supported; use method: qlora (NF4) or lora",
    "deepspeed": "multi-device training is not supported; remove it",
    "fsdp": "multi-device training is not supported; remove it",
  ]

  /// Canonical name of every key and alias.
  static let byName: [String: RecipeKey] = {
    var map: [String: RecipeKey] = [:]
    for key in all {
      map[key.name] = key
      for a in key.aliases { map[a] = key }
    }
    return map
  }()

  /// "did you mean …" for an unknown key: the closest known name within a third of its length.
  static func suggestion(for key: String) -> String? {
    let limit = max(2, key.count / 3)
    let best = byName.keys.map { ($0, editDistance(key.lowercased(), $0)) }
      .filter { $0.1 <= limit }.min { $0.1 != $1.1 ? $0.1 < $1.1 : $0.0 < $1.0 }
    return best.map { byName[$0.0]?.name ?? $0.0 }
  }

  /// Levenshtein distance.
  static func editDistance(_ a: String, _ b: String) -> Int {
    let a = Array(a), b = Array(b)
    var row = Array(0...b.count)
    for i in 1...max(1, a.count) where !a.isEmpty {
      var previous = row[0]; row[0] = i
      for j in stride(from: 1, through: b.count, by: 1) {
        let current = row[j]
        row[j] = min(row[j] + 1, row[j - 1] + 1, previous + (a[i - 1] == b[j - 1] ? 0 : 1))
        previous = current
      }
    }
    return a.isEmpty ? b.count : row[b.count]
  }

  // MARK: - Typed values

  /// `lora_target_modules`: names, a comma string, `all-linear` (PEFT) or `all` (LLaMA-Factory);
  /// `model.layers.0.self_attn.q_proj`-style paths match by their last component, as PEFT does.
  static func targets(_ e: RecipeEntry) throws -> [String] {
    let names = try e.names()
    guard !names.isEmpty else { throw RecipeError("\(e.origin): \(e.key) is empty; name at least one module or all-linear") }
    if names.count == 1, ["all-linear", "all_linear", "all"].contains(names[0].lowercased()) { return allLinear }
    var out: [String] = []
    for name in names {
      let leaf = String(name.split(separator: ".").last ?? Substring(name))
      guard targetableModules.contains(leaf) else {
        let hint = targetableModules.min { editDistance(leaf, $0) < editDistance(leaf, $1) }.map { " (did you mean \($0)?)" } ?? ""
        throw RecipeError("\(e.origin): unknown target module \"\(name)\"\(hint); "
          + "use all-linear or some of \(targetableModules.joined(separator: ", "))")
      }
      if !out.contains(leaf) { out.append(leaf) }
    }
    return out
  }

  static func format(_ e: RecipeEntry) throws -> DatasetFormat {
    let s = try e.text().lowercased()
    // axolotl dataset types.
    let aliases: [String: DatasetFormat] = ["chat_template": .messages, "completion": .text, "openai": .messages]
    if let f = DatasetFormat(rawValue: s) ?? aliases[s] { return f }
    throw RecipeError("\(e.origin): \(e.key) must be one of \(DatasetFormat.allCases.map(\.rawValue).joined(separator: ", ")), "
      + "got \(e.value.shortText)")
  }

  /// A data file: a path, or axolotl's `datasets: [{path, type}]` with exactly one entry.
  static func dataPath(_ e: RecipeEntry) throws -> String {
    switch e.value {
    case .scalar(let s): return s
    case .list(let items):
      guard items.count == 1 else {
        throw RecipeError("\(e.origin): \(e.key) lists \(items.count) datasets; vkfinetune trains on one file (concatenate them)")
      }
      return try dataPath(RecipeEntry(key: e.key, value: items[0], origin: e.origin))
    case .map(let pairs):
      guard let path = pairs.first(where: { $0.0 == "path" || $0.0 == "data_files" })?.1 else {
        throw RecipeError("\(e.origin): \(e.key) entry needs a path")
      }
      return try dataPath(RecipeEntry(key: e.key, value: path, origin: e.origin))
    case .null:
      throw RecipeError("\(e.origin): \(e.key) is empty")
    }
  }

  /// `data`, plus the format an axolotl `datasets` entry names in `type`.
  static func applyData(_ s: inout TrainSettings, _ e: RecipeEntry) throws {
    s.data = try dataPath(e)
    var entry = e.value
    if case let .list(items) = entry, items.count == 1 { entry = items[0] }
    if case let .map(pairs) = entry, let type = pairs.first(where: { $0.0 == "type" })?.1 {
      s.datasetFormat = try format(RecipeEntry(key: "\(e.key).type", value: type, origin: e.origin))
    }
  }

  /// `lr_scheduler_kwargs`: a mapping decoded into VKFTrain's kwargs (unknown keys are kept and
  /// rejected by name when the schedule is built).
  static func schedulerKwargs(_ e: RecipeEntry) throws -> LRSchedulerKwargs {
    guard case .map = e.value else { throw RecipeError("\(e.origin): \(e.key) must be a mapping such as {num_cycles: 0.5}") }
    do {
      let data = try JSONSerialization.data(withJSONObject: e.value.jsonObject)
      return try JSONDecoder().decode(LRSchedulerKwargs.self, from: data)
    } catch {
      throw RecipeError("\(e.origin): \(e.key) has a value of the wrong type (numbers for num_cycles, min_lr, …; "
        + "strings for warmup_type, decay_type)")
    }
  }
}
