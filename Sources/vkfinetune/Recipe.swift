import Foundation
import VKFCore
import VKFData
import VKFPEFT
import VKFTrain

/// What `train` fine-tunes: low-rank adapters on a dense base, on an NF4 base, or every weight.
enum FineTuneMethod: String, Codable, CaseIterable, Sendable {
  /// LoRA adapters over the frozen fp32 base (PEFT adapter directory out).
  case lora
  /// LoRA adapters over the base quantised to NF4 (PEFT adapter directory out).
  case qlora
  /// Every parameter trained (Hugging Face model directory out).
  case full
}

/// What `train` optimises: next-token cross-entropy, a DPO-family preference loss, or a
/// reward model's pairwise loss.
enum TrainObjective: String, Codable, CaseIterable, Sendable {
  /// Supervised fine-tuning on SFT records.
  case sft
  /// Direct preference optimisation on preference pairs (TRL's DPOTrainer).
  case dpo
  /// A scalar reward head trained on preference pairs (TRL's RewardTrainer).
  case reward
  /// Odds-ratio preference optimisation on preference pairs, no reference model (TRL's
  /// ORPOTrainer).
  case orpo
  /// Sequence classification of labelled sentences by an encoder (BERT): transformers'
  /// run_glue / Trainer with BertForSequenceClassification.
  case classification
  /// Masked-language-model training of an encoder (BERT) on plain text: transformers'
  /// run_mlm with BertForMaskedLM.
  case mlm
  /// Group relative policy optimisation on prompts, with completions sampled in the loop and
  /// scored by reward functions (TRL's GRPOTrainer).
  case grpo
  /// Kahneman-Tversky optimisation on unpaired desirable / undesirable answers (TRL's
  /// KTOTrainer); preference pairs are split into one of each.
  case kto
  /// Proximal policy optimisation on prompts: one completion per prompt sampled in the loop,
  /// scored by a reward model, with a value head, GAE and clipped losses (TRL's PPOTrainer).
  case ppo

  /// True for the objectives that train a BERT encoder.
  var isEncoder: Bool { self == .classification || self == .mlm }

  /// True for the objectives that train on chosen/rejected pairs.
  var isPreference: Bool { self == .dpo || self == .reward || self == .orpo }
}

/// Where AdamW's moments live: on the device, in host-visible memory streamed per step, or
/// decided from the memory budget (paged optimizer).
enum OptimizerStateSetting: String, Codable, CaseIterable, Sendable {
  case auto, device, host
}

/// The resolved settings of one `train` run: recipe file, then flags, then these defaults.
///
/// Keys are Hugging Face `TrainingArguments` / PEFT `LoraConfig` names, verbatim; axolotl and
/// LLaMA-Factory spellings are accepted as aliases (see `RecipeKeys`). `--print-config` writes
/// this struct back as YAML that `--config` reads again.
struct TrainSettings: Encodable, Equatable {
  /// `model`: HF directory, .gguf file or org/name (required).
  var model: String?
  /// `data`: training data file, .json / .jsonl (required).
  var data: String?
  /// `eval_data`: validation data file; default none (see `val_set_size`).
  var evalData: String?
  /// `output_dir`: where the adapter (or model), metrics and checkpoints go (required).
  var outputDir: String?
  /// `method`: lora (default), qlora or full.
  var method: FineTuneMethod = .lora
  /// `objective`: sft (default), dpo, orpo, reward, classification or mlm (LLaMA-Factory's
  /// `stage`: sft, dpo, rm).
  var objective: TrainObjective = .sft

  /// `learning_rate`: peak learning rate. Default 2e-4 (the usual LoRA rate).
  var learningRate = 2e-4
  /// `num_train_epochs`: passes over the data when `max_steps` is unset; a fraction ends the
  /// last pass early, as in transformers. Default 1.
  var numTrainEpochs = 1.0
  /// `max_steps`: optimizer steps of the run; ≤ 0 = from `num_train_epochs` (default −1, as HF).
  var maxSteps = -1
  /// `per_device_train_batch_size`: rows per micro-batch. Default 4.
  var perDeviceTrainBatchSize = 4
  /// `gradient_accumulation_steps`: micro-batches per optimizer step. Default 1.
  var gradientAccumulationSteps = 1
  /// `lr_scheduler_type`: one of `LRSchedule.supportedTypes`. Default linear (as HF).
  var lrSchedulerType = "linear"
  /// `lr_scheduler_kwargs`: schedule extras (num_cycles, min_lr, …). Default none.
  var lrSchedulerKwargs = LRSchedulerKwargs()
  /// `warmup_ratio`: warmup as a fraction of the run, used when `warmup_steps` is 0. Default 0.
  var warmupRatio = 0.0
  /// `warmup_steps`: warmup steps (≥ 1) or a fraction of the run (< 1). Default 0.
  var warmupSteps = 0.0
  /// `weight_decay`: AdamW decoupled weight decay. Default 0 (as HF).
  var weightDecay = 0.0
  /// `max_grad_norm`: global gradient-norm clip; 0 = off. Default 1 (as HF).
  var maxGradNorm = 1.0
  /// `adam_beta1`. Default 0.9.
  var adamBeta1 = 0.9
  /// `adam_beta2`. Default 0.999.
  var adamBeta2 = 0.999
  /// `adam_epsilon`. Default 1e-8.
  var adamEpsilon = 1e-8
  /// `optimizer_state`: auto (default; host when over `memory_budget`), device or host.
  var optimizerState = OptimizerStateSetting.auto
  /// `memory_budget`: device bytes training may use; default none (no check).
  var memoryBudget: Int?

  /// `lora_r`: adapter rank. Default 8 (`LoRAConfig`'s, as PEFT).
  var loraR = LoRAConfig().r
  /// `lora_alpha`: scale numerator (s = alpha / r). Default 16 (`LoRAConfig`'s).
  var loraAlpha = Double(LoRAConfig().alpha)
  /// `lora_dropout`: dropout on the adapter input, in [0, 1). Default 0 (`LoRAConfig`'s, as PEFT).
  var loraDropout = Double(LoRAConfig().dropout)
  /// `lora_target_modules`: projections that get adapters. Default all-linear (every projection but lm_head).
  var loraTargetModules = RecipeKeys.allLinear
  /// `lora_target_parameters` (PEFT's `target_parameters`): a mixture-of-experts model's expert
  /// parameters that get adapters, mlp.experts.gate_up_proj and/or mlp.experts.down_proj.
  /// Default none.
  var loraTargetParameters: [String] = []
  /// `use_rslora`: s = alpha / √r. Default false.
  var useRslora = false
  /// `use_dora`: weight-decomposed LoRA. Default false.
  var useDora = false
  /// `double_quant`: QLoRA double quantisation of the NF4 scales. Default true.
  var doubleQuant = true
  /// `qat`: quantisation-aware training (full fine-tuning): int8 (per-channel, as `quantize`)
  /// or int4 (llama.cpp's Q4_0). Default none.
  var qat: FakeQuant?
  /// `quantization_cache`: QLoRA keeps its NF4 base in `quantization_cache_dir` and later runs
  /// on the same source files and settings load it from there. Default true.
  var quantizationCache = true
  /// `quantization_cache_dir`: where. Default `$XDG_CACHE_HOME/vkfinetune/quantized`
  /// (`~/.cache/vkfinetune/quantized`).
  var quantizationCacheDir: String?
  /// `bf16`: mixed precision with bfloat16 storage — the frozen weights (projections,
  /// embedding, LM head) and the saved activations (without checkpointing) are kept 16-bit on
  /// the device and every kernel accumulates in f32; trained parameters and AdamW state stay
  /// f32 (master weights). Default false.
  var bf16 = false
  /// `fp16`: as `bf16` with IEEE half storage (range ±65504). Default false.
  var fp16 = false
  /// `bnb_4bit_compute_dtype`: QLoRA's compute dtype as bitsandbytes names it (float32,
  /// bfloat16, float16); it must agree with `bf16` / `fp16`, which it implies. Default unset.
  var bnb4bitComputeDtype: String?

  /// `max_seq_length`: longest example in tokens (longer ones are cut). Default 2048.
  var maxSeqLength = 2048
  /// `seed`: adapter init, dropout, shuffling and the validation split. Default 42 (as HF).
  var seed = 42
  /// `eval_steps`: evaluate every this many optimizer steps, or every fraction of the run in
  /// (0, 1) as transformers reads it; 0 = at the end only. Default 0.
  var evalSteps = 0.0
  /// `eval_on_start`: evaluate once before the first step (the curve's baseline). Default true.
  var evalOnStart = true
  /// `save_steps`: checkpoint every this many optimizer steps, or every fraction of the run in
  /// (0, 1); 0 = at the end only. Default 0.
  var saveSteps = 0.0
  /// `save_total_limit`: keep at most this many checkpoints; 0 = all. Default 0.
  var saveTotalLimit = 0
  /// `logging_steps`: a metrics line every this many optimizer steps, or every fraction of the
  /// run in (0, 1). Default 1.
  var loggingSteps = 1.0
  /// `early_stopping_patience`: stop after this many evaluations without a better loss; 0 = off.
  var earlyStoppingPatience = 0
  /// `val_set_size`: fraction of the data held out for validation when no `eval_data`, in
  /// [0, 1), or a whole count of examples (pairs) ≥ 1 as `datasets` reads an int. Default 0.
  var valSetSize = 0.0
  /// `max_eval_samples`: evaluate on at most the first N validation examples (pairs for
  /// preference objectives); 0 = all. Default 0.
  var maxEvalSamples = 0
  /// `gradient_checkpointing`: recompute activations in the backward pass. Default false.
  var gradientCheckpointing = false
  /// `packing`: pack short examples into full rows. Default false.
  var packing = false
  /// `train_on_prompt`: train on prompt tokens too. Default false.
  var trainOnPrompt = false
  /// `chat_template`: built-in template name, or `alpaca` for the plain alpaca prompt; default the model's own.
  var chatTemplate: String?
  /// `dataset_format`: auto (default), alpaca, prompt_response, prompt_completion, messages, sharegpt, text.
  var datasetFormat = DatasetFormat.auto

  // Preference objectives (TRL DPOConfig / RewardConfig names). `max_length` is `max_seq_length`.
  /// `beta`: DPO temperature β (rewards are β·log-ratios), default 0.1; GRPO's KL weight,
  /// default 0 (both TRL's). Unset: the objective's default (`effectiveBeta`).
  var beta: Double?
  /// `loss_type`: DPO sigmoid (default), hinge, ipo or robust; GRPO grpo, bnpo, dr_grpo or
  /// dapo (default). Unset: the objective's default.
  var lossType: String?
  /// `label_smoothing`: ε of the sigmoid and robust losses, in [0, 0.5). Default 0.
  var labelSmoothing = 0.0
  /// `rpo_alpha`: weight of an NLL term on the chosen answers; default none.
  var rpoAlpha: Double?
  /// `max_prompt_length`: prompt tokens kept when a pair exceeds max_length. Default 512 (TRL's),
  /// or half of max_length when that is shorter (so a short max_length alone still leaves
  /// the answers room); see `promptLimit`.
  var maxPromptLength: Int?
  /// `precompute_ref_log_probs`: LoRA/QLoRA DPO computes the reference log-probs once before
  /// training instead of every step (full fine-tuning always does). Default false.
  var precomputeRefLogProbs = false
  /// `margin`: reward objective's constant margin in −log σ(r_c − r_r − margin). Default 0.
  var margin = 0.0
  /// `mlm_probability`: share of the tokens the mlm objective masks (transformers'
  /// DataCollatorForLanguageModeling). Default 0.15.
  var mlmProbability = 0.15
  /// `router_aux_loss_coef` (LLaMA-Factory: `moe_aux_loss_coef`): a mixture-of-experts model's
  /// load-balancing loss weight; > 0 turns the loss on (as `output_router_logits` does), 0 off.
  /// Default unset: sft follows transformers' Trainer (router_aux_loss_coef when
  /// output_router_logits), dpo TRL's DPOTrainer (router_aux_loss_coef), reward adds none
  /// (TRL's RewardTrainer; a positive value is refused there).
  var routerAuxLossCoef: Double?

  // GRPO (TRL GRPOConfig names; defaults TRL 1.16's).
  /// `num_generations`: completions sampled per prompt (a group). Default 8.
  var numGenerations = 8
  /// `max_completion_length` (PPO: `response_length`): tokens per completion. Default 512
  /// (PPO: 53, TRL PPOConfig's).
  var maxCompletionLengthSetting: Int?
  var maxCompletionLength: Int { maxCompletionLengthSetting ?? (objective == .ppo ? 53 : 512) }
  /// `epsilon` / `epsilon_high`: the ratio's clip range [1 − ε, 1 + ε_high]. Default 0.2 / ε.
  var epsilon = 0.2
  var epsilonHigh: Double?
  /// `scale_rewards`: group (default), batch or none (true = group, false = none).
  var scaleRewards = "group"
  /// Sampling: `temperature` (1; PPO 0.7, TRL's), `top_k` (0 = off), `top_p` (1 = off),
  /// `repetition_penalty` (1).
  var temperatureSetting: Double?
  var temperature: Double { temperatureSetting ?? (objective == .ppo ? 0.7 : 1) }
  var topK = 0
  var topP = 1.0
  var repetitionPenalty = 1.0
  /// `num_iterations`: optimizer passes per generation batch (1).
  var numIterations = 1
  /// `mask_truncated_completions`: completions without an EOS add no loss (false).
  var maskTruncatedCompletions = false
  /// `use_bias_correction_kl`: the KL term times the probability ratio (true).
  var useBiasCorrectionKL = true
  /// `reward_functions`: built-ins, each a mapping {type, options…} (see BuiltinRewards).
  var rewardFunctions: [[String: String]] = []
  /// `reward_weights`: one per reward function (the reward model last); default all 1.
  var rewardWeights: [Double]?
  /// `reward_model`: a reward model from `train --objective reward` (its output directory:
  /// a merged model, or an adapter over this run's base model).
  var rewardModel: String?

  /// GRPO's loss settings.
  var grpoLoss: GRPOLossConfig {
    var c = GRPOLossConfig(beta: effectiveBeta, epsilon: epsilon, epsilonHigh: epsilonHigh,
                           lossType: lossType.flatMap(GRPOLossType.init(rawValue:)) ?? .dapo,
                           scaleRewards: GRPORewardScaling(rawValue: scaleRewards) ?? .group,
                           biasCorrectedKL: useBiasCorrectionKL, maskTruncatedCompletions: maskTruncatedCompletions,
                           maxCompletionLength: maxCompletionLength)
    c.temperature = Float(temperature)
    return c
  }

  /// GRPO's sampling settings.
  var grpoSampling: GRPOSampling {
    GRPOSampling(numGenerations: numGenerations, maxCompletionLength: maxCompletionLength,
                 temperature: Float(temperature), topK: topK, topP: Float(topP),
                 repetitionPenalty: Float(repetitionPenalty), seed: UInt64(bitPattern: Int64(seed)))
  }

  // PPO (TRL PPOConfig names and defaults; `cliprange` is `epsilon`, `response_length` is
  // `max_completion_length`, `reward_model_path` is `reward_model`).
  /// `kl_coef` (0.05), `kl_estimator` (k1 or k3).
  var klCoef = 0.05
  var klEstimator = "k1"
  /// `cliprange_value` (0.2), `vf_coef` (0.1), `gamma` (1), `lam` (0.95).
  var cliprangeValue = 0.2
  var vfCoef = 0.1
  var gamma = 1.0
  var lam = 0.95
  /// `num_ppo_epochs` (4) and `num_mini_batches` (1): updates per rollout batch.
  var numPPOEpochs = 4
  var numMiniBatches = 1
  /// `whiten_rewards` (false), `missing_eos_penalty` (none).
  var whitenRewards = false
  var missingEOSPenalty: Double?

  /// PPO's settings.
  var ppoConfig: PPOConfig {
    var c = PPOConfig()
    c.klCoef = klCoef; c.klEstimator = PPOKLEstimator(rawValue: klEstimator) ?? .k1
    c.cliprange = epsilon; c.cliprangeValue = cliprangeValue; c.vfCoef = vfCoef; c.gamma = gamma; c.lam = lam
    c.numPPOEpochs = numPPOEpochs; c.numMiniBatches = numMiniBatches; c.whitenRewards = whitenRewards
    c.missingEOSPenalty = missingEOSPenalty; c.temperature = Float(temperature)
    return c
  }

  // KTO (TRL KTOConfig names).
  /// `desirable_weight` / `undesirable_weight`: the two sides' loss weights. Default 1 / 1.
  var desirableWeight = 1.0
  var undesirableWeight = 1.0

  /// KTO's loss settings.
  var ktoLoss: KTOLossConfig {
    KTOLossConfig(lossType: lossType.flatMap(KTOLossType.init(rawValue:)) ?? .kto, beta: effectiveBeta,
                  desirableWeight: desirableWeight, undesirableWeight: undesirableWeight)
  }

  /// `beta` or the objective's default.
  var effectiveBeta: Double { beta ?? (objective == .grpo ? 0 : 0.1) }
  /// The DPO loss type (`loss_type`, default sigmoid).
  var dpoLossType: DPOLossType { lossType.flatMap(DPOLossType.init(rawValue:)) ?? .sigmoid }

  // Declaration order is `--print-config`'s order.
  enum CodingKeys: String, CodingKey, CaseIterable {
    case model, data, evalData = "eval_data", outputDir = "output_dir", method, objective
    case learningRate = "learning_rate", numTrainEpochs = "num_train_epochs", maxSteps = "max_steps"
    case perDeviceTrainBatchSize = "per_device_train_batch_size"
    case gradientAccumulationSteps = "gradient_accumulation_steps"
    case lrSchedulerType = "lr_scheduler_type", lrSchedulerKwargs = "lr_scheduler_kwargs"
    case warmupRatio = "warmup_ratio", warmupSteps = "warmup_steps", weightDecay = "weight_decay"
    case maxGradNorm = "max_grad_norm", adamBeta1 = "adam_beta1", adamBeta2 = "adam_beta2"
    case adamEpsilon = "adam_epsilon", optimizerState = "optimizer_state", memoryBudget = "memory_budget"
    case loraR = "lora_r", loraAlpha = "lora_alpha", loraDropout = "lora_dropout"
    case loraTargetModules = "lora_target_modules", loraTargetParameters = "lora_target_parameters"
    case useRslora = "use_rslora", useDora = "use_dora"
    case doubleQuant = "double_quant", bf16, fp16, bnb4bitComputeDtype = "bnb_4bit_compute_dtype"
    case maxSeqLength = "max_seq_length", seed
    case evalSteps = "eval_steps", evalOnStart = "eval_on_start", saveSteps = "save_steps", saveTotalLimit = "save_total_limit"
    case loggingSteps = "logging_steps", earlyStoppingPatience = "early_stopping_patience"
    case valSetSize = "val_set_size", maxEvalSamples = "max_eval_samples", gradientCheckpointing = "gradient_checkpointing", packing
    case trainOnPrompt = "train_on_prompt", chatTemplate = "chat_template", datasetFormat = "dataset_format"
    case beta, lossType = "loss_type", labelSmoothing = "label_smoothing", rpoAlpha = "rpo_alpha"
    case maxPromptLength = "max_prompt_length", precomputeRefLogProbs = "precompute_ref_log_probs", margin
    case mlmProbability = "mlm_probability", routerAuxLossCoef = "router_aux_loss_coef"
    case numGenerations = "num_generations", maxCompletionLengthSetting = "max_completion_length", epsilon
    case epsilonHigh = "epsilon_high", scaleRewards = "scale_rewards", temperatureSetting = "temperature"
    case topK = "top_k", topP = "top_p"
    case repetitionPenalty = "repetition_penalty", numIterations = "num_iterations"
    case maskTruncatedCompletions = "mask_truncated_completions", useBiasCorrectionKL = "use_bias_correction_kl"
    case rewardFunctions = "reward_functions", rewardWeights = "reward_weights", rewardModel = "reward_model"
    case desirableWeight = "desirable_weight", undesirableWeight = "undesirable_weight"
    case klCoef = "kl_coef", klEstimator = "kl_estimator", cliprangeValue = "cliprange_value", vfCoef = "vf_coef"
    case gamma, lam, numPPOEpochs = "num_ppo_epochs", numMiniBatches = "num_mini_batches"
    case whitenRewards = "whiten_rewards", missingEOSPenalty = "missing_eos_penalty"
  }

  /// The defaults above.
  init() {}

  /// The data pipeline's settings.
  var dataConfig: DataConfig {
    var c = DataConfig()
    c.format = datasetFormat
    c.maxSeqLength = maxSeqLength
    c.trainOnPrompt = trainOnPrompt
    c.seed = UInt64(bitPattern: Int64(seed))
    c.validationFraction = evalData == nil ? valSetSize : 0
    c.packing = packing
    return c
  }

  /// Storage of the frozen weights: bf16 / f16 under mixed precision, else f32.
  var frozenStorage: DType {
    if bf16 || bnb4bitComputeDtype == "bfloat16" { return .bf16 }
    if fp16 || bnb4bitComputeDtype == "float16" { return .f16 }
    return .f32
  }

  /// The DPO (or, for the orpo objective, ORPO) loss settings.
  var dpoLoss: DPOLossConfig {
    DPOLossConfig(type: dpoLossType, beta: effectiveBeta, labelSmoothing: labelSmoothing, rpoAlpha: rpoAlpha,
                  oddsRatio: objective == .orpo)
  }

  /// The preference pairs' length limits (`max_length` is `max_seq_length`).
  var preferenceLimits: PreferenceLimits {
    PreferenceLimits(maxLength: maxSeqLength, maxPromptLength: promptLimit)
  }

  /// `max_prompt_length`, or its default: min(512, max_length / 2).
  var promptLimit: Int { maxPromptLength ?? max(1, min(512, maxSeqLength / 2)) }

  /// The schedule for a run of `steps` optimizer steps.
  func schedule(steps: Int) throws -> LRSchedule {
    do {
      return try LRSchedule(lrSchedulerType: lrSchedulerType, learningRate: learningRate, warmupSteps: warmupSteps,
                            warmupRatio: warmupRatio, numTrainingSteps: steps, lrSchedulerKwargs: lrSchedulerKwargs)
    } catch {
      throw RecipeError(error.description)
    }
  }
}

/// A rejected setting: one line saying where, what and what to do.
struct RecipeError: Error, CustomStringConvertible, LocalizedError {
  var description: String
  init(_ message: String) { description = message }
  var errorDescription: String? { description }
}
