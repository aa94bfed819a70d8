import VKFModel

extension TrainRun {
  /// The MLP projection names LoRA may not target on a mixture-of-experts model.
  static let mlpModules: Set<String> = ["gate_proj", "up_proj", "down_proj", "gate_up_proj"]

  /// The settings of a run on a mixture-of-experts model (Mixtral, Qwen3-MoE): LoRA on the
  /// attention (the default targets narrowed to q/k/v/o, MLP names refused: PEFT applies them to
  /// every expert, and adapters on experts are not implemented), and the modes that do not
  /// cover experts yet refused by flag. Dense models pass through unchanged.
  static func forExperts(_ s: TrainSettings, shape: TransformerShape) throws -> TrainSettings {
    guard shape.moe != nil else { return s }
    var out = s
    if s.method == .qlora {
      throw RecipeError("--method qlora on a mixture-of-experts model is not implemented (the experts, most of "
        + "its weights, cannot be 4-bit yet); use --method lora")
    }
    if s.frozenStorage != .f32 {
      throw RecipeError("--bf16 / --fp16 on a mixture-of-experts model is not implemented yet (16-bit saved "
        + "activations do not cover the expert rows); train in f32")
    }
    if s.method != .full {
      if s.loraTargetModules == RecipeKeys.allLinear {
        out.loraTargetModules = ["q_proj", "k_proj", "v_proj", "o_proj"]
      } else if let bad = s.loraTargetModules.first(where: mlpModules.contains) {
        throw RecipeError("LoRA target module \(bad) on a mixture-of-experts model: PEFT applies the MLP names to "
          + "every expert, and adapters on experts are not implemented; target q_proj,k_proj,v_proj,o_proj")
      }
    }
    return out
  }
}
