import Foundation
import VKFCore

// MARK: - From a Hugging Face config

extension TransformerShape {
  /// The architecture a `config.json` describes, with its RoPE table (scaling included, as
  /// `DecoderConfig.ropeInverseFrequencies` computes it for sequences within the trained context).
  ///
  /// Throws for features the decoder does not implement (biases on o_proj or the MLP), so a
  /// model that would silently compute something else never loads.
  public init(config: DecoderConfig, file: String = "config.json") throws(ModelFileError) {
    if config.hasOutputProjectionBias || config.mlpBias {
      throw ModelFileError(file, "attention_bias on o_proj or mlp_bias is set; vkfinetune implements "
        + "biases on q/k/v only (Qwen2 style), so this model cannot be loaded")
    }
    self.init(hidden: config.hiddenSize, layers: config.numHiddenLayers, heads: config.numAttentionHeads,
              kvHeads: config.numKeyValueHeads, headDim: config.headDim,
              intermediate: config.intermediateSize, vocab: config.vocabSize,
              rmsNormEps: Float(config.rmsNormEps), invFreq: config.ropeInverseFrequencies(),
              tiedEmbeddings: config.tieWordEmbeddings, qkvBias: config.hasQKVBias)
    qkNorm = config.hasQKNorm
    fusedProjections = config.architecture.fusedProjections
    if let m = config.moe, let style = config.architecture.moe {
      moe = MoEShape(style: style, experts: m.experts, topK: m.expertsPerToken, intermediate: m.expertIntermediateSize,
                     normalizeTopK: m.normTopKProb, sparseLayers: (0..<config.numHiddenLayers).map(m.isSparse),
                     auxLossCoefficient: Float(m.trainingAuxLossCoef),
                     declaredAuxLossCoefficient: Float(m.routerAuxLossCoef),
                     sharedIntermediate: m.sharedExpertIntermediateSize)
    }
    activation = config.gatedActivation ?? .silu
    if config.isGemmaFamily {
      normWeightOffset = 1
      embeddingScale = Float(Double(config.hiddenSize).squareRoot())
    }
    if config.hasSandwichNorms {
      sandwichNorms = true
      if let q = config.queryPreAttnScalar, q > 0 { attentionScaleOverride = Float(1 / q.squareRoot()) }
    }
    attentionSoftcap = Float(config.attnLogitSoftcapping ?? 0)
    finalLogitSoftcap = Float(config.finalLogitSoftcapping ?? 0)
    if config.architecture.defaultLocalRopeTheta != nil {  // Gemma 3's windowed layers
      if let local = config.localRopeTheta {
        localInvFreq = RoPE.inverseFrequencies(headDim: config.headDim, theta: local)
      }
    }
    do {
      let windows = try config.layerWindows(file: file)
      slidingWindows = windows.contains { $0 > 0 } ? windows : []
    } catch {
      throw ModelFileError(file, "\(error)")
    }
  }
}

// MARK: - From GGUF metadata

extension TransformerShape {
  /// The GGUF architectures whose tensors map onto this decoder (Mistral and Mixtral GGUFs
  /// say "llama"; Qwen3-MoE is "qwen3moe", Qwen2-MoE "qwen2moe"). Other mixture-of-experts
  /// architectures (deepseek2, olmoe, …) are refused by name.
  public static let ggufArchitectures = ["llama", "qwen2", "qwen3", "qwen2moe", "qwen3moe", "gemma", "gemma2", "gemma3",
                                         "phi3"]

  /// The block count of the Gemma 2 / Gemma 3 27B models, whose attention scale llama.cpp
  /// takes as (hidden / heads)^−½ (their query_pre_attn_scalar); every other size uses
  /// head_dim^−½. GGUF files carry no query_pre_attn_scalar, so this is llama.cpp's rule.
  static let gemma27BBlockCounts = ["gemma2": 46, "gemma3": 62]

  /// Gemma 3's every-N-th full-attention layer and its local RoPE base, fixed by llama.cpp for
  /// the `gemma3` architecture (neither is in the file).
  static let gemma3SlidingWindowPattern = 6, gemma3LocalRopeBase = 10_000.0

  /// RMSNorm epsilon when a GGUF lacks `<arch>.attention.layer_norm_rms_epsilon`. llama.cpp
  /// requires the key for these architectures, so a file without it is hand-made; 1e-5 is the
  /// value Llama 2/3, SmolLM2 and Mistral use (Qwen2 uses 1e-6 and always writes the key).
  public static let ggufDefaultRMSNormEps: Float = 1e-5

  /// The architecture a GGUF file's metadata describes.
  ///
  /// head_dim comes from `attention.key_length` (else hidden / heads), the LM head is tied
  /// when the file has no `output.weight`, q/k/v biases follow the tensors present, and the
  /// RoPE table is θ^(−2i/d) adjusted by `rope_freqs.weight` (llama.cpp's per-frequency
  /// divisors, which its converter writes for Llama 3.1 scaling) or by linear
  /// `rope.scaling.*` keys. Experts ("llama" with `expert_count` > 0, "qwen3moe") follow
  /// `ggufMixtureOfExperts`: every layer sparse, the top-k weights renormalised, no
  /// load-balancing loss until a run asks for one.
  public init(gguf facts: GGUFModelFacts, weights: GGUFWeightSource) throws(ModelFileError) {
    let path = weights.file.path
    guard Self.ggufArchitectures.contains(facts.architecture) else {
      let moe = facts.expertCount > 0
        ? " (of mixture-of-experts models, only Mixtral as \"llama\", \"qwen2moe\" and \"qwen3moe\")" : ""
      throw ModelFileError(path, "general.architecture is \"\(facts.architecture)\"; vkfinetune loads "
        + "\(Self.ggufArchitectures.joined(separator: ", ")) GGUF files" + moe)
    }
    guard let vocab = facts.vocabSize else {
      throw ModelFileError(path, "neither \(facts.architecture).vocab_size nor tokenizer.ggml.tokens is "
        + "present, so the vocabulary size is unknown")
    }
    if let rotary = facts.ropeDimensionCount, rotary != facts.headDim {
      throw ModelFileError(path, "rope.dimension_count \(rotary) differs from the head size "
        + "\(facts.headDim); partial rotary embeddings are not implemented")
    }
    var invFreq = RoPE.inverseFrequencies(headDim: facts.headDim, theta: Double(facts.ropeFreqBase))
    if let divisors = try Self.ropeFrequencyDivisors(weights, count: invFreq.count) {
      // llama.cpp: theta = pos · θ_i / freq_factors[i].
      invFreq = zip(invFreq, divisors).map { $0 / $1 }
    }
    switch facts.ropeScalingType {
    case nil, "none"?:
      break
    case "linear"?:
      let factor = facts.ropeScalingFactor ?? 1
      guard factor > 0 else { throw ModelFileError(path, "rope.scaling.factor must be > 0, got \(factor)") }
      invFreq = invFreq.map { $0 / factor }
    case let other?:
      throw ModelFileError(path, "rope.scaling.type \"\(other)\" is not implemented (supported: linear, "
        + "and llama3 through rope_freqs.weight); put the model's config.json beside the .gguf if it "
        + "uses a scaling transformers knows")
    }
    let qBias = ParameterNames.layerPrefix(0) + "self_attn.q_proj.bias"
    let qNorm = ParameterNames.layerPrefix(0) + "self_attn.q_norm.weight"
    self.init(hidden: facts.embeddingLength, layers: facts.blockCount, heads: facts.headCount,
              kvHeads: facts.headCountKV, headDim: facts.headDim, intermediate: facts.feedForwardLength,
              vocab: vocab, rmsNormEps: facts.rmsNormEpsilon ?? Self.ggufDefaultRMSNormEps,
              invFreq: invFreq, tiedEmbeddings: facts.tiedEmbeddings,
              qkvBias: weights.tensorNames.contains(qBias))
    // Qwen3's per-head q/k RMSNorm (`blk.N.attn_q_norm` / `attn_k_norm`).
    qkNorm = weights.tensorNames.contains(qNorm)
    moe = try Self.ggufMixtureOfExperts(facts, weights: weights)
    if facts.architecture.hasPrefix("gemma") {
      activation = .geluTanh
      normWeightOffset = 1
      embeddingScale = Float(Double(facts.embeddingLength).squareRoot())
    }
    if facts.architecture == "phi3" {
      fusedProjections = true
      if let w = facts.slidingWindow, w > 0 { slidingWindows = Array(repeating: w, count: facts.blockCount) }
    }
    if let big = Self.gemma27BBlockCounts[facts.architecture] {
      sandwichNorms = true
      let scaleDim = facts.blockCount == big ? facts.embeddingLength / facts.headCount : facts.headDim
      if scaleDim != facts.headDim { attentionScaleOverride = 1 / Float(scaleDim).squareRoot() }
      attentionSoftcap = facts.attentionSoftcap ?? 0
      finalLogitSoftcap = facts.finalLogitSoftcap ?? 0
      guard attentionSoftcap >= 0, finalLogitSoftcap >= 0, attentionSoftcap.isFinite, finalLogitSoftcap.isFinite else {
        throw ModelFileError(path, "a soft-capping value is negative or not finite "
          + "(\(attentionSoftcap), \(finalLogitSoftcap)); the file is corrupt")
      }
      if let w = facts.slidingWindow {
        guard w > 0 else { throw ModelFileError(path, "\(facts.architecture).attention.sliding_window must be > 0, got \(w)") }
        // llama.cpp: Gemma 2 windows every even layer, Gemma 3 all but every 6th.
        let pattern = facts.architecture == "gemma2" ? 2 : Self.gemma3SlidingWindowPattern
        slidingWindows = (0..<facts.blockCount).map { ($0 + 1) % pattern != 0 ? w : 0 }
      }
      if facts.architecture == "gemma3" {
        localInvFreq = RoPE.inverseFrequencies(headDim: facts.headDim, theta: Self.gemma3LocalRopeBase)
      }
    }
  }

  /// The `rope_freqs.weight` divisors (headDim / 2 values), or nil when the file has none.
  static func ropeFrequencyDivisors(_ weights: GGUFWeightSource, count: Int) throws(ModelFileError) -> [Float]? {
    guard let info = weights.file.tensor(named: "rope_freqs.weight") else { return nil }
    let values = try GGUFWeightSource.dequantize(info, in: weights.file)
    guard values.count == count, values.allSatisfy({ $0 > 0 }) else {
      throw ModelFileError(weights.file.path, "rope_freqs.weight has \(values.count) values (want \(count), "
        + "all > 0); the file is inconsistent")
    }
    return values
  }

  /// The first routing setting in which two mixture-of-experts parts disagree (the
  /// load-balancing weight is a training choice, not compared).
  static func firstDifference(_ a: MoEShape?, _ b: MoEShape?) -> String? {
    switch (a, b) {
    case (nil, nil): return nil
    case let (a?, nil): return "mixture of experts: \(a.experts) experts vs none (dense)"
    case let (nil, b?): return "mixture of experts: none (dense) vs \(b.experts) experts"
    case let (a?, b?):
      if a.style != b.style { return "mixture-of-experts style \(a.style) vs \(b.style)" }
      let pairs = [("experts", a.experts, b.experts), ("experts per token (top-k)", a.topK, b.topK),
                   ("expert width", a.intermediate, b.intermediate),
                   ("shared expert width", a.sharedIntermediate, b.sharedIntermediate)]
      if let (name, x, y) = pairs.first(where: { $0.1 != $0.2 }) { return "\(name) \(x) vs \(y)" }
      if a.normalizeTopK != b.normalizeTopK {
        return "top-k weights renormalised \(a.normalizeTopK) vs \(b.normalizeTopK)"
      }
      if a.sparseLayers != b.sparseLayers {
        let sparse = { (m: MoEShape) in m.sparseLayers.indices.filter { m.sparseLayers[$0] } }
        return "sparse layers \(sparse(a)) vs \(sparse(b))"
      }
      return nil
    }
  }

  /// The first dimension in which two shapes disagree, as "name a vs b", or nil when they
  /// describe the same architecture (RoPE tables compared to 1e-6 relative, since a GGUF
  /// stores θ as f32).
  public func firstDifference(from other: TransformerShape) -> String? {
    let pairs: [(String, Int, Int)] = [
      ("hidden", hidden, other.hidden), ("layers", layers, other.layers), ("heads", heads, other.heads),
      ("kvHeads", kvHeads, other.kvHeads), ("headDim", headDim, other.headDim),
      ("intermediate", intermediate, other.intermediate), ("vocab", vocab, other.vocab),
    ]
    if let (name, a, b) = pairs.first(where: { $0.1 != $0.2 }) { return "\(name) \(a) vs \(b)" }
    if tiedEmbeddings != other.tiedEmbeddings { return "tiedEmbeddings \(tiedEmbeddings) vs \(other.tiedEmbeddings)" }
    if qkvBias != other.qkvBias { return "qkvBias \(qkvBias) vs \(other.qkvBias)" }
    if qkNorm != other.qkNorm { return "qkNorm \(qkNorm) vs \(other.qkNorm)" }
    if activation != other.activation { return "activation \(activation) vs \(other.activation)" }
    if normWeightOffset != other.normWeightOffset {
      return "RMSNorm weight offset \(normWeightOffset) vs \(other.normWeightOffset)"
    }
    if embeddingScale != other.embeddingScale { return "embedding scale \(embeddingScale) vs \(other.embeddingScale)" }
    if sandwichNorms != other.sandwichNorms { return "sandwich norms \(sandwichNorms) vs \(other.sandwichNorms)" }
    if fusedProjections != other.fusedProjections {
      return "fused projections \(fusedProjections) vs \(other.fusedProjections)"
    }
    if let difference = Self.firstDifference(moe, other.moe) { return difference }
    for (name, a, b) in [("attention soft-cap", attentionSoftcap, other.attentionSoftcap),
                         ("logit soft-cap", finalLogitSoftcap, other.finalLogitSoftcap)]
    where abs(a - b) > max(a, b) * 1e-6 {
      return "\(name) \(a) vs \(b)"
    }
    if abs(rmsNormEps - other.rmsNormEps) > rmsNormEps * 1e-6 {
      return "rmsNormEps \(rmsNormEps) vs \(other.rmsNormEps)"
    }
    for (a, b) in zip(invFreq, other.invFreq) where abs(a - b) > max(abs(a), abs(b)) * 1e-6 {
      return "RoPE inverse frequency \(a) vs \(b)"
    }
    return nil
  }
}
