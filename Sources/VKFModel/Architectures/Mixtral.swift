// The `mixtral` architecture: its transformers config class's defaults and the shared blocks it
// switches on. Goldens: Tests/VKFModelTests (logits, loss, every gradient vs transformers).

extension Architecture {
  /// Mixtral (`MixtralForCausalLM`): Mistral's attention with a sparse mixture-of-experts MLP in
  /// every layer — a router picks the top K of E expert SwiGLU MLPs per token, weights
  /// renormalised (checkpoint names `block_sparse_moe.experts.{e}.w1/w3/w2`).
  public static let mixtral = Architecture(modelType: "mixtral", causalLM: "MixtralForCausalLM",
    sequenceClassification: "MixtralForSequenceClassification", defaultContext: 131072,
    defaultRMSNormEps: 1e-5, defaultRopeTheta: 1_000_000, windowOnByDefault: true,
    windowRule: .everyLayer, moe: .mixtral)
}
