// The `gemma` architecture: its transformers config class's defaults and the shared blocks it
// switches on. Goldens: Tests/VKFModelTests (logits, loss, every gradient vs transformers).

extension Architecture {
  /// Gemma (`GemmaForCausalLM`): GeGLU (tanh-approximated GELU gate), (1 + w) RMSNorm weights, the
  /// embedding scaled by √hidden, head_dim 256 and a tied LM head by default.
  public static let gemma = Architecture(modelType: "gemma", causalLM: "GemmaForCausalLM",
    sequenceClassification: "GemmaForSequenceClassification", defaultContext: 8192,
    defaultHeadDim: 256, defaultTied: true, gemma: true)
}
