import VKFCore

/// The architecture of a decoder: everything the forward and backward pass need
/// to know, and nothing about files. The coordinator builds it from `DecoderConfig`.
public struct TransformerShape: Equatable, Sendable {
  /// Residual-stream width (`hidden_size`).
  public var hidden: Int
  /// Number of decoder layers (`num_hidden_layers`).
  public var layers: Int
  /// Query heads (`num_attention_heads`).
  public var heads: Int
  /// Key/value heads (`num_key_value_heads`); divides `heads` (grouped-query attention).
  public var kvHeads: Int
  /// Size of one head (`head_dim`, default hidden / heads); even, for RoPE.
  public var headDim: Int
  /// MLP width (`intermediate_size`).
  public var intermediate: Int
  /// Vocabulary size.
  public var vocab: Int
  /// RMSNorm epsilon (`rms_norm_eps`).
  public var rmsNormEps: Float
  /// RoPE inverse frequencies (headDim / 2 values), from `RoPE.inverseFrequencies`.
  public var invFreq: [Float]
  /// The LM head reuses the embedding matrix (`tie_word_embeddings`).
  public var tiedEmbeddings: Bool
  /// q/k/v projections have biases (Qwen2).
  public var qkvBias: Bool
  /// Each layer's sliding attention window (keys i − window < j ≤ i; 0 = full causal), or
  /// empty when no layer has one (`DecoderConfig.layerWindows`: Mistral, Qwen2's upper layers).
  public var slidingWindows: [Int] = []

  /// RMSNorm over each query and key head (weights (HS) per layer) between the projection
  /// and RoPE (Qwen3's q_norm / k_norm).
  public var qkNorm = false

  /// The MLP gate's activation: silu (SwiGLU) or tanh-approximated GELU (Gemma's GeGLU).
  public var activation: GatedActivation = .silu
  /// Added to every RMSNorm weight: 1 for Gemma's (1 + w) norms, 0 otherwise.
  public var normWeightOffset: Float = 0
  /// The embedding lookup is multiplied by this: Gemma's √hidden, 1 otherwise (the tied LM
  /// head uses the table as stored).
  public var embeddingScale: Float = 1

  /// The features beyond a plain Llama block, for the run's header ("sliding window 4096 on
  /// 24 of 28 layers", "q/k norm", "GeGLU, (1 + w) norms, embedding × 48.0").
  public var featureSummary: [String] {
    var out: [String] = []
    let windowed = slidingWindows.filter { $0 > 0 }
    if let w = windowed.first {
      let same = windowed.allSatisfy { $0 == w }
      out.append("sliding window \(same ? String(w) : "of several sizes") on \(windowed.count) of \(layers) layers")
    }
    if qkNorm { out.append("q/k norm") }
    if activation == .geluTanh { out.append("GeGLU") }
    if normWeightOffset != 0 { out.append("(\(normWeightOffset == 1 ? "1" : "\(normWeightOffset)") + w) norms") }
    if embeddingScale != 1 { out.append("embedding × \((embeddingScale * 10).rounded() / 10)") }
    if sandwichNorms { out.append("sandwich norms") }
    if !localInvFreq.isEmpty { out.append("local RoPE base on windowed layers") }
    if fusedProjections { out.append("fused qkv / gate_up") }
    if let m = moe {
      out.append("\(m.experts) experts, top-\(m.topK) on \(m.sparseLayerCount) of \(layers) layers"
        + (m.auxLossCoefficient > 0 ? ", load-balancing loss × \(m.auxLossCoefficient)" : ""))
    }
    if attentionSoftcap > 0 { out.append("attention soft-cap \(attentionSoftcap)") }
    if finalLogitSoftcap > 0 { out.append("logit soft-cap \(finalLogitSoftcap)") }
    return out
  }

  /// Gemma 2/3's "sandwich" norms: the attention and MLP outputs are RMSNormed before their
  /// residual adds (`post_attention_layernorm`, `post_feedforward_layernorm`), and the MLP's
  /// input norm is `pre_feedforward_layernorm`.
  public var sandwichNorms = false
  /// The attention softmax scale when not 1/√headDim (Gemma 3: query_pre_attn_scalar^−½).
  public var attentionScaleOverride: Float? = nil
  /// RoPE inverse frequencies of the sliding-window layers when they differ from `invFreq`
  /// (Gemma 3's local base 10 000); empty otherwise.
  public var localInvFreq: [Float] = []

  /// Gemma 2's `attn_logit_softcapping`: every scaled attention score s becomes
  /// cap·tanh(s / cap) before the mask and softmax; 0 = none.
  public var attentionSoftcap: Float = 0
  /// Gemma 2's `final_logit_softcapping`: logits become cap·tanh(logits / cap) before the
  /// loss and sampling; 0 = none.
  public var finalLogitSoftcap: Float = 0

  /// Phi-3's fused projections: q, k and v stored as one `self_attn.qkv_proj` (q rows, then
  /// k, then v) and gate and up as one `mlp.gate_up_proj` (gate rows first), as its
  /// checkpoints and PEFT name them; the model runs the parts as row views of the fused
  /// tensors (`fusedGroups`).
  public var fusedProjections = false

  /// One fused projection of a layer: its module suffix and its parts' suffixes and rows.
  public struct FusedProjection: Equatable, Sendable {
    /// `self_attn.qkv_proj` or `mlp.gate_up_proj`.
    public var fused: String
    /// The split projections it stores, in row order.
    public var parts: [(suffix: String, rows: Int)]
    public static func == (a: Self, b: Self) -> Bool {
      a.fused == b.fused && a.parts.map(\.suffix) == b.parts.map(\.suffix) && a.parts.map(\.rows) == b.parts.map(\.rows)
    }
  }

  /// The fused projections of every layer (empty without `fusedProjections`).
  public var fusedGroups: [FusedProjection] {
    guard fusedProjections else { return [] }
    return [FusedProjection(fused: "self_attn.qkv_proj",
                            parts: [("self_attn.q_proj", qWidth), ("self_attn.k_proj", kvWidth), ("self_attn.v_proj", kvWidth)]),
            FusedProjection(fused: "mlp.gate_up_proj", parts: [("mlp.gate_proj", intermediate), ("mlp.up_proj", intermediate)])]
  }

  /// Every layer's fused projections by module name (`model.layers.{i}.self_attn.qkv_proj`),
  /// each with its parts' module names, first rows and row counts, in layer order; empty
  /// without fused projections.
  public var fusedModules: [(module: String, parts: [(module: String, rowOffset: Int, rows: Int)])] {
    (0..<layers).flatMap { i in
      let prefix = ParameterNames.layerPrefix(i)
      return fusedGroups.map { g in
        var row = 0
        let parts = g.parts.map { part -> (module: String, rowOffset: Int, rows: Int) in
          defer { row += part.rows }
          return (prefix + part.suffix, row, part.rows)
        }
        return (prefix + g.fused, parts)
      }
    }
  }

  /// The sparse mixture-of-experts layers (Mixtral, Qwen3-MoE); nil for dense models.
  public var moe: MoEShape? = nil

  /// The softmax scale of every layer's attention.
  public var attentionScale: Float { attentionScaleOverride ?? 1 / Float(headDim).squareRoot() }

  /// Layer `l`'s sliding window, 0 for full causal attention.
  public func window(layer l: Int) -> Int { l < slidingWindows.count ? slidingWindows[l] : 0 }

  /// A shape with an explicit RoPE table.
  public init(hidden: Int, layers: Int, heads: Int, kvHeads: Int, headDim: Int? = nil,
              intermediate: Int, vocab: Int, rmsNormEps: Float, invFreq: [Float],
              tiedEmbeddings: Bool, qkvBias: Bool) {
    self.hidden = hidden; self.layers = layers; self.heads = heads; self.kvHeads = kvHeads
    self.headDim = headDim ?? (heads > 0 ? hidden / heads : 0)
    self.intermediate = intermediate; self.vocab = vocab; self.rmsNormEps = rmsNormEps
    self.invFreq = invFreq; self.tiedEmbeddings = tiedEmbeddings; self.qkvBias = qkvBias
  }

  /// A shape with the default RoPE table θ^(−2i/headDim) (no scaling).
  public init(hidden: Int, layers: Int, heads: Int, kvHeads: Int, headDim: Int? = nil,
              intermediate: Int, vocab: Int, rmsNormEps: Float, ropeTheta: Double,
              tiedEmbeddings: Bool, qkvBias: Bool) {
    let hd = headDim ?? (heads > 0 ? hidden / heads : 0)
    self.init(hidden: hidden, layers: layers, heads: heads, kvHeads: kvHeads, headDim: hd,
              intermediate: intermediate, vocab: vocab, rmsNormEps: rmsNormEps,
              invFreq: RoPE.inverseFrequencies(headDim: hd, theta: ropeTheta),
              tiedEmbeddings: tiedEmbeddings, qkvBias: qkvBias)
  }

  /// Query heads per key/value head.
  public var groupSize: Int { heads / kvHeads }
  /// Width of the concatenated query heads (heads · headDim).
  public var qWidth: Int { heads * headDim }
  /// Width of the concatenated key (or value) heads (kvHeads · headDim).
  public var kvWidth: Int { kvHeads * headDim }

  /// Throws unless the dimensions are positive and consistent.
  public func validate() throws {
    func bad(_ why: String) -> VKFError { .shapeMismatch(op: "TransformerShape", detail: why) }
    guard [hidden, layers, heads, kvHeads, headDim, intermediate, vocab].allSatisfy({ $0 > 0 }) else {
      throw bad("every dimension must be positive: \(self)")
    }
    guard heads % kvHeads == 0 else {
      throw bad("heads \(heads) is not a multiple of kvHeads \(kvHeads)")
    }
    guard headDim % 2 == 0, invFreq.count == headDim / 2 else {
      throw bad("headDim \(headDim) must be even with headDim/2 RoPE frequencies (got \(invFreq.count))")
    }
    guard rmsNormEps > 0 else { throw bad("rmsNormEps \(rmsNormEps) must be > 0") }
    for (name, cap) in [("attentionSoftcap", attentionSoftcap), ("finalLogitSoftcap", finalLogitSoftcap)] {
      guard cap.isFinite, cap >= 0 else { throw bad("\(name) \(cap) must be 0 (none) or a positive cap") }
    }
    guard localInvFreq.isEmpty || localInvFreq.count == headDim / 2 else {
      throw bad("localInvFreq has \(localInvFreq.count) frequencies for headDim \(headDim)")
    }
    guard !fusedProjections || (!qkvBias && hidden % 64 == 0) else {
      throw bad("fused projections need hidden % 64 == 0 (their parts are aligned views) and no q/k/v bias")
    }
    try moe?.validate(layers: layers)
    guard slidingWindows.isEmpty || (slidingWindows.count == layers && slidingWindows.allSatisfy({ $0 >= 0 })) else {
      throw bad("slidingWindows \(slidingWindows): one window ≥ 0 per layer (\(layers)) or none")
    }
  }

  // MARK: - Parameter names (Hugging Face layout)

  /// The Hugging Face names and shapes of every parameter, in load order.
  public var parameterShapes: [(name: String, shape: [Int])] {
    var out: [(String, [Int])] = [(ParameterNames.embedding, [vocab, hidden])]
    for i in 0..<layers {
      let p = ParameterNames.layerPrefix(i)
      out.append((p + "input_layernorm.weight", [hidden]))
      if fusedProjections {
        out.append((p + "self_attn.qkv_proj.weight", [qWidth + 2 * kvWidth, hidden]))
      } else {
        for (proj, rows) in [("q_proj", qWidth), ("k_proj", kvWidth), ("v_proj", kvWidth)] {
          out.append((p + "self_attn.\(proj).weight", [rows, hidden]))
          if qkvBias { out.append((p + "self_attn.\(proj).bias", [rows])) }
        }
      }
      out.append((p + "self_attn.o_proj.weight", [hidden, qWidth]))
      if qkNorm {
        out.append((p + "self_attn.q_norm.weight", [headDim]))
        out.append((p + "self_attn.k_norm.weight", [headDim]))
      }
      if sandwichNorms {
        out.append((p + "post_attention_layernorm.weight", [hidden]))
        out.append((p + "pre_feedforward_layernorm.weight", [hidden]))
        out.append((p + "post_feedforward_layernorm.weight", [hidden]))
      } else {
        out.append((p + "post_attention_layernorm.weight", [hidden]))
      }
      if let m = moe, isSparse(layer: i) {
        out.append((m.routerName(i), [m.experts, hidden]))
        for e in 0..<m.experts {
          let names = m.expertNames(i, e)
          out.append((names.gate, [m.intermediate, hidden]))
          out.append((names.up, [m.intermediate, hidden]))
          out.append((names.down, [hidden, m.intermediate]))
        }
        if m.sharedIntermediate > 0 {
          let s = m.sharedNames(i), f = m.sharedIntermediate
          out += [(s.gate, [f, hidden]), (s.up, [f, hidden]), (s.down, [hidden, f]), (s.scalar, [1, hidden])]
        }
      } else if fusedProjections {
        out.append((p + "mlp.gate_up_proj.weight", [2 * intermediate, hidden]))
      } else {
        out.append((p + "mlp.gate_proj.weight", [intermediate, hidden]))
        out.append((p + "mlp.up_proj.weight", [intermediate, hidden]))
      }
      if !isSparse(layer: i) { out.append((p + "mlp.down_proj.weight", [hidden, intermediate])) }
    }
    out.append((ParameterNames.finalNorm, [hidden]))
    if !tiedEmbeddings { out.append((ParameterNames.lmHead, [vocab, hidden])) }
    return out
  }
}

/// Hugging Face parameter names used outside the per-layer loop.
public enum ParameterNames {
  /// The token embedding (also the LM head when tied).
  public static let embedding = "model.embed_tokens.weight"
  /// The final RMSNorm.
  public static let finalNorm = "model.norm.weight"
  /// The untied LM head.
  public static let lmHead = "lm_head.weight"
  /// "model.layers.{i}."
  public static func layerPrefix(_ i: Int) -> String { "model.layers.\(i)." }
}

/// Which parameters get gradients.
public enum TrainableParameters: Sendable, Equatable {
  /// Every parameter (full fine-tuning).
  case all
  /// None: inference only, `backward` is refused.
  case none
  /// These Hugging Face names (unknown names are an error at model creation).
  case named(Set<String>)

  /// True when the parameter `name` is trained.
  public func contains(_ name: String) -> Bool {
    switch self {
    case .all: return true
    case .none: return false
    case .named(let s): return s.contains(name)
    }
  }
}
