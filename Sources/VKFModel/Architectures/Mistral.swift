// The `mistral` architecture: its transformers config class's defaults and the shared blocks it
// switches on. Goldens: Tests/VKFModelTests (logits, loss, every gradient vs transformers).

extension Architecture {
  /// Mistral (`MistralForCausalLM`): the Llama block with a sliding attention window on every
  /// layer (`sliding_window`, 4096 by default; an explicit null is none).
  public static let mistral = Architecture(modelType: "mistral", causalLM: "MistralForCausalLM",
    sequenceClassification: "MistralForSequenceClassification", defaultContext: 131072,
    defaultWindow: 4096, windowOnByDefault: true, windowRule: .everyLayer)
}
