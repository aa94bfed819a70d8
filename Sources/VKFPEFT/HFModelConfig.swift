import Foundation
import VKFCore
import VKFModel

// MARK: - config.json for a written model

/// Tensor names of a reward (sequence-classification) model directory.
public enum RewardModelKeys {
  /// The head, (num_labels = 1, hidden), as transformers names it.
  public static let scoreWeight = "score.weight"
}

extension HFModelWriter {
  /// Relative tolerance when comparing a shape's RoPE table with one recomputed from a
  /// θ: a GGUF stores θ as f32 and the table is f32 powf, so equal tables differ by a few ulps
  /// (the same bound `TransformerShape.firstDifference` uses).
  static let ropeRelativeTolerance: Float = 1e-6

  /// `config` as config.json: its verbatim keys plus `architectures` and the dtype keys
  /// (`torch_dtype` for transformers 4, `dtype` for 5).
  static func configObject(_ config: DecoderConfig) throws -> [String: Any] {
    let data = try JSONEncoder().encode(config)
    guard var object = try JSONSerialization.jsonObject(with: data) as? [String: Any] else {
      throw PEFTError("internal: DecoderConfig did not encode to a JSON object")
    }
    guard let architecture = architectureNames[config.modelType] else {
      throw PEFTError("model_type \"\(config.modelType)\" has no transformers class to write in architectures")
    }
    object["architectures"] = [architecture]
    // Floats stay floats (JSONEncoder's 10000.0 parses back as an integer): as transformers writes.
    object["rope_theta"] = config.ropeTheta
    object["rms_norm_eps"] = config.rmsNormEps
    // Gemma's float-typed keys (transformers 5 validates the type) and its int-typed scalar.
    if let cap = config.attnLogitSoftcapping { object["attn_logit_softcapping"] = cap }
    if let cap = config.finalLogitSoftcapping { object["final_logit_softcapping"] = cap }
    if let base = config.localRopeTheta { object["rope_local_base_freq"] = base }
    if let q = config.queryPreAttnScalar, q == q.rounded(), abs(q) < 1e9 { object["query_pre_attn_scalar"] = Int(q) }
    if let moe = config.moe {  // float-typed (transformers 5 validates the type)
      object["router_aux_loss_coef"] = moe.routerAuxLossCoef
      if config.modelType == "mixtral" { object["router_jitter_noise"] = 0.0 }
    }
    object["torch_dtype"] = "float32"
    object["dtype"] = "float32"
    return object
  }

  /// A causal LM's config.json object turned into a reward model's, as transformers saves
  /// `AutoModelForSequenceClassification(num_labels=1)`: its class in `architectures`,
  /// `id2label {"0": "LABEL_0"}` / `label2id {"LABEL_0": 0}` (one label) and `pad_token_id`.
  static func sequenceClassificationConfig(_ object: [String: Any], modelType: String,
                                           padTokenID: Int) throws -> [String: Any] {
    guard let architecture = sequenceClassificationNames[modelType] else {
      throw PEFTError("model_type \"\(modelType)\" has no transformers sequence-classification class")
    }
    var out = object
    out["architectures"] = [architecture]
    out["id2label"] = ["0": "LABEL_0"]
    out["label2id"] = ["LABEL_0": 0]
    out["pad_token_id"] = padTokenID
    return out
  }

  /// Throws unless `config` describes exactly the architecture of the weights being written.
  static func check(_ config: DecoderConfig, matches shape: TransformerShape) throws {
    let fromConfig: TransformerShape
    do { fromConfig = try TransformerShape(config: config) } catch {
      throw PEFTError("the config cannot describe these weights: \(error)")
    }
    if let difference = fromConfig.firstDifference(from: shape) {
      throw PEFTError("the config describes a different model than the weights (config vs weights: "
        + "\(difference)); pass the config the model was loaded with")
    }
  }

  /// A config.json for weights loaded without one (a GGUF alone): every dimension from the
  /// shape, θ and context length from the GGUF metadata when given (else θ recovered from
  /// the RoPE table, context 2048 as transformers' LlamaConfig default), `gemma` for GeGLU
  /// with (1 + w) norms and a √hidden embedding scale, `gemma2` / `gemma3_text` when it also
  /// has sandwich norms (without / with q/k norms; windows spelled out as `layer_types`,
  /// the attention scale as `query_pre_attn_scalar`), `qwen3` with per-head q/k RMSNorm,
  /// `qwen2` when q/k/v carry biases, `llama` otherwise.
  ///
  /// Throws when the RoPE table is neither plain nor uniformly (linearly) scaled — a Llama 3.1
  /// `rope_freqs` table cannot be turned back into transformers' llama3 parameters; then
  /// the model's own config.json must be put beside the GGUF.
  public static func synthesizedConfig(shape: TransformerShape, facts: GGUFModelFacts?,
                                       bosTokenID: Int?, eosTokenIDs: [Int]) throws -> DecoderConfig {
    // qwen3 when the heads have q/k RMSNorm (its q/k/v biases would come with an o_proj bias
    // this trainer does not implement), qwen2 when q/k/v carry biases, else llama.
    if shape.qkNorm, shape.qkvBias {
      throw PEFTError("the model has per-head q/k RMSNorm and q/k/v biases, which no supported config "
        + "type describes; put the model's config.json beside the .gguf and load it again")
    }
    let gemma = shape.activation == .geluTanh || shape.normWeightOffset != 0 || shape.embeddingScale != 1
    if shape.sandwichNorms {
      return try synthesizedSandwichConfig(shape: shape, facts: facts, bosTokenID: bosTokenID, eosTokenIDs: eosTokenIDs)
    }
    if gemma, shape.qkNorm || shape.qkvBias || shape.activation != .geluTanh || shape.normWeightOffset != 1
      || shape.embeddingScale != Float(Double(shape.hidden).squareRoot()) {
      throw PEFTError("the model mixes Gemma's GeGLU / (1 + w) norms / scaled embedding with other features "
        + "no supported config type describes; put the model's config.json beside the .gguf and load it again")
    }
    if shape.fusedProjections, gemma || shape.qkNorm || shape.qkvBias {
      throw PEFTError("the model has fused projections with features Phi-3 lacks, which no supported config "
        + "type describes; put the model's config.json beside the .gguf and load it again")
    }
    if let m = shape.moe, gemma || shape.fusedProjections || shape.qkvBias != (m.style == .qwen2)
      || shape.qkNorm != (m.style == .qwen3) {
      let name = Architecture.registry.first { $0.moe == m.style }?.modelType ?? "\(m.style)"
      throw PEFTError("the model's experts come with features \(name) lacks (or lack its q/k/v biases / q/k norms), "
        + "which no supported config type describes; put the model's config.json beside the .gguf and load it again")
    }
    let experts = shape.moe.flatMap { m in Architecture.registry.first { $0.moe == m.style }?.modelType }
    let modelType = experts ?? (shape.fusedProjections ? "phi3"
      : gemma ? "gemma" : shape.qkNorm ? "qwen3" : shape.qkvBias ? "qwen2" : "llama")
    let theta = facts.map { Double($0.ropeFreqBase) } ?? recoveredTheta(shape)
    var object: [String: Any] = [
      "model_type": modelType,
      "hidden_size": shape.hidden,
      "intermediate_size": shape.intermediate,
      "num_hidden_layers": shape.layers,
      "num_attention_heads": shape.heads,
      "num_key_value_heads": shape.kvHeads,
      "head_dim": shape.headDim,
      "rms_norm_eps": shortestDouble(shape.rmsNormEps),
      "vocab_size": shape.vocab,
      "max_position_embeddings": facts?.contextLength ?? 2048,
      "tie_word_embeddings": shape.tiedEmbeddings,
      "rope_theta": theta,
      "hidden_act": gemma ? "gelu_pytorch_tanh" : "silu",
      "attention_bias": false,
    ]
    if let factor = try linearRopeFactor(shape, theta: theta) {
      object["rope_scaling"] = ["rope_type": "linear", "factor": factor]
    }
    if shape.fusedProjections, let w = shape.slidingWindows.first(where: { $0 > 0 }) {
      object["sliding_window"] = w  // Phi-3: every layer
    }
    if let m = shape.moe {
      guard m.sparseLayers.allSatisfy({ $0 }) else {
        throw PEFTError("the model mixes dense and sparse layers, which a GGUF does not say how to write; put the "
          + "model's config.json beside the .gguf and load it again")
      }
      object["num_experts_per_tok"] = m.topK
      object["router_aux_loss_coef"] = 0.001  // transformers' default; GGUF files carry none
      object["output_router_logits"] = m.auxLossCoefficient > 0
      if m.style == .mixtral {
        object["num_local_experts"] = m.experts
        object["intermediate_size"] = m.intermediate
        object["sliding_window"] = NSNull()
      } else {
        object["num_experts"] = m.experts
        object["moe_intermediate_size"] = m.intermediate
        object["norm_topk_prob"] = m.normalizeTopK
      }
      if m.style == .qwen2 {
        object["shared_expert_intermediate_size"] = m.sharedIntermediate
        object["qkv_bias"] = true
        object["use_sliding_window"] = false
      }
    }
    return try decodedConfig(object, bosTokenID: bosTokenID, eosTokenIDs: eosTokenIDs)
  }

  /// `synthesizedConfig` for Gemma 2 (no q/k norms) and Gemma 3 (q/k norms, a local RoPE
  /// base on its windowed layers).
  static func synthesizedSandwichConfig(shape: TransformerShape, facts: GGUFModelFacts?, bosTokenID: Int?,
                                        eosTokenIDs: [Int]) throws -> DecoderConfig {
    guard shape.activation == .geluTanh, shape.normWeightOffset == 1, !shape.qkvBias,
          shape.embeddingScale == Float(Double(shape.hidden).squareRoot()) else {
      throw PEFTError("the model has sandwich norms without the rest of Gemma 2/3 (GeGLU, (1 + w) norms, "
        + "√hidden embedding scale), which no supported config type describes; put the model's config.json "
        + "beside the .gguf and load it again")
    }
    let gemma3 = shape.qkNorm
    let theta = facts.map { Double($0.ropeFreqBase) } ?? recoveredTheta(shape)
    let windows = shape.slidingWindows
    let window = windows.first { $0 > 0 }
    guard windows.allSatisfy({ $0 == 0 || $0 == window }) else {
      throw PEFTError("the model's layers use sliding windows of several sizes, which a config.json cannot "
        + "describe; put the model's config.json beside the .gguf and load it again")
    }
    // 1/√q = the attention scale, q rounded as the f32 scale allows (256, 144, …).
    let scalar = (1 / Double(shape.attentionScale * shape.attentionScale)).rounded()
    var object: [String: Any] = [
      "model_type": gemma3 ? "gemma3_text" : "gemma2",
      "hidden_size": shape.hidden, "intermediate_size": shape.intermediate,
      "num_hidden_layers": shape.layers, "num_attention_heads": shape.heads,
      "num_key_value_heads": shape.kvHeads, "head_dim": shape.headDim,
      "rms_norm_eps": shortestDouble(shape.rmsNormEps), "vocab_size": shape.vocab,
      "max_position_embeddings": facts?.contextLength ?? 8192,
      "tie_word_embeddings": shape.tiedEmbeddings, "rope_theta": theta,
      "hidden_activation": "gelu_pytorch_tanh", "attention_bias": false,
      "query_pre_attn_scalar": scalar,
      "attn_logit_softcapping": shape.attentionSoftcap > 0 ? Double(shape.attentionSoftcap) : NSNull(),
      "final_logit_softcapping": shape.finalLogitSoftcap > 0 ? Double(shape.finalLogitSoftcap) : NSNull(),
      "sliding_window": window.map { $0 as Any } ?? NSNull(),
      "layer_types": (0..<shape.layers).map { shape.window(layer: $0) > 0 ? "sliding_attention" : "full_attention" },
    ]
    if gemma3, !shape.localInvFreq.isEmpty {
      object["rope_local_base_freq"] = recoveredTheta({ var s = shape; s.invFreq = shape.localInvFreq; return s }())
    }
    if try linearRopeFactor(shape, theta: theta) != nil {
      throw PEFTError("the Gemma model's RoPE table is scaled, which vkfinetune cannot write back into a "
        + "config.json; put the model's config.json beside the .gguf and load it again")
    }
    return try decodedConfig(object, bosTokenID: bosTokenID, eosTokenIDs: eosTokenIDs)
  }

  /// A synthesised config object with the special token ids, decoded (and so validated).
  private static func decodedConfig(_ object: [String: Any], bosTokenID: Int?, eosTokenIDs: [Int]) throws -> DecoderConfig {
    var object = object
    if let bosTokenID { object["bos_token_id"] = bosTokenID }
    if eosTokenIDs.count == 1 { object["eos_token_id"] = eosTokenIDs[0] }
    else if !eosTokenIDs.isEmpty { object["eos_token_id"] = eosTokenIDs }
    let data = try JSONSerialization.data(withJSONObject: object)
    return try DecoderConfig.decode(data, file: "<synthesised config>")
  }

  /// θ from the ratio of the first and last inverse frequencies, `inv[0]/inv[k] = θ^(2k/d)`
  /// (the ratio is unchanged by linear scaling, and the last k has the smallest exponent
  /// error), rounded to an integer when within the f32 error of one (θ is almost always an
  /// integer: 10000, 500000, 1e6).
  static func recoveredTheta(_ shape: TransformerShape) -> Double {
    let k = shape.invFreq.count - 1
    guard k >= 1, shape.invFreq[k] > 0, shape.invFreq[0] > 0 else { return 10000 }
    let ratio = Double(shape.invFreq[0]) / Double(shape.invFreq[k])
    let theta = pow(ratio, Double(shape.headDim) / Double(2 * k))
    let rounded = theta.rounded()
    return abs(theta - rounded) <= theta * 1e-5 ? rounded : theta
  }

  /// nil when the shape's table is the plain θ table; the factor when every frequency is
  /// the plain one divided by the same factor (linear scaling); otherwise an error.
  static func linearRopeFactor(_ shape: TransformerShape, theta: Double) throws -> Double? {
    let plain = RoPE.inverseFrequencies(headDim: shape.headDim, theta: theta)
    func close(_ a: Float, _ b: Float) -> Bool { abs(a - b) <= max(abs(a), abs(b)) * ropeRelativeTolerance * 4 }
    if zip(plain, shape.invFreq).allSatisfy({ close($0, $1) }) { return nil }
    guard let first = shape.invFreq.first, first > 0 else {
      throw PEFTError("the model's RoPE table is empty or non-positive; cannot write its config")
    }
    let factor = Double(plain[0] / first)
    let scaled = plain.map { Float(Double($0) / factor) }
    guard zip(scaled, shape.invFreq).allSatisfy({ close($0, $1) }) else {
      throw PEFTError("the model's RoPE table is scaled in a way a config.json cannot be rebuilt from "
        + "(e.g. a Llama 3.1 rope_freqs table); put the model's config.json beside the .gguf and load it again")
    }
    return Double(shortestDouble(Float(factor)))
  }

  /// The Double whose decimal text is the Float's shortest one (1e-5, not 9.99999974737875e-06).
  static func shortestDouble(_ x: Float) -> Double { Double("\(x)") ?? Double(x) }
}
