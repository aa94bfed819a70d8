// The `qwen3_moe` architecture: its transformers config class's defaults and the shared blocks it
// switches on. Goldens: Tests/VKFModelTests (logits, loss, every gradient vs transformers).

extension Architecture {
  /// Qwen3-MoE (`Qwen3MoeForCausalLM`): Qwen3's attention (q/k norms) with sparse expert MLPs of
  /// `moe_intermediate_size` (top-K probabilities renormalised only with `norm_topk_prob`) and dense
  /// layers where `mlp_only_layers` / `decoder_sparse_step` say.
  public static let qwen3MoE = Architecture(modelType: "qwen3_moe", causalLM: "Qwen3MoeForCausalLM",
    sequenceClassification: "Qwen3MoeForSequenceClassification", defaultContext: 32768,
    windowRule: .fromMaxWindowLayers, qkNorm: true, moe: .qwen3)
}
