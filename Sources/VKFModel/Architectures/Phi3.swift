// The `phi3` architecture: its transformers config class's defaults and the shared blocks it
// switches on. Goldens: Tests/VKFModelTests (logits, loss, every gradient vs transformers).

extension Architecture {
  /// Phi-3 (`Phi3ForCausalLM`): the Llama block with q/k/v fused in `qkv_proj` and gate/up in
  /// `gate_up_proj` (split into the model's projections at load, joined again when written; LoRA
  /// on a fused projection is one adapter as PEFT makes it), a window on every layer.
  public static let phi3 = Architecture(modelType: "phi3", causalLM: "Phi3ForCausalLM",
    sequenceClassification: "Phi3ForSequenceClassification", defaultContext: 4096,
    defaultRMSNormEps: 1e-5, windowOnByDefault: true, windowRule: .everyLayer,
    fusedProjections: true)
}
