/// Maps llama.cpp GGUF tensor names to Hugging Face Llama-family names, and says which
/// tensors the converter stored with permuted rows.
///
/// Names follow gguf-py `tensor_mapping.py` for the Llama-family blocks
/// (`blk.N.attn_q.weight` ↔ `model.layers.N.self_attn.q_proj.weight`).
public enum GGUFNameMap {
  /// Whole-model tensors: GGUF base name → HF base name (a ".weight"/".bias" suffix follows).
  static let global: [String: String] = [
    "token_embd": "model.embed_tokens",
    "output_norm": "model.norm",
    "output": "lm_head",
  ]

  /// Per-block tensors: GGUF name inside `blk.N.` → HF name inside `model.layers.N.`.
  static let block: [String: String] = [
    "attn_norm": "input_layernorm",
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "attn_q_norm": "self_attn.q_norm",
    "attn_k_norm": "self_attn.k_norm",
    "ffn_norm": "post_attention_layernorm",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
  ]

  /// Per-block names of the architectures with sandwich norms (Gemma 2/3), over `block`:
  /// `ffn_norm` is the MLP's input norm there, and the outputs' norms have their own names.
  static let sandwichBlock: [String: String] = [
    "post_attention_norm": "post_attention_layernorm",
    "ffn_norm": "pre_feedforward_layernorm",
    "post_ffw_norm": "post_feedforward_layernorm",
  ]

  /// Architectures whose blocks use `sandwichBlock`'s names.
  public static let sandwichNormArchitectures: Set<String> = ["gemma2", "gemma3"]

  /// Per-block names of Phi-3 over `block`: its fused projections (`ffn_up` holds gate and
  /// up, gate rows first).
  static let fusedBlock: [String: String] = [
    "attn_qkv": "self_attn.qkv_proj",
    "ffn_up": "mlp.gate_up_proj",
  ]

  /// The per-block map of an architecture.
  static func blockMap(architecture: String?) -> [String: String] {
    guard let architecture else { return block }
    if sandwichNormArchitectures.contains(architecture) { return block.merging(sandwichBlock) { $1 } }
    if architecture == "phi3" { return block.merging(fusedBlock) { $1 } }
    if let style = moeStyle(architecture: architecture) {
      // The router: gguf-py tensor_mapping FFN_GATE_INP ← `block_sparse_moe.gate` (Mixtral),
      // `mlp.gate` (Qwen3-MoE).
      var names = ["ffn_gate_inp": style.block + ".gate"]
      if style == .qwen2 {
        // Qwen2-MoE's shared expert and its scalar gate (gguf-py FFN_*_SHEXP, FFN_GATE_INP_SHEXP).
        names["ffn_gate_shexp"] = "mlp.shared_expert.gate_proj"
        names["ffn_up_shexp"] = "mlp.shared_expert.up_proj"
        names["ffn_down_shexp"] = "mlp.shared_expert.down_proj"
        names["ffn_gate_inp_shexp"] = "mlp.shared_expert_gate"
      }
      return block.merging(names) { $1 }
    }
    return block
  }

  /// The Hugging Face name for a GGUF tensor name, or nil when it has no HF counterpart
  /// (e.g. llama.cpp's `rope_freqs.weight`, which HF recomputes from the config).
  /// `architecture` (`general.architecture`) picks the block names where they differ.
  public static func huggingFaceName(for ggufName: String, architecture: String? = nil) -> String? {
    let block = blockMap(architecture: architecture)
    let suffixes = [".weight", ".bias"]
    guard let suffix = suffixes.first(where: { ggufName.hasSuffix($0) }) else { return nil }
    let stem = String(ggufName.dropLast(suffix.count))
    if let mapped = global[stem] { return mapped + suffix }
    let parts = stem.split(separator: ".", maxSplits: 2, omittingEmptySubsequences: false)
    guard parts.count == 3, parts[0] == "blk", let layer = Int(parts[1]), layer >= 0,
          let mapped = block[String(parts[2])] else { return nil }
    return "model.layers.\(layer).\(mapped)\(suffix)"
  }

  /// The GGUF name of a Hugging Face tensor (`model.layers.3.self_attn.q_proj.weight` →
  /// `blk.3.attn_q.weight`), or nil when llama.cpp has no such tensor; the inverse of
  /// `huggingFaceName(for:architecture:)`.
  public static func ggufName(forHuggingFace hfName: String, architecture: String? = nil) -> String? {
    let suffixes = [".weight", ".bias"]
    guard let suffix = suffixes.first(where: { hfName.hasSuffix($0) }) else { return nil }
    let stem = String(hfName.dropLast(suffix.count))
    if let g = global.first(where: { $0.value == stem })?.key { return g + suffix }
    let parts = stem.split(separator: ".", maxSplits: 3, omittingEmptySubsequences: false)
    guard parts.count == 4, parts[0] == "model", parts[1] == "layers", let layer = Int(parts[2]), layer >= 0,
          let g = blockMap(architecture: architecture).first(where: { $0.value == String(parts[3]) })?.key
    else { return nil }
    return "blk.\(layer).\(g)\(suffix)"
  }

  /// The GGUF architecture llama.cpp's converter writes for a Hugging Face `model_type`
  /// (Mistral and Mixtral are "llama" there), or nil when none is known.
  public static func ggufArchitecture(modelType: String) -> String? {
    switch modelType {
    case "llama", "mistral", "mixtral": "llama"
    case "qwen2", "qwen3", "gemma", "gemma2", "phi3": modelType
    case "gemma3_text": "gemma3"
    case "qwen2_moe": "qwen2moe"
    case "qwen3_moe": "qwen3moe"
    default: nil
    }
  }

  /// `values` (row-major, `rows` rows) as the converter stores GGUF tensor `ggufName` under
  /// `architecture`: q rows permuted over `heads`, k rows over `kvHeads`, anything else as is.
  public static func converterRows(_ values: [Float], ggufName: String, architecture: String, rows: Int,
                                   heads: Int, kvHeads: Int) -> [Float] {
    let columns = rows > 0 ? values.count / rows : 0
    switch permutation(for: ggufName, architecture: architecture) {
    case .query?: return permuteRows(values, rows: rows, columns: columns, heads: heads)
    case .key?: return permuteRows(values, rows: rows, columns: columns, heads: kvHeads)
    case nil: return values
    }
  }

  /// Applies `DecoderModel.permute` (HF → GGUF) to a row-major (rows, columns) matrix: stored
  /// row `h·hd + 2i + s` takes original row `h·hd + s·hd/2 + i`; the inverse of `unpermuteRows`.
  public static func permuteRows(_ src: [Float], rows: Int, columns: Int, heads: Int) -> [Float] {
    var dst = src
    let headDim = rows / heads, halfDim = headDim / 2
    for head in 0..<heads {
      for i in 0..<halfDim {
        for s in 0..<2 {
          let stored = head * headDim + 2 * i + s, original = head * headDim + s * halfDim + i
          for c in 0..<columns { dst[stored * columns + c] = src[original * columns + c] }
        }
      }
    }
    return dst
  }

  // MARK: - Mixture of experts

  /// The mixture-of-experts naming of a GGUF architecture, or nil when it has none here:
  /// llama.cpp writes Mixtral as "llama" (with `llama.expert_count` > 0), Qwen3-MoE as
  /// "qwen3moe" and Qwen2-MoE as "qwen2moe" (`convert_hf_to_gguf.py` `DecoderModel` /
  /// `Qwen3MoeModel` / `Qwen2MoeModel`).
  public static func moeStyle(architecture: String?) -> MoEStyle? {
    switch architecture {
    case "llama"?: .mixtral
    case "qwen3moe"?: .qwen3
    case "qwen2moe"?: .qwen2
    default: nil
    }
  }

  /// A projection kind of the stacked expert tensors, by its llama.cpp name inside `blk.N.`.
  public enum ExpertProjection: String, Sendable, CaseIterable {
    /// `ffn_gate_exps`: ne = [C, F, E], HF (E, F, C) → each expert's `w1` / `gate_proj` (F, C).
    case gate = "ffn_gate_exps"
    /// `ffn_up_exps`: ne = [C, F, E] → each expert's `w3` / `up_proj` (F, C).
    case up = "ffn_up_exps"
    /// `ffn_down_exps`: ne = [F, C, E] → each expert's `w2` / `down_proj` (C, F).
    case down = "ffn_down_exps"
  }

  /// The layer and projection of a stacked expert tensor (`blk.N.ffn_gate_exps.weight`), or
  /// nil for any other name or an architecture without experts here.
  ///
  /// The converters stack the experts with `torch.stack(datas, dim=0)`, so a numpy
  /// (E, rows, cols) array is stored with ggml ne = [cols, rows, E]: expert e is the
  /// contiguous block of rows e·rows ..< (e + 1)·rows.
  public static func expertStack(_ ggufName: String, architecture: String?)
    -> (layer: Int, projection: ExpertProjection)? {
    guard moeStyle(architecture: architecture) != nil, ggufName.hasSuffix(".weight") else { return nil }
    let parts = ggufName.dropLast(".weight".count).split(separator: ".", omittingEmptySubsequences: false)
    guard parts.count == 3, parts[0] == "blk", let layer = Int(parts[1]), layer >= 0,
          let projection = ExpertProjection(rawValue: String(parts[2])) else { return nil }
    return (layer, projection)
  }

  /// The Hugging Face name of expert `expert`'s slice of a stacked tensor
  /// (`model.layers.N.block_sparse_moe.experts.E.w1.weight`, `….mlp.experts.E.gate_proj.weight`).
  public static func expertName(layer: Int, projection: ExpertProjection, expert: Int, style: MoEStyle) -> String {
    let names = style.expertProjections
    let leaf = switch projection {
    case .gate: names.gate
    case .up: names.up
    case .down: names.down
    }
    return "model.layers.\(layer).\(style.block).experts.\(expert).\(leaf).weight"
  }

  // MARK: - Row permutation

  /// Which heads' rows a tensor was permuted with, if any.
  public enum HeadGroup: Sendable, Equatable {
    /// Query rows, grouped by `<arch>.attention.head_count`.
    case query
    /// Key rows, grouped by `<arch>.attention.head_count_kv`.
    case key
  }

  /// Architectures whose llama.cpp converter permutes q/k rows.
  ///
  /// `convert_hf_to_gguf.py` `DecoderModel.modify_tensors` applies `DecoderModel.permute` to
  /// `q_proj.weight`/`.bias` (n_head) and `k_proj.weight`/`.bias` (n_head_kv) because
  /// llama.cpp's "llama" rope pairs adjacent elements (GGML_ROPE_TYPE_NORM) while HF's
  /// `rotate_half` pairs element i with i + head_dim/2. Qwen2 (`Qwen2Model`, rope type NEOX),
  /// Qwen3, Gemma and Phi-3 converters do not permute, so their rows are stored as in HF.
  /// Other architectures with permuting converters are not listed until checked.
  public static let permutedArchitectures: Set<String> = ["llama"]

  /// Architectures whose llama.cpp converter stores RMSNorm weights as 1 + w (Gemma's norms
  /// scale by 1 + w; the converter bakes the 1 in so llama.cpp runs a plain RMSNorm): the
  /// loader subtracts it again, giving the HF parameter.
  public static let normPlusOneArchitectures: Set<String> = ["gemma", "gemma2", "gemma3"]

  /// The head group whose rows were permuted for this GGUF tensor under `architecture`.
  public static func permutation(for ggufName: String, architecture: String?) -> HeadGroup? {
    guard let architecture, permutedArchitectures.contains(architecture) else { return nil }
    if ggufName.hasSuffix(".attn_q.weight") || ggufName.hasSuffix(".attn_q.bias") { return .query }
    if ggufName.hasSuffix(".attn_k.weight") || ggufName.hasSuffix(".attn_k.bias") { return .key }
    return nil
  }

  /// Undoes `DecoderModel.permute` on a row-major (rows, columns) matrix in place of `src`:
  /// stored row `h·hd + 2i + s` holds original row `h·hd + s·hd/2 + i`
  /// (transformers `reverse_permute`: reshape(heads, hd/2, 2, …).swapaxes(1, 2)).
  static func unpermuteRows(
    _ src: UnsafePointer<Float>, into dst: UnsafeMutablePointer<Float>,
    rows: Int, columns: Int, heads: Int
  ) {
    let headDim = rows / heads
    let halfDim = headDim / 2
    for head in 0 ..< heads {
      for i in 0 ..< halfDim {
        for s in 0 ..< 2 {
          let stored = head * headDim + 2 * i + s
          let original = head * headDim + s * halfDim + i
          (dst + original * columns).update(from: src + stored * columns, count: columns)
        }
      }
    }
  }
}
