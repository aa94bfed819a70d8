import Foundation

/// How an architecture names and normalises its sparse mixture-of-experts block.
public enum MoEStyle: String, Sendable, Equatable {
  /// Mixtral: `block_sparse_moe.gate` routes to `block_sparse_moe.experts.{e}.w1` (gate),
  /// `w3` (up) and `w2` (down) of width `intermediate_size`; the top-k weights always
  /// renormalised; every layer sparse.
  case mixtral
  /// Qwen3-MoE: `mlp.gate` routes to `mlp.experts.{e}.gate_proj` / `up_proj` / `down_proj` of
  /// width `moe_intermediate_size`; `norm_topk_prob` decides the renormalisation;
  /// `mlp_only_layers` and `decoder_sparse_step` keep some layers dense.
  case qwen3
  /// Qwen2-MoE: Qwen3-MoE's names and routing plus a shared expert in every sparse block:
  /// out = experts(x) + σ(x·`shared_expert_gate`ᵀ) · `shared_expert`(x), the shared expert a
  /// gated MLP of `shared_expert_intermediate_size`.
  case qwen2

  /// transformers' defaults when the config omits them: experts, experts per token, and the
  /// expert width (nil: Mixtral's experts are `intermediate_size` wide).
  var defaults: (experts: Int, perToken: Int, width: Int?) {
    switch self {
    case .mixtral: (8, 2, nil)
    case .qwen3: (128, 8, 768)
    case .qwen2: (60, 4, 1408)
    }
  }

  /// The block's module name inside a layer.
  public var block: String { self == .mixtral ? "block_sparse_moe" : "mlp" }
  /// Expert projection names: gate, up, down.
  public var expertProjections: (gate: String, up: String, down: String) {
    self == .mixtral ? ("w1", "w3", "w2") : ("gate_proj", "up_proj", "down_proj")
  }
}

/// A sparse mixture-of-experts model's routing settings, from `config.json` (transformers'
/// `MixtralConfig` / `Qwen3MoeConfig` defaults).
public struct MoEConfig: Equatable, Sendable {
  /// `num_local_experts` (Mixtral; Qwen3-MoE's `num_experts`): experts per sparse layer E.
  public var experts: Int
  /// `num_experts_per_tok`: experts each token is routed to K.
  public var expertsPerToken: Int
  /// Each expert's MLP width (Mixtral: `intermediate_size`; Qwen3-MoE: `moe_intermediate_size`).
  public var expertIntermediateSize: Int
  /// Whether the K routing weights are renormalised to sum 1 (Mixtral always; Qwen3-MoE's
  /// `norm_topk_prob`, default false).
  public var normTopKProb: Bool
  /// `router_aux_loss_coef`: the load-balancing loss's weight (default 0.001).
  public var routerAuxLossCoef: Double
  /// `output_router_logits`: whether training adds the load-balancing loss (default false, as
  /// transformers: `MixtralForCausalLM` adds it only then).
  public var outputRouterLogits: Bool
  /// `decoder_sparse_step` (Qwen3-MoE): layer i is sparse when (i + 1) is a multiple of it.
  public var decoderSparseStep: Int
  /// `mlp_only_layers` (Qwen3-MoE): layers kept dense.
  public var mlpOnlyLayers: [Int]
  /// `shared_expert_intermediate_size` (Qwen2-MoE): the shared expert's width; 0 = none.
  public var sharedExpertIntermediateSize: Int

  /// Whether layer `i` has the sparse block (else a dense MLP of `intermediate_size`).
  public func isSparse(layer i: Int) -> Bool {
    !mlpOnlyLayers.contains(i) && experts > 0 && (i + 1) % max(decoderSparseStep, 1) == 0
  }

  /// The load-balancing loss's coefficient in training: `router_aux_loss_coef` when
  /// `output_router_logits` asks for the loss, else 0.
  public var trainingAuxLossCoef: Double { outputRouterLogits ? routerAuxLossCoef : 0 }

  enum Keys: String, CodingKey {
    case localExperts = "num_local_experts", experts = "num_experts", perToken = "num_experts_per_tok"
    case moeIntermediate = "moe_intermediate_size", normTopK = "norm_topk_prob"
    case auxCoef = "router_aux_loss_coef", outputRouterLogits = "output_router_logits"
    case sparseStep = "decoder_sparse_step", mlpOnly = "mlp_only_layers", jitter = "router_jitter_noise"
    case sharedExpert = "shared_expert_intermediate_size"
  }

  /// Decodes the routing keys of a `style` model; `intermediateSize` is the config's dense
  /// width (Mixtral's experts use it).
  init(from decoder: Decoder, style: MoEStyle, intermediateSize: Int, layers: Int) throws {
    let c = try decoder.container(keyedBy: Keys.self)
    experts = try c.decodeIfPresent(Int.self, forKey: .localExperts)
      ?? c.decodeIfPresent(Int.self, forKey: .experts) ?? style.defaults.experts
    expertsPerToken = try c.decodeIfPresent(Int.self, forKey: .perToken) ?? style.defaults.perToken
    if let width = style.defaults.width {
      expertIntermediateSize = try c.decodeIfPresent(Int.self, forKey: .moeIntermediate) ?? width
    } else {
      expertIntermediateSize = intermediateSize
    }
    normTopKProb = style == .mixtral ? true : try c.decodeIfPresent(Bool.self, forKey: .normTopK) ?? false
    routerAuxLossCoef = try c.decodeIfPresent(Double.self, forKey: .auxCoef) ?? 0.001
    outputRouterLogits = try c.decodeIfPresent(Bool.self, forKey: .outputRouterLogits) ?? false
    decoderSparseStep = style != .mixtral ? try c.decodeIfPresent(Int.self, forKey: .sparseStep) ?? 1 : 1
    mlpOnlyLayers = style != .mixtral ? try c.decodeIfPresent([Int].self, forKey: .mlpOnly) ?? [] : []
    sharedExpertIntermediateSize = style == .qwen2 ? try c.decodeIfPresent(Int.self, forKey: .sharedExpert) ?? 5632 : 0
    func bad(_ key: String, _ why: String) -> ConfigError { .invalidValue(key, reason: why, file: "") }
    guard experts >= 1 else { throw bad("num_local_experts", "is \(experts); a sparse layer needs at least one expert") }
    guard expertsPerToken >= 1, expertsPerToken <= experts else {
      throw bad("num_experts_per_tok", "is \(expertsPerToken); it must be in 1…\(experts) (the experts)")
    }
    guard expertIntermediateSize >= 1 else { throw bad("moe_intermediate_size", "is \(expertIntermediateSize)") }
    guard routerAuxLossCoef.isFinite, routerAuxLossCoef >= 0 else {
      throw bad("router_aux_loss_coef", "is \(routerAuxLossCoef); it must be ≥ 0")
    }
    guard decoderSparseStep >= 1 else { throw bad("decoder_sparse_step", "is \(decoderSparseStep); it must be ≥ 1") }
    if let i = mlpOnlyLayers.first(where: { $0 < 0 || $0 >= layers }) {
      throw bad("mlp_only_layers", "names layer \(i) of a \(layers)-layer model")
    }
    if let noise = try? c.decodeIfPresent(Double.self, forKey: .jitter), noise != 0 {
      throw bad("router_jitter_noise", "is \(noise); router jitter (random scaling of the router's input in "
        + "training) is not implemented: set it to 0.0")
    }
    if style == .qwen2, sharedExpertIntermediateSize < 1 {
      throw bad("shared_expert_intermediate_size", "is \(sharedExpertIntermediateSize); Qwen2-MoE's shared expert needs a width ≥ 1")
    }
    if style != .qwen2, let shared = try? c.decodeIfPresent(Int.self, forKey: .sharedExpert), shared > 0 {
      throw bad("shared_expert_intermediate_size", "is \(shared); \(style) has no shared expert (qwen2_moe has)")
    }
  }

  /// Writes the keys back (`num_local_experts` for Mixtral, `num_experts` for Qwen3-MoE, as
  /// their checkpoints spell them).
  func encode(to encoder: Encoder, style: MoEStyle) throws {
    var c = encoder.container(keyedBy: Keys.self)
    try c.encode(experts, forKey: style == .mixtral ? .localExperts : .experts)
    try c.encode(expertsPerToken, forKey: .perToken)
    try c.encode(routerAuxLossCoef, forKey: .auxCoef)
    try c.encode(outputRouterLogits, forKey: .outputRouterLogits)
    if style == .mixtral {
      try c.encode(0.0, forKey: .jitter)
    } else {
      try c.encode(expertIntermediateSize, forKey: .moeIntermediate)
      try c.encode(normTopKProb, forKey: .normTopK)
      try c.encode(decoderSparseStep, forKey: .sparseStep)
      try c.encode(mlpOnlyLayers, forKey: .mlpOnly)
    }
    if style == .qwen2 { try c.encode(sharedExpertIntermediateSize, forKey: .sharedExpert) }
  }
}
