/// What a Hugging Face `model_type` means to this decoder: its transformers config class's
/// defaults and the blocks it switches on. `registry` has one entry per supported type;
/// `DecoderConfig` decodes through it and `TransformerShape(config:)` builds from it, so an
/// architecture composed of the existing blocks is one file in Sources/VKFModel/Architectures
/// and one `registry` entry (plus its goldens).
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
    /// Even layers below `max_window_layers` (default 28), with `use_sliding_window` (qwen2_moe).
    case evenBelowMaxWindowLayers
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

  /// Every supported architecture, in the order error messages list them: one file each in
  /// Sources/VKFModel/Architectures, composed of the shared blocks this type switches on.
  public static let registry: [Architecture] = [
    .llama, .mistral, .qwen2, .qwen3, .gemma, .gemma2, .gemma3Text, .phi3, .mixtral, .qwen2MoE, .qwen3MoE,
  ]

  /// The entry for `modelType`, or nil when it is not supported.
  public static func named(_ modelType: String) -> Architecture? {
    registry.first { $0.modelType == modelType }
  }

  /// Every supported `model_type`, in registry order.
  public static var modelTypes: [String] { registry.map(\.modelType) }
}
