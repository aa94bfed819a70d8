import Foundation
import VKFCore

/// A decoder model's hyper-parameters, decoded from a Hugging Face `config.json`.
///
/// Covers `model_type` `llama` (Llama 2/3, SmolLM2, TinyLlama), `mistral`, `qwen2`, `qwen3`,
/// `gemma`, `gemma2`, `gemma3_text`, `phi3`, `mixtral` and `qwen3_moe` (the `Architecture`
/// registry), composed of the same blocks: RMSNorm, a gated MLP or a sparse mixture of
/// experts (`moe`), grouped-query attention with RoPE (Qwen3 adds an RMSNorm over each query
/// and key head; Gemma uses GeGLU, (1 + w) norms and an embedding scaled by √hidden; Gemma 2
/// adds sandwich norms, alternating sliding windows and soft-capped scores and logits; Gemma 3
/// q/k norms and a local RoPE base; Phi-3 stores q/k/v and gate/up fused).
/// Keys stay verbatim (`CodingKeys`). Fields marked "required" have no meaningful default
/// and their absence is a `ConfigError.missingField`; other defaults follow the matching
/// transformers config class (`LlamaConfig`, `MistralConfig`, `Qwen2Config`, …).
public struct DecoderConfig: Codable, Equatable, Sendable {
  /// The architectures this struct describes; the order is the one error messages list.
  public static var supportedModelTypes: [String] { Architecture.modelTypes }

  /// `model_type`: one of `supportedModelTypes`. Required.
  public var modelType: String
  /// `hidden_size`: the residual width C. Required.
  public var hiddenSize: Int
  /// `intermediate_size`: the MLP width. Required.
  public var intermediateSize: Int
  /// `num_hidden_layers`: transformer blocks. Required.
  public var numHiddenLayers: Int
  /// `num_attention_heads`: query heads NH. Required.
  public var numAttentionHeads: Int
  /// `num_key_value_heads`: key/value heads (GQA). Default: `numAttentionHeads` (MHA).
  public var numKeyValueHeads: Int
  /// `head_dim`: per-head width HS. Default: `hiddenSize / numAttentionHeads` (qwen3: 128,
  /// gemma: 256, as their transformers configs).
  public var headDim: Int
  /// `rms_norm_eps`: RMSNorm epsilon. Default: 1e-6.
  public var rmsNormEps: Double
  /// `vocab_size`: embedding rows V. Required.
  public var vocabSize: Int
  /// `max_position_embeddings`: trained context. Default: 2048 (llama), 131072 (mistral),
  /// 32768 (qwen2), as in transformers.
  public var maxPositionEmbeddings: Int
  /// `tie_word_embeddings`: the LM head reuses `embed_tokens`. Default: false
  /// (Qwen2.5 ≤ 3B and SmolLM2 set it true).
  public var tieWordEmbeddings: Bool
  /// `rope_theta` (or `rope_parameters.rope_theta`): RoPE base. Default: 10000.
  public var ropeTheta: Double
  /// `rope_scaling` (or the scaling part of `rope_parameters`). Default: nil (plain RoPE).
  public var ropeScaling: RopeScaling?
  /// `attention_bias`: q/k/v/o projections carry biases. Default: false.
  public var attentionBias: Bool
  /// `mlp_bias`: gate/up/down projections carry biases. Default: false.
  public var mlpBias: Bool
  /// `qkv_bias` (Qwen2-MoE): whether q/k/v carry biases; nil when the config has no such key.
  public var qkvBiasKey: Bool? = nil
  /// `sliding_window`: attention window (mistral v0.1; qwen2 records one it rarely uses).
  /// Default, as transformers: 4096 for mistral and qwen2 when the key is absent (an explicit
  /// null means none), nil for llama (whose transformers class has no window).
  public var slidingWindow: Int?
  /// `use_sliding_window` (qwen2): whether `slidingWindow` applies. Default: true for
  /// mistral when a window is given, false for qwen2, as transformers does.
  public var useSlidingWindow: Bool
  /// `max_window_layers` (qwen2): layers from this index on use the window. Default: 28.
  public var maxWindowLayers: Int?
  /// `layer_types`: per layer "full_attention" or "sliding_attention" (newer transformers
  /// configs); when present it decides which layers use the window. Default: nil.
  public var layerTypes: [String]?
  /// `sliding_window_pattern` (gemma3_text, older configs): every N-th layer is full
  /// attention, the others windowed. Default: 6 when `layer_types` is absent.
  public var slidingWindowPattern: Int?
  /// `query_pre_attn_scalar` (gemma3_text): the attention scale is its inverse square root.
  /// Default: 256 for gemma3_text, nil elsewhere (1/√head_dim).
  public var queryPreAttnScalar: Double?
  /// `rope_local_base_freq` (or `rope_parameters.sliding_attention.rope_theta`): the RoPE
  /// base of gemma3_text's sliding-window layers. Default: 10 000 for gemma3_text.
  public var localRopeTheta: Double?
  /// `attn_logit_softcapping` (gemma2, gemma3_text): attention scores become
  /// cap·tanh(s / cap). Default: 50 for gemma2 when absent, nil (none) when null or elsewhere.
  public var attnLogitSoftcapping: Double?
  /// `final_logit_softcapping` (gemma2, gemma3_text): logits become cap·tanh(x / cap).
  /// Default: 30 for gemma2 when absent, nil (none) when null or elsewhere.
  public var finalLogitSoftcapping: Double?
  /// `hidden_act` (gemma: `hidden_activation` when set): MLP activation. Default: "silu"
  /// ("gelu_pytorch_tanh" for gemma; its legacy "gelu" means the same, as transformers says).
  public var hiddenAct: String
  /// `bos_token_id`. Default: nil.
  public var bosTokenId: Int?
  /// `eos_token_id`, which Hugging Face writes as an int or a list. Default: [].
  public var eosTokenIds: [Int]
  /// `pad_token_id`. Default: nil.
  public var padTokenId: Int?
  /// `torch_dtype` (or the newer `dtype`): the checkpoint's storage dtype. Default: nil.
  public var torchDtype: String?
  /// The sparse mixture-of-experts settings (mixtral, qwen3_moe); nil for dense models.
  public var moe: MoEConfig?

  /// The registry entry of `modelType` (decoding refuses any other type).
  public var architecture: Architecture {
    Architecture.named(modelType) ?? Architecture.registry[0]
  }
  /// Qwen2 always has q/k/v biases (its `attention_bias` key is absent), Qwen2-MoE unless
  /// `qkv_bias` is false; elsewhere they follow `attention_bias`.
  public var hasQKVBias: Bool { architecture.qkvBiasAlways ? qkvBiasKey ?? true : attentionBias }
  /// Whether the output projection `o_proj` has a bias (never for qwen2).
  public var hasOutputProjectionBias: Bool { !architecture.qkvBiasAlways && attentionBias }
  /// Qwen3's and Gemma 3's RMSNorm over each query and key head (`self_attn.q_norm` / `k_norm`).
  public var hasQKNorm: Bool { architecture.qkNorm }
  /// The gated MLP's activation `hiddenAct` names, or nil when it is not implemented.
  public var gatedActivation: GatedActivation? {
    switch hiddenAct {
    case "silu": return .silu
    case "gelu_pytorch_tanh": return .geluTanh
    default: return nil
    }
  }
  /// Query heads per key/value head.
  public var groupSize: Int { numAttentionHeads / max(numKeyValueHeads, 1) }
  /// The attention window actually in force, if any.
  public var effectiveSlidingWindow: Int? { useSlidingWindow ? slidingWindow : nil }

  enum CodingKeys: String, CodingKey {
    case modelType = "model_type", hiddenSize = "hidden_size"
    case intermediateSize = "intermediate_size", numHiddenLayers = "num_hidden_layers"
    case numAttentionHeads = "num_attention_heads", numKeyValueHeads = "num_key_value_heads"
    case headDim = "head_dim", rmsNormEps = "rms_norm_eps", vocabSize = "vocab_size"
    case maxPositionEmbeddings = "max_position_embeddings"
    case tieWordEmbeddings = "tie_word_embeddings", ropeTheta = "rope_theta"
    case ropeScaling = "rope_scaling", ropeParameters = "rope_parameters"
    case attentionBias = "attention_bias", mlpBias = "mlp_bias", qkvBias = "qkv_bias"
    case slidingWindow = "sliding_window", useSlidingWindow = "use_sliding_window"
    case maxWindowLayers = "max_window_layers", layerTypes = "layer_types"
    case slidingWindowPattern = "sliding_window_pattern", queryPreAttnScalar = "query_pre_attn_scalar"
    case localRopeTheta = "rope_local_base_freq"
    case hiddenAct = "hidden_act", hiddenActivation = "hidden_activation", bosTokenId = "bos_token_id", eosTokenIds = "eos_token_id"
    case padTokenId = "pad_token_id", torchDtype = "torch_dtype", dtype
    case attentionDropout = "attention_dropout", bidirectional = "use_bidirectional_attention"
    case partialRotaryFactor = "partial_rotary_factor", attentionSoftcap = "attn_logit_softcapping"
    case residDropout = "resid_pdrop", embeddingDropout = "embd_pdrop"
    case finalSoftcap = "final_logit_softcapping"
  }

  /// `rope_parameters` keys (transformers ≥ 4.56 folds `rope_theta` into this object).
  enum RopeParameterKeys: String, CodingKey {
    case ropeTheta = "rope_theta", partialRotaryFactor = "partial_rotary_factor"
  }
  /// gemma3_text's `rope_parameters`, one object per attention kind.
  enum LayerTypeRopeKeys: String, CodingKey { case full = "full_attention", sliding = "sliding_attention" }

  /// Gemma-family model types (GeGLU, (1 + w) norms, √hidden embedding scale).
  public var isGemmaFamily: Bool { architecture.gemma }
  /// Gemma 2/3's sandwich norms (attention and MLP outputs RMSNormed before their residual
  /// adds) and `query_pre_attn_scalar`.
  public var hasSandwichNorms: Bool { architecture.sandwichNorms }

  /// Decodes and validates; prefer `DecoderConfig.load(from:)`, which turns failures into
  /// `ConfigError`s naming the file and field.
  public init(from decoder: Decoder) throws {
    let c = try decoder.container(keyedBy: CodingKeys.self)
    modelType = try c.decode(String.self, forKey: .modelType)
    guard let arch = Architecture.named(modelType) else {
      throw ConfigError.unsupportedModelType(modelType, file: "", supported: Self.supportedModelTypes)
    }
    hiddenSize = try c.decode(Int.self, forKey: .hiddenSize)
    intermediateSize = try c.decode(Int.self, forKey: .intermediateSize)
    numHiddenLayers = try c.decode(Int.self, forKey: .numHiddenLayers)
    numAttentionHeads = try c.decode(Int.self, forKey: .numAttentionHeads)
    numKeyValueHeads = try c.decodeIfPresent(Int.self, forKey: .numKeyValueHeads) ?? numAttentionHeads
    headDim = try c.decodeIfPresent(Int.self, forKey: .headDim)
      ?? arch.defaultHeadDim ?? (numAttentionHeads > 0 ? hiddenSize / numAttentionHeads : 0)
    rmsNormEps = try c.decodeIfPresent(Double.self, forKey: .rmsNormEps) ?? arch.defaultRMSNormEps
    vocabSize = try c.decode(Int.self, forKey: .vocabSize)
    maxPositionEmbeddings = try c.decodeIfPresent(Int.self, forKey: .maxPositionEmbeddings) ?? arch.defaultContext
    tieWordEmbeddings = try c.decodeIfPresent(Bool.self, forKey: .tieWordEmbeddings) ?? arch.defaultTied
    attentionBias = try c.decodeIfPresent(Bool.self, forKey: .attentionBias) ?? false
    mlpBias = try c.decodeIfPresent(Bool.self, forKey: .mlpBias) ?? false
    qkvBiasKey = try c.decodeIfPresent(Bool.self, forKey: .qkvBias)
    // Absent: the class's default (MistralConfig / Qwen2Config's 4096); null: none.
    slidingWindow = c.contains(.slidingWindow) ? try c.decodeIfPresent(Int.self, forKey: .slidingWindow) : arch.defaultWindow
    useSlidingWindow = try c.decodeIfPresent(Bool.self, forKey: .useSlidingWindow)
      ?? (arch.windowOnByDefault && slidingWindow != nil)
    maxWindowLayers = try c.decodeIfPresent(Int.self, forKey: .maxWindowLayers)
    layerTypes = try c.decodeIfPresent([String].self, forKey: .layerTypes)
    slidingWindowPattern = try c.decodeIfPresent(Int.self, forKey: .slidingWindowPattern)
    queryPreAttnScalar = try c.decodeIfPresent(Double.self, forKey: .queryPreAttnScalar)
      ?? (arch.sandwichNorms ? 256 : nil)
    if arch.gemma {
      let act = try c.decodeIfPresent(String.self, forKey: .hiddenActivation)
        ?? c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "gelu_pytorch_tanh"
      hiddenAct = act == "gelu" ? "gelu_pytorch_tanh" : act
    } else {
      hiddenAct = try c.decodeIfPresent(String.self, forKey: .hiddenAct) ?? "silu"
    }
    bosTokenId = try c.decodeIfPresent(Int.self, forKey: .bosTokenId)
    if let one = try? c.decodeIfPresent(Int.self, forKey: .eosTokenIds) {
      eosTokenIds = [one]
    } else {
      eosTokenIds = try c.decodeIfPresent([Int].self, forKey: .eosTokenIds) ?? []
    }
    padTokenId = try c.decodeIfPresent(Int.self, forKey: .padTokenId)
    torchDtype = try c.decodeIfPresent(String.self, forKey: .torchDtype)
      ?? c.decodeIfPresent(String.self, forKey: .dtype)

    try Self.refuseUnimplementedSettings(c, architecture: arch)
    if let style = arch.moe {
      let (width, layers) = (intermediateSize, numHiddenLayers)
      moe = try MoEConfig(from: decoder, style: style, intermediateSize: width, layers: layers)
    } else {
      moe = nil
    }
    // Gemma 2 defaults to 50 / 30 when the keys are absent; null means none (transformers).
    attnLogitSoftcapping = c.contains(.attentionSoftcap)
      ? try c.decodeIfPresent(Double.self, forKey: .attentionSoftcap) : arch.defaultSoftcaps?.attention
    finalLogitSoftcapping = c.contains(.finalSoftcap)
      ? try c.decodeIfPresent(Double.self, forKey: .finalSoftcap) : arch.defaultSoftcaps?.final

    // RoPE: `rope_parameters` (new) wins over `rope_theta` + `rope_scaling` (old).
    ropeTheta = try c.decodeIfPresent(Double.self, forKey: .ropeTheta) ?? arch.defaultRopeTheta
    localRopeTheta = try c.decodeIfPresent(Double.self, forKey: .localRopeTheta) ?? arch.defaultLocalRopeTheta
    ropeScaling = try Self.decodeScaling(c, key: .ropeScaling)
    if c.contains(.ropeParameters), try !c.decodeNil(forKey: .ropeParameters) {
      let p = try c.nestedContainer(keyedBy: RopeParameterKeys.self, forKey: .ropeParameters)
      ropeTheta = try p.decodeIfPresent(Double.self, forKey: .ropeTheta) ?? ropeTheta
      if let f = try? p.decodeIfPresent(Double.self, forKey: .partialRotaryFactor), f != 1 {
        throw ConfigError.invalidValue("rope_parameters.partial_rotary_factor", reason: "is \(f); rotary "
          + "embeddings over part of each head are not implemented", file: "")
      }
      ropeScaling = try Self.decodeScaling(c, key: .ropeParameters)
      // gemma3_text's newer form: one object per attention kind.
      let byKind = try c.nestedContainer(keyedBy: LayerTypeRopeKeys.self, forKey: .ropeParameters)
      if byKind.contains(.full) {
        let p = try byKind.nestedContainer(keyedBy: RopeParameterKeys.self, forKey: .full)
        ropeTheta = try p.decodeIfPresent(Double.self, forKey: .ropeTheta) ?? ropeTheta
        ropeScaling = try Self.decodeScaling(byKind, key: .full)
      }
      if byKind.contains(.sliding) {
        let p = try byKind.nestedContainer(keyedBy: RopeParameterKeys.self, forKey: .sliding)
        localRopeTheta = try p.decodeIfPresent(Double.self, forKey: .ropeTheta) ?? localRopeTheta
        if try Self.decodeScaling(byKind, key: .sliding) != nil {
          throw ConfigError.invalidValue("rope_parameters.sliding_attention", reason: "scales the local RoPE, "
            + "which is not implemented", file: "")
        }
      }
    }
  }

  /// Settings that change the model's math when not at their neutral value, which this
  /// trainer does not implement: refused by key rather than silently ignored.
  private static func refuseUnimplementedSettings(_ c: KeyedDecodingContainer<CodingKeys>,
                                                  architecture arch: Architecture) throws {
    func number(_ key: CodingKeys) -> Double? {
      (try? c.decodeIfPresent(Double.self, forKey: key)) ?? nil
    }
    if let p = number(.attentionDropout), p != 0 {
      throw ConfigError.invalidValue("attention_dropout", reason: "is \(p); attention dropout is not implemented "
        + "(every supported checkpoint ships 0.0): set it to 0.0 to train without it", file: "")
    }
    if (try? c.decodeIfPresent(Bool.self, forKey: .bidirectional)) == true {
      throw ConfigError.invalidValue("use_bidirectional_attention", reason: "is true; only causal attention "
        + "is implemented", file: "")
    }
    for (key, name) in [(CodingKeys.residDropout, "resid_pdrop"), (.embeddingDropout, "embd_pdrop")] {
      if let p = number(key), p != 0 {
        throw ConfigError.invalidValue(name, reason: "is \(p); residual / embedding dropout is not implemented "
          + "(Phi-3 checkpoints ship 0.0): set it to 0.0 to train without it", file: "")
      }
    }
    if let f = number(.partialRotaryFactor), f != 1 {
      throw ConfigError.invalidValue("partial_rotary_factor", reason: "is \(f); rotary embeddings over part "
        + "of each head are not implemented", file: "")
    }
    for (key, name) in [(CodingKeys.attentionSoftcap, "attn_logit_softcapping"),
                        (.finalSoftcap, "final_logit_softcapping")] {
      guard let cap = number(key) else { continue }
      if !arch.softcapKeys {
        throw ConfigError.invalidValue(name, reason: "is \(cap); soft-capping belongs to gemma2 / gemma3_text, "
          + "and \(arch.modelType)'s transformers class would ignore it", file: "")
      }
      guard cap > 0, cap.isFinite else {
        throw ConfigError.invalidValue(name, reason: "must be positive or null, got \(cap)", file: "")
      }
    }
  }

  /// A scaling object, or nil when absent, null or of type `default`.
  private static func decodeScaling<K: CodingKey>(_ c: KeyedDecodingContainer<K>, key: K) throws -> RopeScaling? {
    guard c.contains(key), try !c.decodeNil(forKey: key) else { return nil }
    let inner = try c.nestedContainer(keyedBy: RopeScaling.CodingKeys.self, forKey: key)
    guard try RopeScaling.variantName(in: inner) != nil else { return nil }
    return try c.decode(RopeScaling.self, forKey: key)
  }

  /// Encodes the verbatim keys (the old `rope_theta` + `rope_scaling` form).
  public func encode(to encoder: Encoder) throws {
    var c = encoder.container(keyedBy: CodingKeys.self)
    try c.encode(modelType, forKey: .modelType)
    try c.encode(hiddenSize, forKey: .hiddenSize)
    try c.encode(intermediateSize, forKey: .intermediateSize)
    try c.encode(numHiddenLayers, forKey: .numHiddenLayers)
    try c.encode(numAttentionHeads, forKey: .numAttentionHeads)
    try c.encode(numKeyValueHeads, forKey: .numKeyValueHeads)
    try c.encode(headDim, forKey: .headDim)
    try c.encode(rmsNormEps, forKey: .rmsNormEps)
    try c.encode(vocabSize, forKey: .vocabSize)
    try c.encode(maxPositionEmbeddings, forKey: .maxPositionEmbeddings)
    try c.encode(tieWordEmbeddings, forKey: .tieWordEmbeddings)
    try c.encode(ropeTheta, forKey: .ropeTheta)
    try c.encodeIfPresent(ropeScaling, forKey: .ropeScaling)
    try c.encode(attentionBias, forKey: .attentionBias)
    try c.encode(mlpBias, forKey: .mlpBias)
    try c.encodeIfPresent(qkvBiasKey, forKey: .qkvBias)
    try c.encodeIfPresent(slidingWindow, forKey: .slidingWindow)
    if slidingWindow == nil, modelType != "llama" { try c.encodeNil(forKey: .slidingWindow) }
    try c.encode(useSlidingWindow, forKey: .useSlidingWindow)
    try c.encodeIfPresent(maxWindowLayers, forKey: .maxWindowLayers)
    try c.encodeIfPresent(layerTypes, forKey: .layerTypes)
    try c.encodeIfPresent(slidingWindowPattern, forKey: .slidingWindowPattern)
    try c.encodeIfPresent(queryPreAttnScalar, forKey: .queryPreAttnScalar)
    try c.encodeIfPresent(localRopeTheta, forKey: .localRopeTheta)
    if architecture.softcapKeys {  // null spelled out: absent means 50 / 30 for gemma2
      try c.encode(attnLogitSoftcapping, forKey: .attentionSoftcap)
      try c.encode(finalLogitSoftcapping, forKey: .finalSoftcap)
    }
    try c.encode(hiddenAct, forKey: .hiddenAct)
    try c.encodeIfPresent(bosTokenId, forKey: .bosTokenId)
    if eosTokenIds.count == 1 { try c.encode(eosTokenIds[0], forKey: .eosTokenIds) }
    else if !eosTokenIds.isEmpty { try c.encode(eosTokenIds, forKey: .eosTokenIds) }
    try c.encodeIfPresent(padTokenId, forKey: .padTokenId)
    try c.encodeIfPresent(torchDtype, forKey: .torchDtype)
    if let moe, let style = architecture.moe { try moe.encode(to: encoder, style: style) }
  }
}
