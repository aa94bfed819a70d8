import VKFModel

extension TrainRun {
  /// The MLP projection names LoRA may not target on a mixture-of-experts model.
  static let mlpModules: Set<String> = ["gate_proj", "up_proj", "down_proj", "gate_up_proj"]

  /// The settings of a run on a mixture-of-experts model (Mixtral, Qwen3-MoE): LoRA on the
  /// attention (the default targets narrowed to q/k/v/o, MLP names refused: PEFT applies them to
  /// every expert, and adapters on experts are not implemented; QLoRA quantises each frozen
  /// expert stack as one NF4 weight); `router_aux_loss_coef` sets the load-balancing weight.
  /// Dense models pass through unchanged (the key refused: it would do nothing).
  static func forExperts(_ s: TrainSettings, shape: TransformerShape) throws -> (TrainSettings, TransformerShape) {
    guard shape.moe != nil else {
      if s.routerAuxLossCoef != nil {
        throw RecipeError("router_aux_loss_coef applies to mixture-of-experts models (mixtral, qwen3_moe); this model is dense")
      }
      return (s, shape)
    }
    var out = s, shape = shape
    if let c = s.routerAuxLossCoef { shape.moe?.auxLossCoefficient = Float(c) }
    if (shape.moe?.auxLossCoefficient ?? 0) > 0, s.objective != .sft {
      throw RecipeError("the load-balancing loss (router_aux_loss_coef \(shape.moe?.auxLossCoefficient ?? 0)) is "
        + "implemented for the sft objective only; pass --router-aux-loss-coef 0 to train \(s.objective.rawValue) without it")
    }
    if s.method != .full {
      if s.loraTargetModules == RecipeKeys.allLinear {
        out.loraTargetModules = ["q_proj", "k_proj", "v_proj", "o_proj"]
      } else if let bad = s.loraTargetModules.first(where: mlpModules.contains) {
        throw RecipeError("LoRA target module \(bad) on a mixture-of-experts model: PEFT applies the MLP names to "
          + "every expert, and adapters on experts are not implemented; target q_proj,k_proj,v_proj,o_proj")
      }
    }
    return (out, shape)
  }
}
