import VKFCore

// MARK: - Mixture of experts from GGUF metadata

// What llama.cpp defines, and this file follows (ggml-org/llama.cpp, as vendored by
// llama-cpp-python 0.3.36):
// - Mixtral is written as architecture "llama" with `llama.expert_count` and
//   `llama.expert_used_count` (convert_hf_to_gguf.py `TextModel.set_gguf_parameters`); the
//   experts are `llama.feed_forward_length` wide. `src/models/llama.cpp` builds every layer
//   sparse when expert_count > 0 and dense when it is 0.
// - Qwen3-MoE is "qwen3moe" (`Qwen3MoeModel`), experts `qwen3moe.expert_feed_forward_length`
//   wide (else feed_forward_length / expert_used_count, `src/models/qwen3moe.cpp`), every layer
//   sparse (the converter drops `mlp_only_layers` / `decoder_sparse_step`; llama.cpp requires
//   the expert tensors in every block).
// - Qwen2-MoE is "qwen2moe" (`Qwen2MoeModel`): experts `expert_feed_forward_length` wide and
//   a shared expert `expert_shared_feed_forward_length` wide in every block (`ffn_{gate,up}_shexp`
//   ne [C, Fs], `ffn_down_shexp` [Fs, C], its scalar gate `ffn_gate_inp_shexp` [C, 1], kept f32),
//   routed without renormalising the top-k weights (`src/models/qwen2moe.cpp`: norm_w = false).
// - Mixtral and Qwen3-MoE route with softmax → top-k → renormalise (`build_moe_ffn(…, norm_w =
//   true, …, LLAMA_EXPERT_GATING_FUNC_TYPE_SOFTMAX)`); none reads `expert_weights_norm`, which
//   the converters never write. Here the key, when a file has it, is honoured: a file that
//   says otherwise is not silently run another way.
// - Tensors per block: `ffn_gate_inp` (ne [C, E], the router), `ffn_gate_exps` / `ffn_up_exps`
//   (ne [C, F, E]) and `ffn_down_exps` (ne [F, C, E]): HF's per-expert tensors stacked on a new
//   outermost dimension. The early split layout `blk.N.ffn_gate.E.weight` is still named in
//   llama-arch.cpp ("split experts for backward compatibility") but no loader creates it.

extension TransformerShape {
  /// The mixture-of-experts part a GGUF file describes, or nil for a dense model (any
  /// architecture but "llama" with experts, "qwen2moe" and "qwen3moe").
  ///
  /// Throws, naming the file and the key or tensor, for what the decoder does not implement
  /// (shared experts, grouped or non-softmax routing, per-layer top-k, fused or split expert
  /// tensors) and for expert tensors whose sizes disagree with the metadata.
  static func ggufMixtureOfExperts(_ facts: GGUFModelFacts, weights: GGUFWeightSource) throws(ModelFileError)
    -> MoEShape? {
    let path = weights.file.path, arch = facts.architecture
    guard let style = GGUFNameMap.moeStyle(architecture: arch) else { return nil }
    let countKey = "\(arch).expert_count", usedKey = "\(arch).expert_used_count"
    guard facts.expertCount > 0 else {
      if style != .mixtral {
        throw ModelFileError(path, "\(countKey) is missing or 0; llama.cpp requires experts in a \(arch) model")
      }
      if let stray = weights.file.tensors.first(where: { GGUFNameMap.expertStack($0.name, architecture: arch) != nil }) {
        throw ModelFileError(path, "tensor \(stray.name) holds experts but \(countKey) is missing or 0; "
          + "the metadata does not describe the tensors")
      }
      return nil  // a dense Llama
    }
    let experts = facts.expertCount
    guard let topK = facts.expertUsedCount, topK >= 1, topK <= experts else {
      throw ModelFileError(path, "\(usedKey) is \(facts.expertUsedCount.map(String.init) ?? "missing"); "
        + "it must be in 1…\(experts) (\(countKey))")
    }
    try refuseUnimplementedRouting(facts, path: path, sharedExpertAllowed: style == .qwen2)
    var shared = 0
    if style == .qwen2 {
      guard let width = facts.expertSharedFeedForwardLength, width > 0 else {
        throw ModelFileError(path, "\(arch).expert_shared_feed_forward_length is "
          + "\(facts.expertSharedFeedForwardLength.map(String.init) ?? "missing"); a qwen2moe block's shared expert needs its width")
      }
      shared = width
    }
    let intermediate = style == .mixtral
      ? facts.feedForwardLength : facts.expertFeedForwardLength ?? facts.feedForwardLength / topK
    guard intermediate > 0 else {
      throw ModelFileError(path, "\(arch).expert_feed_forward_length is \(intermediate); it must be positive")
    }
    let widthKey = style == .mixtral ? "feed_forward_length"
      : facts.expertFeedForwardLength != nil ? "expert_feed_forward_length" : "feed_forward_length / expert_used_count"
    try checkExpertTensors(weights, arch: arch, layers: facts.blockCount, hidden: facts.embeddingLength,
                           experts: experts, intermediate: intermediate, widthKey: widthKey, shared: shared)
    return MoEShape(style: style, experts: experts, topK: topK, intermediate: intermediate,
                    normalizeTopK: facts.expertWeightsNorm ?? (style != .qwen2),
                    sparseLayers: Array(repeating: true, count: facts.blockCount), auxLossCoefficient: 0,
                    declaredAuxLossCoefficient: MoEShape.defaultAuxLossCoefficient, sharedIntermediate: shared)
  }

  /// Throws for the metadata of routing variants this decoder does not run.
  private static func refuseUnimplementedRouting(_ facts: GGUFModelFacts, path: String,
                                                 sharedExpertAllowed: Bool) throws(ModelFileError) {
    let arch = facts.architecture
    if let n = facts.expertSharedCount, n > (sharedExpertAllowed ? 1 : 0) {
      throw ModelFileError(path, "\(arch).expert_shared_count is \(n); "
        + (sharedExpertAllowed ? "one shared expert per block is implemented" : "shared experts are not implemented for \(arch)"))
    }
    if !sharedExpertAllowed, let n = facts.expertSharedFeedForwardLength, n > 0 {
      throw ModelFileError(path, "\(arch).expert_shared_feed_forward_length is \(n); shared experts are not "
        + "implemented for \(arch)")
    }
    if let n = facts.expertGroupCount, n > 1 {
      throw ModelFileError(path, "\(arch).expert_group_count is \(n); group-limited expert routing is not implemented")
    }
    // gguf-py ExpertGatingFuncType: 1 softmax, 2 sigmoid, 3 sqrt-softplus.
    if let f = facts.expertGatingFunction, f != 1 {
      throw ModelFileError(path, "\(arch).expert_gating_func is \(f); only softmax routing (1) is implemented")
    }
  }

  /// Every block must hold the router and the three stacked expert tensors with the sizes the
  /// metadata implies (llama.cpp `create_tensor` checks the same ne), and nothing else that
  /// belongs to an MLP: extra blocks' tensors would be silently ignored otherwise.
  private static func checkExpertTensors(_ weights: GGUFWeightSource, arch: String, layers: Int, hidden: Int,
                                         experts: Int, intermediate: Int, widthKey: String,
                                         shared: Int) throws(ModelFileError) {
    let file = weights.file, path = file.path
    // Foreign tensors first: their message says more than the missing stack they replace.
    let unmapped = Set(weights.unmappedTensorNames)
    for info in file.tensors where info.name.hasPrefix("blk.") {
      if let why = unsupportedBlockTensor(info.name, arch: arch, unmapped: unmapped, shared: shared > 0) {
        throw ModelFileError(path, "tensor \(info.name) \(why)")
      }
    }
    let keys = "\(arch).embedding_length (\(hidden)), expert_count (\(experts)), \(widthKey) (\(intermediate))"
      + (shared > 0 ? " and expert_shared_feed_forward_length (\(shared))" : "")
    for i in 0 ..< layers {
      var wanted: [(String, [Int])] = [
        ("ffn_gate_inp", [hidden, experts]),
        ("ffn_gate_exps", [hidden, intermediate, experts]),
        ("ffn_up_exps", [hidden, intermediate, experts]),
        ("ffn_down_exps", [intermediate, hidden, experts]),
      ]
      if shared > 0 {
        wanted += [("ffn_gate_inp_shexp", [hidden, 1]), ("ffn_gate_shexp", [hidden, shared]),
                   ("ffn_up_shexp", [hidden, shared]), ("ffn_down_shexp", [shared, hidden])]
      }
      for (stem, ne) in wanted {
        let name = "blk.\(i).\(stem).weight"
        guard let info = file.tensor(named: name) else {
          throw ModelFileError(path, "tensor \(name) is missing; a \(arch) model with experts has it in every block")
        }
        guard info.dimensions == ne else {
          throw ModelFileError(path, "tensor \(name) has ne \(info.dimensions) but \(keys) imply \(ne)")
        }
      }
    }
  }

  /// Why a block tensor of a mixture-of-experts file cannot be loaded, or nil when it can.
  private static func unsupportedBlockTensor(_ name: String, arch: String, unmapped: Set<String>,
                                             shared: Bool) -> String? {
    let stem = name.split(separator: ".").dropFirst(2).first.map(String.init) ?? ""
    let parts = name.split(separator: ".")
    if ["ffn_gate", "ffn_up", "ffn_down"].contains(stem) {
      if parts.count == 5, Int(parts[3]) != nil {
        return "is one expert in the split layout of early Mixtral GGUFs, which current llama.cpp no longer "
          + "loads; convert the model again with convert_hf_to_gguf.py"
      }
      return "is a dense MLP weight, but a \(arch) model with experts is sparse in every block (llama.cpp)"
    }
    if stem.contains("_shexp"), !shared { return "belongs to a shared expert, which \(arch) has none of here" }
    if stem == "ffn_gate_up_exps" {
      return "fuses the experts' gate and up projections, which llama.cpp does not load for \(arch); convert "
        + "without --fuse-gate-up-exps"
    }
    if stem == "exp_probs_b" { return "is an expert-selection bias; biased routing is not implemented" }
    if unmapped.contains(name) { return "has no counterpart in a Hugging Face \(arch) model; it cannot be loaded" }
    return nil
  }
}
