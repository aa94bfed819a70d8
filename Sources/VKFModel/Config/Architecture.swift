/// What a Hugging Face `model_type` means to this decoder: its transformers config class's
/// defaults and the blocks it switches on. `registry` has one entry per supported type;
/// `DecoderConfig` decodes through it and `TransformerShape(config:)` builds from it, so an
/// architecture composed of the existing blocks is one entry here (plus its goldens).
public struct Architecture: Sendable {
  /// How `sliding_window` spreads over the layers when `layer_types` is absent.
  public enum WindowRule: Sendable, Equatable {
    /// The window is never applied (llama, gemma).
    case none
    /// Every layer (mistral, phi3).
    case everyLayer
    /// Layers from `max_window_layers` (default 28) on, with `use_sliding_window` (qwen2, qwen3).
    case fromMaxWindowLayers
    /// Every `pattern`-th layer full, the others windowed: gemma2 (2), gemma3_text
    /// (`sliding_window_pattern`, default 6).
    case everyNthFull(defaultPattern: Int)
  }

  /// `model_type`.
  public let modelType: String
  /// The transformers classes written into `architectures` (causal LM, reward model).
  public let causalLM: String, sequenceClassification: String
  /// `max_position_embeddings` when absent.
  public var defaultContext: Int
  /// `head_dim` when absent; nil: hidden / heads.
  public var defaultHeadDim: Int? = nil
  /// `tie_word_embeddings` when absent.
  public var defaultTied = false
  /// `rms_norm_eps` when absent.
  public var defaultRMSNormEps = 1e-6
  /// `rope_theta` when absent (and absent from `rope_parameters`).
  public var defaultRopeTheta = 10000.0
  /// `sliding_window` when the key is absent (an explicit null is none): 4096 where the
  /// transformers class defaults to it.
  public var defaultWindow: Int? = nil
  /// `use_sliding_window` when absent and a window is given.
  public var windowOnByDefault = false
  /// Which layers the window applies to without `layer_types`.
  public var windowRule = WindowRule.none
  /// Gemma's GeGLU (`hidden_activation`), (1 + w) norms and √hidden embedding scale.
  public var gemma = false
  /// Gemma 2/3's sandwich norms and `query_pre_attn_scalar` (default 256).
  public var sandwichNorms = false
  /// Qwen3 / Gemma 3's per-head q/k RMSNorm.
  public var qkNorm = false
  /// Phi-3's fused qkv_proj and gate_up_proj.
  public var fusedProjections = false
  /// Qwen2's q/k/v biases, present whatever `attention_bias` says (and never on o_proj).
  public var qkvBiasAlways = false
  /// Whether `attn_logit_softcapping` / `final_logit_softcapping` belong to this type, and
  /// their values when the keys are absent (Gemma 2: 50 / 30).
  public var softcapKeys = false, defaultSoftcaps: (attention: Double, final: Double)? = nil
  /// Gemma 3's local RoPE base (`rope_local_base_freq`) when absent.
  public var defaultLocalRopeTheta: Double? = nil
  /// The sparse mixture-of-experts block's layout, nil for dense MLPs only.
  public var moe: MoEStyle? = nil

  /// Every supported architecture, in the order error messages list them.
  public static let registry: [Architecture] = [
    Architecture(modelType: "llama", causalLM: "LlamaForCausalLM",
                 sequenceClassification: "LlamaForSequenceClassification", defaultContext: 2048),
    Architecture(modelType: "mistral", causalLM: "MistralForCausalLM",
                 sequenceClassification: "MistralForSequenceClassification", defaultContext: 131072,
                 defaultWindow: 4096, windowOnByDefault: true, windowRule: .everyLayer),
    Architecture(modelType: "qwen2", causalLM: "Qwen2ForCausalLM",
                 sequenceClassification: "Qwen2ForSequenceClassification", defaultContext: 32768,
                 defaultWindow: 4096, windowRule: .fromMaxWindowLayers, qkvBiasAlways: true),
    Architecture(modelType: "qwen3", causalLM: "Qwen3ForCausalLM",
                 sequenceClassification: "Qwen3ForSequenceClassification", defaultContext: 32768,
                 defaultHeadDim: 128, defaultWindow: 4096, windowRule: .fromMaxWindowLayers, qkNorm: true),
    Architecture(modelType: "gemma", causalLM: "GemmaForCausalLM",
                 sequenceClassification: "GemmaForSequenceClassification", defaultContext: 8192,
                 defaultHeadDim: 256, defaultTied: true, gemma: true),
    Architecture(modelType: "gemma2", causalLM: "Gemma2ForCausalLM",
                 sequenceClassification: "Gemma2ForSequenceClassification", defaultContext: 8192,
                 defaultHeadDim: 256, defaultTied: true, defaultWindow: 4096, windowOnByDefault: true,
                 windowRule: .everyNthFull(defaultPattern: 2), gemma: true, sandwichNorms: true,
                 softcapKeys: true, defaultSoftcaps: (50, 30)),
    Architecture(modelType: "gemma3_text", causalLM: "Gemma3ForCausalLM",
                 sequenceClassification: "Gemma3TextForSequenceClassification", defaultContext: 131072,
                 defaultHeadDim: 256, defaultTied: true, defaultRopeTheta: 1_000_000, defaultWindow: 4096,
                 windowOnByDefault: true, windowRule: .everyNthFull(defaultPattern: 6), gemma: true,
                 sandwichNorms: true, qkNorm: true, softcapKeys: true, defaultLocalRopeTheta: 10000),
    Architecture(modelType: "phi3", causalLM: "Phi3ForCausalLM",
                 sequenceClassification: "Phi3ForSequenceClassification", defaultContext: 4096,
                 defaultRMSNormEps: 1e-5, windowOnByDefault: true, windowRule: .everyLayer,
                 fusedProjections: true),
    Architecture(modelType: "mixtral", causalLM: "MixtralForCausalLM",
                 sequenceClassification: "MixtralForSequenceClassification", defaultContext: 131072,
                 defaultRMSNormEps: 1e-5, defaultRopeTheta: 1_000_000, windowOnByDefault: true,
                 windowRule: .everyLayer, moe: .mixtral),
    Architecture(modelType: "qwen3_moe", causalLM: "Qwen3MoeForCausalLM",
                 sequenceClassification: "Qwen3MoeForSequenceClassification", defaultContext: 32768,
                 windowRule: .fromMaxWindowLayers, qkNorm: true, moe: .qwen3),
  ]

  /// The entry for `modelType`, or nil when it is not supported.
  public static func named(_ modelType: String) -> Architecture? {
    registry.first { $0.modelType == modelType }
  }

  /// Every supported `model_type`, in registry order.
  public static var modelTypes: [String] { registry.map(\.modelType) }
}
