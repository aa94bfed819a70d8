import ArgumentParser
import Foundation
import VKFData
import VKFTrain

/// `vkfinetune train`: LoRA, QLoRA or full fine-tuning of a model on an SFT data file.
struct TrainCommand: ParsableCommand {
  static let configuration = CommandConfiguration(
    commandName: "train",
    abstract: "Fine-tune a model (LoRA, QLoRA or full): SFT, DPO or a reward model.",
    discussion: """
      Settings come from --config recipe.yaml (Hugging Face TrainingArguments / PEFT names; \
      axolotl and LLaMA-Factory spellings such as micro_batch_size, cutoff_len, lora_rank, \
      train_on_inputs are accepted), then the flags, which win. --dry-run --print-config shows \
      the resolved settings without loading anything. LoRA and QLoRA write a PEFT adapter \
      directory (adapter_model.safetensors + adapter_config.json) to --output, full fine-tuning \
      a Hugging Face model directory; metrics.jsonl, the loss curve and checkpoint-<step>/ \
      directories go there too. An existing non-empty --output is refused unless --overwrite \
      (start again) or --resume (continue from its last checkpoint). \
      --objective dpo trains on preference pairs against the reference model (the adapter \
      switched off, or log-probs precomputed once for full fine-tuning, cached in \
      reference_logps.json); --batch-size counts pairs. --objective reward trains a scalar \
      head on the last non-pad token and writes a PEFT SEQ_CLS adapter (with the head in \
      modules_to_save) or a LlamaForSequenceClassification directory; score it with \
      `vkfinetune score`. --objective orpo trains on the same pairs with TRL's ORPO loss \
      (the chosen answers' NLL minus beta·log σ(log odds ratio)), no reference model. \
      --objective grpo samples --num-generations completions of each prompt ({prompt} or \
      {prompt: [messages]} records, other fields go to the reward functions) with the policy \
      every step, scores them with the recipe's reward_functions and/or --reward-model, and \
      trains TRL's GRPO loss; --batch-size counts completions. --objective kto trains TRL's \
      KTO on unpaired {prompt, completion, label} records (or pairs, split into a desirable and \
      an undesirable answer) against the adapter-disabled reference. --objective ppo samples \
      one completion of each prompt per step, scores it with --reward-model, and trains TRL's \
      PPO (per-token KL penalty, GAE, clipped policy and value losses) with a value head on the \
      policy's backbone; it writes the adapter and value_head.safetensors.
      """)

  @OptionGroup var backendOptions: BackendOptions

  @Option(help: "Recipe file (YAML) with the run's settings; flags override it.")
  var config: String?

  // MARK: - What and where
  @Option(help: "Model: a Hugging Face directory, a .gguf file, or org/name in the Hugging Face cache.")
  var model: String?
  @Option(help: "Training data: .json or .jsonl (alpaca, prompt/response, messages, sharegpt, text).")
  var data: String?
  @Option(help: "Validation data file (default: --val-set-size of --data, or none).")
  var evalData: String?
  @Option(help: "Output directory (adapter or model, metrics, checkpoints).")
  var output: String?
  @Option(help: "lora, qlora or full (default lora).")
  var method: String?
  @Option(help: "sft (default), dpo, orpo, reward, grpo, kto, ppo, classification or mlm; dpo, orpo and reward train on preference pairs ({prompt, chosen, rejected} or hh-rlhf transcripts); grpo and ppo on prompts with rewards; classification ({text, label}) and mlm ({text}) train a BERT encoder (--method full).")
  var objective: String?

  // MARK: - Optimisation
  @Option(help: "Peak learning rate (default 2e-4).")
  var learningRate: Double?
  @Option(help: "Passes over the data when --max-steps is not set; a fraction ends the last one early (default 1).")
  var epochs: Double?
  @Option(help: "Optimizer steps of the run (overrides --epochs); -1, as in transformers, leaves it unset.")
  var maxSteps: Int?
  @Option(help: "Rows per micro-batch, per_device_train_batch_size (default 4).")
  var batchSize: Int?
  @Option(help: "Micro-batches per optimizer step (default 1).")
  var gradientAccumulationSteps: Int?
  @Option(help: "LR schedule: \(LRSchedule.supportedTypes.joined(separator: ", ")) (default linear).")
  var lrScheduler: String?
  @Option(help: "Warmup as a fraction of the run (default 0).")
  var warmupRatio: Double?
  @Option(help: "Warmup steps (default 0).")
  var warmupSteps: Double?
  @Option(help: "AdamW weight decay (default 0).")
  var weightDecay: Double?
  @Option(help: "Gradient-norm clip, 0 = off (default 1).")
  var maxGradNorm: Double?
  @Option(help: "Where AdamW's state lives: auto, device or host (default auto).")
  var optimizerState: String?
  @Option(help: "Device memory training may use, e.g. 6GiB; a run estimated above it is refused with advice.")
  var memoryBudget: String?

  // MARK: - Adapter
  @Option(help: "LoRA rank r (default 8).")
  var loraR: Int?
  @Option(help: "LoRA alpha (default 16).")
  var loraAlpha: Double?
  @Option(help: "LoRA dropout in [0, 1) (default 0).")
  var loraDropout: Double?
  @Option(help: "Adapted projections: comma list of q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj,lm_head or all-linear (default).")
  var loraTargetModules: String?
  @Option(help: "Mixture-of-experts models: adapted expert parameters, mlp.experts.gate_up_proj,mlp.experts.down_proj (PEFT's target_parameters; default none).")
  var loraTargetParameters: String?
  @Flag(inversion: .prefixedNo, help: "rsLoRA scaling alpha/√r.")
  var useRslora: Bool?
  @Flag(inversion: .prefixedNo, help: "DoRA (weight-decomposed LoRA).")
  var useDora: Bool?
  @Flag(inversion: .prefixedNo, help: "QLoRA: double-quantise the NF4 block scales (default on).")
  var doubleQuant: Bool?
  @Flag(inversion: .prefixedNo, help: "QLoRA: keep the NF4 base in the quantisation cache and load it from there on later runs (default on).")
  var quantizationCache: Bool?
  @Option(help: "Quantisation-aware training (--method full): int8 (per-channel, as `quantize`) or int4 (llama.cpp's Q4_0, as `export --outtype q4_0`).")
  var qat: String?
  @Option(help: "QLoRA's NF4 base cache (default $XDG_CACHE_HOME/vkfinetune/quantized, i.e. ~/.cache/vkfinetune/quantized).")
  var quantizationCacheDir: String?

  // MARK: - Data
  @Option(name: [.customLong("max-seq-length"), .customLong("max-length")],
          help: "Longest example in tokens; for dpo/reward the prompt + longer answer (TRL max_length) (default 2048).")
  var maxSeqLength: Int?
  @Option(help: "Seed of adapter init, dropout, shuffling and the split (default 42).")
  var seed: Int?
  @Option(help: "Fraction of --data held out for validation in [0, 1), or a whole count of examples (default 0).")
  var valSetSize: Double?
  @Option(help: "Evaluate on at most the first N validation examples (pairs), 0 = all (default 0).")
  var maxEvalSamples: Int?
  @Option(help: "Record format: \(DatasetFormat.allCases.map(\.rawValue).joined(separator: ", ")) (default auto).")
  var datasetFormat: String?
  @Option(help: "Chat template: a built-in name or alpaca (default: the model's own).")
  var chatTemplate: String?
  @Flag(inversion: .prefixedNo, help: "Pack short examples into full rows.")
  var packing: Bool?
  @Flag(inversion: .prefixedNo, help: "Train on prompt tokens too (default: only the responses).")
  var trainOnPrompt: Bool?
  @Flag(inversion: .prefixedNo, help: "Recompute activations in the backward pass (less memory, ~30% slower).")
  var gradientCheckpointing: Bool?
  @Flag(inversion: .prefixedNo, help: "Mixed precision: frozen weights and saved activations stored bfloat16, f32 accumulation and master weights.")
  var bf16: Bool?
  @Flag(inversion: .prefixedNo, help: "Mixed precision: frozen weights and saved activations stored float16 (±65504), f32 accumulation and master weights.")
  var fp16: Bool?

  // MARK: - Preference objectives (TRL names)
  @Option(help: "DPO β: rewards are β·(policy − reference) log-ratios (default 0.1); GRPO: the KL weight (default 0).")
  var beta: Double?
  @Option(help: "DPO loss: \(DPOLossType.allCases.map(\.rawValue).joined(separator: ", ")) (default sigmoid); GRPO: \(GRPOLossType.allCases.map(\.rawValue).joined(separator: ", ")) (default dapo).")
  var lossType: String?
  @Option(help: "KTO: weight of the desirable answers' loss (default 1).")
  var desirableWeight: Double?
  @Option(help: "KTO: weight of the undesirable answers' loss (default 1).")
  var undesirableWeight: Double?
  @Option(help: "GRPO: completions sampled per prompt (default 8).")
  var numGenerations: Int?
  @Option(help: "GRPO / PPO: tokens per completion (default 512; PPO 53).")
  var maxCompletionLength: Int?
  @Option(help: "GRPO / PPO: sampling temperature (default 1; PPO 0.7).")
  var temperature: Double?
  @Option(help: "GRPO / PPO: a reward model from `train --objective reward` (its output directory: adapter or merged model).")
  var rewardModel: String?
  @Option(help: "PPO: weight of the per-token KL penalty (default 0.05).")
  var klCoef: Double?
  @Option(help: "PPO: passes over each rollout batch (default 4).")
  var numPpoEpochs: Int?
  @Option(help: "Label smoothing ε of the sigmoid and robust DPO losses, in [0, 0.5) (default 0).")
  var labelSmoothing: Double?
  @Option(help: "Weight of an NLL term on the chosen answers (RPO; default none).")
  var rpoAlpha: Double?
  @Option(help: "Prompt tokens kept when a pair exceeds --max-length (default 512, or max-length / 2 when shorter).")
  var maxPromptLength: Int?
  @Flag(inversion: .prefixedNo, help: "LoRA DPO: compute the reference log-probs once before training (full fine-tuning always does).")
  var precomputeRefLogProbs: Bool?
  @Option(help: "Reward objective: margin m in −log σ(r_chosen − r_rejected − m) (default 0).")
  var margin: Double?
  @Option(help: "mlm objective: share of the tokens masked (default 0.15; 80 % [MASK], 10 % random, 10 % kept).")
  var mlmProbability: Double?
  @Option(help: "Mixture-of-experts models: load-balancing loss weight, 0 = off (default: sft the config's when output_router_logits, dpo the config's, reward none).")
  var routerAuxLossCoef: Double?

  // MARK: - Logging, evaluation, checkpoints
  @Option(help: "Evaluate every N steps, or every fraction of the run in (0, 1); 0 = at the end (default 0).")
  var evalSteps: Double?
  @Flag(inversion: .prefixedNo, help: "Evaluate once before the first step, the curve's baseline (default on).")
  var evalOnStart: Bool?
  @Option(help: "Checkpoint every N steps, or every fraction of the run in (0, 1); 0 = at the end (default 0).")
  var saveSteps: Double?
  @Option(help: "Keep at most N checkpoints; 0 = all (default 0).")
  var saveTotalLimit: Int?
  @Option(help: "Log every N steps, or every fraction of the run in (0, 1) (default 1).")
  var loggingSteps: Double?
  @Option(help: "Stop after N evaluations without a lower validation loss; 0 = off (default 0).")
  var earlyStoppingPatience: Int?

  // MARK: - Run control
  @Flag(help: "Replace a non-empty --output.")
  var overwrite = false
  @Flag(help: "Continue the run in --output from its last checkpoint.")
  var resume = false
  @Flag(help: "Check the settings and stop (nothing is loaded or written).")
  var dryRun = false
  @Flag(help: "Print the resolved settings (YAML that --config reads back).")
  var printConfig = false
  @Option(help: "Format of --print-config: yaml or json.")
  var printFormat = "yaml"

  /// The flags given, as recipe entries that override the file.
  var flagEntries: [RecipeEntry] {
    var out: [RecipeEntry] = []
    func add(_ key: String, _ flag: String, _ value: Any?) {
      guard let value else { return }
      let text = (value as? Double).map(StepInterval.formatted) ?? "\(value)"
      out.append(RecipeEntry(key: key, value: .scalar(text), origin: "--\(flag)"))
    }
    add("model", "model", model); add("data", "data", data); add("eval_data", "eval-data", evalData)
    add("output_dir", "output", output); add("method", "method", method)
    add("objective", "objective", objective)
    add("learning_rate", "learning-rate", learningRate); add("num_train_epochs", "epochs", epochs)
    add("max_steps", "max-steps", maxSteps); add("per_device_train_batch_size", "batch-size", batchSize)
    add("gradient_accumulation_steps", "gradient-accumulation-steps", gradientAccumulationSteps)
    add("lr_scheduler_type", "lr-scheduler", lrScheduler); add("warmup_ratio", "warmup-ratio", warmupRatio)
    add("warmup_steps", "warmup-steps", warmupSteps); add("weight_decay", "weight-decay", weightDecay)
    add("max_grad_norm", "max-grad-norm", maxGradNorm); add("optimizer_state", "optimizer-state", optimizerState)
    add("memory_budget", "memory-budget", memoryBudget)
    add("lora_r", "lora-r", loraR); add("lora_alpha", "lora-alpha", loraAlpha)
    add("lora_dropout", "lora-dropout", loraDropout)
    add("lora_target_modules", "lora-target-modules", loraTargetModules)
    add("lora_target_parameters", "lora-target-parameters", loraTargetParameters)
    add("use_rslora", "use-rslora", useRslora); add("use_dora", "use-dora", useDora)
    add("double_quant", "double-quant", doubleQuant); add("quantization_cache", "quantization-cache", quantizationCache)
    add("quantization_cache_dir", "quantization-cache-dir", quantizationCacheDir); add("qat", "qat", qat)
    add("max_seq_length", "max-seq-length", maxSeqLength); add("seed", "seed", seed)
    add("val_set_size", "val-set-size", valSetSize); add("dataset_format", "dataset-format", datasetFormat)
    add("chat_template", "chat-template", chatTemplate); add("packing", "packing", packing)
    add("train_on_prompt", "train-on-prompt", trainOnPrompt)
    add("gradient_checkpointing", "gradient-checkpointing", gradientCheckpointing)
    add("bf16", "bf16", bf16); add("fp16", "fp16", fp16)
    add("eval_steps", "eval-steps", evalSteps); add("eval_on_start", "eval-on-start", evalOnStart)
    add("save_steps", "save-steps", saveSteps)
    add("save_total_limit", "save-total-limit", saveTotalLimit); add("logging_steps", "logging-steps", loggingSteps)
    add("early_stopping_patience", "early-stopping-patience", earlyStoppingPatience)
    add("max_eval_samples", "max-eval-samples", maxEvalSamples)
    add("beta", "beta", beta); add("loss_type", "loss-type", lossType)
    add("label_smoothing", "label-smoothing", labelSmoothing); add("rpo_alpha", "rpo-alpha", rpoAlpha)
    add("max_prompt_length", "max-prompt-length", maxPromptLength)
    add("precompute_ref_log_probs", "precompute-ref-log-probs", precomputeRefLogProbs)
    add("margin", "margin", margin)
    add("mlm_probability", "mlm-probability", mlmProbability)
    add("router_aux_loss_coef", "router-aux-loss-coef", routerAuxLossCoef)
    add("num_generations", "num-generations", numGenerations)
    add("max_completion_length", "max-completion-length", maxCompletionLength)
    add("temperature", "temperature", temperature); add("reward_model", "reward-model", rewardModel)
    add("kl_coef", "kl-coef", klCoef); add("num_ppo_epochs", "num-ppo-epochs", numPpoEpochs)
    add("desirable_weight", "desirable-weight", desirableWeight)
    add("undesirable_weight", "undesirable-weight", undesirableWeight)
    return out
  }

  /// The recipe file's settings overridden by the flags, validated.
  func resolvedSettings() throws -> TrainSettings {
    guard !(overwrite && resume) else { throw RecipeError("--overwrite and --resume contradict each other; pass one") }
    guard ["yaml", "json"].contains(printFormat) else {
      throw RecipeError("--print-format must be yaml or json, got \(printFormat)")
    }
    let file = try config.map(RecipeFile.load) ?? []
    let settings = try RecipeFile.resolve(file: file, flags: flagEntries)
    try settings.validate(output: resume ? .resume : overwrite ? .overwrite : .refuseExisting)
    return settings
  }

  func run() throws {
    let settings = try resolvedSettings()
    if printConfig { print(try settings.rendered(as: printFormat)) }
    if dryRun {
      if !printConfig { print("settings OK (dry run: nothing loaded or written)") }
      return
    }
    try TrainRun(settings: settings, backendOptions: backendOptions, resume: resume, overwrite: overwrite).run()
  }
}

extension TrainSettings {
  /// The settings as YAML (readable back by `--config`) or JSON, keys as in recipes.
  ///
  /// YAML is written as `key: <JSON value>` lines in `CodingKeys` order: JSON values are
  /// valid YAML flow values, and numbers keep their shortest form (`0.0002`, not `2e-04`).
  func rendered(as format: String) throws -> String {
    let json = try JSONEncoder.pretty.encode(self)
    if format == "json" { return String(decoding: json, as: UTF8.self) }
    guard let object = try JSONSerialization.jsonObject(with: json) as? [String: Any] else {
      throw RecipeError("cannot render the settings")
    }
    var lines: [String] = []
    for key in CodingKeys.allCases {
      guard let value = object[key.rawValue] else { continue }
      let text = try JSONSerialization.data(withJSONObject: value, options: [.fragmentsAllowed, .sortedKeys,
                                                                              .withoutEscapingSlashes])
      lines.append("\(key.rawValue): \(String(decoding: text, as: UTF8.self))")
    }
    return lines.joined(separator: "\n")
  }
}
