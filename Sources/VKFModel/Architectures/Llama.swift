// The `llama` architecture: its transformers config class's defaults and the shared blocks it
// switches on. Goldens: Tests/VKFModelTests (logits, loss, every gradient vs transformers).

extension Architecture {
  /// Llama (`LlamaForCausalLM`; also SmolLM, TinyLlama, Llama 2/3): the base block every other
  /// architecture varies — RMSNorm, grouped-query attention with RoPE (`rope_scaling`: linear,
  /// dynamic, llama3, yarn), SwiGLU MLP, untied LM head by default.
  public static let llama = Architecture(modelType: "llama", causalLM: "LlamaForCausalLM",
    sequenceClassification: "LlamaForSequenceClassification", defaultContext: 2048)
}
