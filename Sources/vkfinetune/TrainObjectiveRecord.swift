import Foundation

/// The objective settings a run started with, kept in `<output>/objective.json`: the trainer's
/// checkpoint fingerprint covers the optimisation settings, not the loss, so a resumed run is
/// checked here against a changed objective, beta, loss type, margin, …
enum ObjectiveRecord {
  static let fileName = "objective.json"

  /// The settings that define the objective's loss and data, by recipe key (values as text).
  static func values(_ s: TrainSettings) -> [String: String] {
    var v = ["objective": s.objective.rawValue]
    switch s.objective {
    case .sft, .classification: break
    case .mlm: v["mlm_probability"] = "\(s.mlmProbability)"
    case .dpo:
      v["beta"] = "\(s.effectiveBeta)"; v["loss_type"] = s.dpoLossType.rawValue; v["label_smoothing"] = "\(s.labelSmoothing)"
      v["rpo_alpha"] = s.rpoAlpha.map { "\($0)" } ?? "none"; v["max_prompt_length"] = "\(s.promptLimit)"
      v["precompute_ref_log_probs"] = "\(s.precomputeRefLogProbs || s.method == .full)"
    case .reward:
      v["margin"] = "\(s.margin)"; v["max_prompt_length"] = "\(s.promptLimit)"
    case .orpo:
      v["beta"] = "\(s.effectiveBeta)"; v["max_prompt_length"] = "\(s.promptLimit)"
    case .kto:
      let l = s.ktoLoss
      v["beta"] = "\(l.beta)"; v["loss_type"] = l.lossType.rawValue; v["max_prompt_length"] = "\(s.promptLimit)"
      v["desirable_weight"] = "\(l.desirableWeight)"; v["undesirable_weight"] = "\(l.undesirableWeight)"
    case .grpo:
      let l = s.grpoLoss, g = s.grpoSampling
      v["beta"] = "\(l.beta)"; v["loss_type"] = l.lossType.rawValue; v["epsilon"] = "\(l.epsilon)"
      v["epsilon_high"] = "\(l.epsilonHigh)"; v["scale_rewards"] = l.scaleRewards.rawValue
      v["mask_truncated_completions"] = "\(l.maskTruncatedCompletions)"; v["use_bias_correction_kl"] = "\(l.biasCorrectedKL)"
      v["num_generations"] = "\(g.numGenerations)"; v["max_completion_length"] = "\(g.maxCompletionLength)"
      v["temperature"] = "\(g.temperature)"; v["top_k"] = "\(g.topK)"; v["top_p"] = "\(g.topP)"
      v["repetition_penalty"] = "\(g.repetitionPenalty)"; v["max_prompt_length"] = "\(s.promptLimit)"
      if s.numIterations > 1 { v["num_iterations"] = "\(s.numIterations)" }  // absent from earlier records: 1
      v["reward_functions"] = s.rewardFunctions.map { $0.sorted { $0.key < $1.key }.map { "\($0.key)=\($0.value)" }
        .joined(separator: ",") }.joined(separator: ";")
      v["reward_weights"] = s.rewardWeights.map { $0.map { "\($0)" }.joined(separator: ",") } ?? "all 1"
      v["reward_model"] = s.rewardModel ?? "none"
    case .ppo:
      let c = s.ppoConfig
      v["kl_coef"] = "\(c.klCoef)"; v["kl_estimator"] = c.klEstimator.rawValue; v["cliprange"] = "\(c.cliprange)"
      v["cliprange_value"] = "\(c.cliprangeValue)"; v["vf_coef"] = "\(c.vfCoef)"; v["gamma"] = "\(c.gamma)"
      v["lam"] = "\(c.lam)"; v["num_ppo_epochs"] = "\(c.numPPOEpochs)"; v["num_mini_batches"] = "\(c.numMiniBatches)"
      v["whiten_rewards"] = "\(c.whitenRewards)"; v["missing_eos_penalty"] = c.missingEOSPenalty.map { "\($0)" } ?? "none"
      v["temperature"] = "\(c.temperature)"; v["response_length"] = "\(s.maxCompletionLength)"
      v["max_prompt_length"] = "\(s.promptLimit)"; v["reward_model"] = s.rewardModel ?? "none"
    }
    // Recorded only when on, so runs from before QAT existed resume as they were.
    if let qat = s.qat { v["qat"] = qat == .q4_0 ? "int4" : "int8" }
    return v
  }

  /// Writes the record for a new run.
  static func write(_ s: TrainSettings, into dir: URL) throws {
    try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
    let data = try JSONSerialization.data(withJSONObject: values(s), options: [.sortedKeys, .prettyPrinted])
    try AtomicFile.write(data, to: dir.appendingPathComponent(fileName).path)
  }

  /// Throws when the run in `dir` was started with other objective settings (a run without a
  /// record, from before it existed, is an SFT run).
  static func check(_ s: TrainSettings, against dir: URL) throws {
    let url = dir.appendingPathComponent(fileName)
    var recorded = ["objective": TrainObjective.sft.rawValue]
    if let data = FileManager.default.contents(atPath: url.path) {
      guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: String] else {
        throw RecipeError("--resume: \(url.path) is unreadable; start a new run (--overwrite)")
      }
      recorded = object
    }
    let now = values(s)
    for key in Set(recorded.keys).union(now.keys).sorted() where recorded[key] != now[key] {
      throw RecipeError("--resume: the run in \(dir.path) was started with \(key) = \(recorded[key] ?? "unset"), "
        + "now \(now[key] ?? "unset"); resume with the same settings or start a new run (--overwrite)")
    }
  }
}
