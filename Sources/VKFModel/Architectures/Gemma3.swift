// The `gemma3_text` architecture: its transformers config class's defaults and the shared blocks it
// switches on. Goldens: Tests/VKFModelTests (logits, loss, every gradient vs transformers).

extension Architecture {
  /// Gemma 3's text model (`Gemma3ForCausalLM`, model_type gemma3_text): Gemma 2's block with q/k
  /// norms instead of attention soft-capping, five windowed layers per full one
  /// (`sliding_window_pattern`), and a local RoPE base (10 000) on the windowed layers.
  public static let gemma3Text = Architecture(modelType: "gemma3_text", causalLM: "Gemma3ForCausalLM",
    sequenceClassification: "Gemma3TextForSequenceClassification", defaultContext: 131072,
    defaultHeadDim: 256, defaultTied: true, defaultRopeTheta: 1_000_000, defaultWindow: 4096,
    windowOnByDefault: true, windowRule: .everyNthFull(defaultPattern: 6), gemma: true,
    sandwichNorms: true, qkNorm: true, softcapKeys: true, defaultLocalRopeTheta: 10000)
}
