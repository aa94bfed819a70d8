// The `qwen2_moe` architecture: its transformers config class's defaults and the shared blocks it
// switches on. Goldens: Tests/VKFModelTests (logits, loss, every gradient vs transformers).

extension Architecture {
  /// Qwen2-MoE / Qwen1.5-MoE (`Qwen2MoeForCausalLM`): Qwen2's attention (q/k/v biases, `qkv_bias`)
  /// with sparse expert MLPs of `moe_intermediate_size` (top-K probabilities renormalised only
  /// with `norm_topk_prob`) plus, in every sparse block, a shared expert of
  /// `shared_expert_intermediate_size` gated by σ(`shared_expert_gate`); with
  /// `use_sliding_window`, the even layers below `max_window_layers` are windowed.
  public static let qwen2MoE = Architecture(modelType: "qwen2_moe", causalLM: "Qwen2MoeForCausalLM",
    sequenceClassification: "Qwen2MoeForSequenceClassification", defaultContext: 32768,
    defaultWindow: 4096, windowRule: .evenBelowMaxWindowLayers, qkvBiasAlways: true, moe: .qwen2)
}
