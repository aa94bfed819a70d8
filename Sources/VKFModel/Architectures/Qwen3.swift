// The `qwen3` architecture: its transformers config class's defaults and the shared blocks it
// switches on. Goldens: Tests/VKFModelTests (logits, loss, every gradient vs transformers).

extension Architecture {
  /// Qwen3 (`Qwen3ForCausalLM`): the Llama block with a per-head RMSNorm on queries and keys
  /// before RoPE (q_norm / k_norm), head_dim 128 by default, no q/k/v biases.
  public static let qwen3 = Architecture(modelType: "qwen3", causalLM: "Qwen3ForCausalLM",
    sequenceClassification: "Qwen3ForSequenceClassification", defaultContext: 32768,
    defaultHeadDim: 128, defaultWindow: 4096, windowRule: .fromMaxWindowLayers, qkNorm: true)
}
