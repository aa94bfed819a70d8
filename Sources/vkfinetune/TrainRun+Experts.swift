import VKFModel

extension TrainRun {
  /// The MLP projection names LoRA may not target on a mixture-of-experts model.
  static let mlpModules: Set<String> = ["gate_proj", "up_proj", "down_proj", "gate_up_proj"]

  /// The settings of a run on a mixture-of-experts model (Mixtral, Qwen3-MoE): LoRA on the
  /// attention (the default targets narrowed to q/k/v/o; MLP names refused — the experts are
  /// adapted through `lora_target_parameters`, as PEFT's target_parameters; QLoRA quantises
  /// each frozen expert stack as one NF4 weight); `auxLossCoefficient` sets the load-balancing
  /// weight. Dense models pass through unchanged (both expert keys refused: they would do nothing).
  static func forExperts(_ s: TrainSettings, shape: TransformerShape) throws -> (TrainSettings, TransformerShape) {
    guard shape.moe != nil else {
      if s.method != .full, !s.loraTargetParameters.isEmpty {
        throw RecipeError("lora_target_parameters \(s.loraTargetParameters.joined(separator: ",")) name a "
          + "mixture-of-experts model's experts; this model is dense (use lora_target_modules)")
      }
      if s.routerAuxLossCoef != nil {
        throw RecipeError("router_aux_loss_coef applies to mixture-of-experts models (mixtral, qwen3_moe); this model is dense")
      }
      return (s, shape)
    }
    var out = s, shape = shape
    let coefficient = try auxLossCoefficient(s, moe: shape.moe)
    shape.moe?.auxLossCoefficient = coefficient
    if s.method != .full {
      if s.loraTargetModules == RecipeKeys.allLinear {
        out.loraTargetModules = ["q_proj", "k_proj", "v_proj", "o_proj"]
      } else if let bad = s.loraTargetModules.first(where: mlpModules.contains) {
        throw RecipeError("LoRA target module \(bad) on a mixture-of-experts model: adapt the experts with "
          + "lora_target_parameters mlp.experts.gate_up_proj,mlp.experts.down_proj (PEFT's target_parameters)")
      }
    }
    return (out, shape)
  }

  /// The load-balancing loss's weight in this run: `router_aux_loss_coef` when given; else sft
  /// follows transformers' Trainer (the config's coefficient when `output_router_logits`), dpo
  /// TRL's DPOTrainer (the declared coefficient on every mixture-of-experts model), and reward
  /// adds none (neither TRL's RewardTrainer nor transformers' sequence classifiers do; a
  /// positive value is refused).
  static func auxLossCoefficient(_ s: TrainSettings, moe: MoEShape?) throws -> Float {
    guard let moe else { return 0 }
    switch s.objective {
    case .reward:
      if let c = s.routerAuxLossCoef, c > 0 {
        throw RecipeError("router_aux_loss_coef \(c) with the reward objective: reward models train without the "
          + "load-balancing loss (TRL's RewardTrainer and transformers' sequence classifiers add none); drop the key")
      }
      return 0
    case .grpo, .kto, .ppo:
      if let c = s.routerAuxLossCoef, c > 0 {
        throw RecipeError("router_aux_loss_coef \(c) with the \(s.objective.rawValue) objective: it trains without the "
          + "load-balancing loss here; drop the key")
      }
      return 0
    case .dpo: return s.routerAuxLossCoef.map(Float.init) ?? moe.declaredAuxLossCoefficient
    // ORPOTrainer adds it as transformers' Trainer does (the config's output_router_logits).
    case .sft, .orpo, .classification, .mlm: return s.routerAuxLossCoef.map(Float.init) ?? moe.auxLossCoefficient
    }
  }
}
