// The `gemma2` architecture: its transformers config class's defaults and the shared blocks it
// switches on. Goldens: Tests/VKFModelTests (logits, loss, every gradient vs transformers).

extension Architecture {
  /// Gemma 2 (`Gemma2ForCausalLM`): Gemma's block with sandwich norms (RMSNorm after attention and
  /// after the MLP), attention and final-logit soft-capping (50 / 30), `query_pre_attn_scalar`,
  /// and a sliding window on every other layer.
  public static let gemma2 = Architecture(modelType: "gemma2", causalLM: "Gemma2ForCausalLM",
    sequenceClassification: "Gemma2ForSequenceClassification", defaultContext: 8192,
    defaultHeadDim: 256, defaultTied: true, defaultWindow: 4096, windowOnByDefault: true,
    windowRule: .everyNthFull(defaultPattern: 2), gemma: true, sandwichNorms: true,
    softcapKeys: true, defaultSoftcaps: (50, 30))
}
