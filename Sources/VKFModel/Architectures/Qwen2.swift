// The `qwen2` architecture: its transformers config class's defaults and the shared blocks it
// switches on. Goldens: Tests/VKFModelTests (logits, loss, every gradient vs transformers).

extension Architecture {
  /// Qwen2 / Qwen2.5 (`Qwen2ForCausalLM`): the Llama block with q/k/v biases (always, whatever
  /// `attention_bias` says) and a sliding window from `max_window_layers` on when
  /// `use_sliding_window`.
  public static let qwen2 = Architecture(modelType: "qwen2", causalLM: "Qwen2ForCausalLM",
    sequenceClassification: "Qwen2ForSequenceClassification", defaultContext: 32768,
    defaultWindow: 4096, windowRule: .fromMaxWindowLayers, qkvBiasAlways: true)
}
