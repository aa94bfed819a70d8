import VKFCore

/// The sparse mixture-of-experts part of a decoder's architecture: which layers route each
/// token to K of E expert MLPs instead of one dense MLP, and how.
public struct MoEShape: Equatable, Sendable {
  /// Naming and routing conventions (Mixtral, Qwen3-MoE).
  public var style: MoEStyle
  /// Experts per sparse layer E, experts per token K, and each expert's MLP width F.
  public var experts: Int, topK: Int, intermediate: Int
  /// The K routing weights are renormalised to sum 1 (Mixtral; Qwen3-MoE's norm_topk_prob).
  public var normalizeTopK: Bool
  /// Per layer: true where the layer is sparse.
  public var sparseLayers: [Bool]
  /// The load-balancing loss's weight in training (`router_aux_loss_coef` when
  /// `output_router_logits`), 0 = no loss.
  public var auxLossCoefficient: Float
  /// `router_aux_loss_coef` as the model declares it, whatever `output_router_logits` says
  /// (transformers' default 0.001 where nothing declares it, as for a GGUF file): the weight
  /// TRL's DPO trainer gives the loss on every mixture-of-experts model.
  public var declaredAuxLossCoefficient: Float

  /// The shared expert's width (Qwen2-MoE's `shared_expert_intermediate_size`), 0 = none.
  public var sharedIntermediate: Int

  /// `declaredAuxLossCoefficient` nil: the same as `auxLossCoefficient`.
  public init(style: MoEStyle, experts: Int, topK: Int, intermediate: Int, normalizeTopK: Bool,
              sparseLayers: [Bool], auxLossCoefficient: Float = 0, declaredAuxLossCoefficient: Float? = nil,
              sharedIntermediate: Int = 0) {
    self.style = style; self.experts = experts; self.topK = topK; self.intermediate = intermediate
    self.normalizeTopK = normalizeTopK; self.sparseLayers = sparseLayers; self.auxLossCoefficient = auxLossCoefficient
    self.declaredAuxLossCoefficient = declaredAuxLossCoefficient ?? auxLossCoefficient
    self.sharedIntermediate = sharedIntermediate
  }

  /// transformers' `router_aux_loss_coef` default (MixtralConfig, Qwen3MoeConfig).
  public static let defaultAuxLossCoefficient: Float = 0.001

  /// Sparse layers in the model.
  public var sparseLayerCount: Int { sparseLayers.filter { $0 }.count }

  /// "layer i's block" module name: `model.layers.{i}.block_sparse_moe` / `.mlp`.
  public func blockPrefix(_ layer: Int) -> String { ParameterNames.layerPrefix(layer) + style.block }
  /// The router's weight (E, C).
  public func routerName(_ layer: Int) -> String { blockPrefix(layer) + ".gate.weight" }
  /// Expert `e`'s gate, up and down weight names.
  public func expertNames(_ layer: Int, _ e: Int) -> (gate: String, up: String, down: String) {
    let p = blockPrefix(layer) + ".experts.\(e).", n = style.expertProjections
    return (p + n.gate + ".weight", p + n.up + ".weight", p + n.down + ".weight")
  }

  /// The shared expert's gate, up and down weight names and its sigmoid gate's (1, C).
  public func sharedNames(_ layer: Int) -> (gate: String, up: String, down: String, scalar: String) {
    let p = blockPrefix(layer)
    return (p + ".shared_expert.gate_proj.weight", p + ".shared_expert.up_proj.weight",
            p + ".shared_expert.down_proj.weight", p + ".shared_expert_gate.weight")
  }

  /// Throws unless the sizes are positive and consistent with `layers`.
  func validate(layers: Int) throws {
    func bad(_ why: String) -> VKFError { .shapeMismatch(op: "MoEShape", detail: why) }
    guard experts >= 1, topK >= 1, topK <= experts, intermediate >= 1 else {
      throw bad("experts \(experts), topK \(topK) and intermediate \(intermediate) must be positive, topK ≤ experts")
    }
    guard sparseLayers.count == layers else { throw bad("\(sparseLayers.count) sparse flags for \(layers) layers") }
    guard sharedIntermediate >= 0, (sharedIntermediate > 0) == (style == .qwen2) else {
      throw bad("shared expert width \(sharedIntermediate) for \(style) (only Qwen2-MoE has one, of width ≥ 1)")
    }
    for c in [auxLossCoefficient, declaredAuxLossCoefficient] where !(c.isFinite && c >= 0) {
      throw bad("aux loss coefficient \(c)")
    }
  }
}

extension TransformerShape {
  /// Whether layer `l` routes through experts.
  public func isSparse(layer l: Int) -> Bool { moe.map { l < $0.sparseLayers.count && $0.sparseLayers[l] } ?? false }

  /// Whether any layer has a dense MLP.
  var hasDenseMLP: Bool { (0..<layers).contains { !isSparse(layer: $0) } }
}
