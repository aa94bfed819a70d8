/// Llama-family hyper-parameters read from a GGUF file's `<arch>.*` metadata, for building
/// a model config (the config type itself lives elsewhere).
///
/// Defaults mirror llama.cpp `llama_model::load_hparams` where a key is optional.
public struct GGUFModelFacts: Sendable, Equatable {
  /// `general.architecture` ("llama", "qwen2", …).
  public var architecture: String
  /// `<arch>.embedding_length` (HF `hidden_size`).
  public var embeddingLength: Int
  /// `<arch>.block_count` (HF `num_hidden_layers`).
  public var blockCount: Int
  /// `<arch>.feed_forward_length` (HF `intermediate_size`).
  public var feedForwardLength: Int
  /// `<arch>.attention.head_count` (HF `num_attention_heads`).
  public var headCount: Int
  /// `<arch>.attention.head_count_kv`; defaults to `headCount` (HF `num_key_value_heads`).
  public var headCountKV: Int
  /// `<arch>.attention.key_length`; defaults to `embeddingLength / headCount` (HF `head_dim`).
  public var headDim: Int
  /// `<arch>.attention.layer_norm_rms_epsilon` (HF `rms_norm_eps`), if present.
  public var rmsNormEpsilon: Float?
  /// `<arch>.rope.freq_base`; defaults to 10000 (HF `rope_theta`).
  public var ropeFreqBase: Float
  /// `<arch>.context_length` (HF `max_position_embeddings`), if present.
  public var contextLength: Int?
  /// `<arch>.vocab_size`, else the length of `tokenizer.ggml.tokens`, if either exists.
  public var vocabSize: Int?
  /// `<arch>.rope.scaling.type` ("linear", "yarn", …), if present.
  public var ropeScalingType: String?
  /// `<arch>.rope.scaling.factor`, if present.
  public var ropeScalingFactor: Float?
  /// `<arch>.rope.scaling.original_context_length`, if present.
  public var ropeScalingOriginalContextLength: Int?
  /// `<arch>.rope.dimension_count` (rotary dims), if present.
  public var ropeDimensionCount: Int?
  /// True when the file has no `output.weight`: the LM head reuses the embeddings.
  public var tiedEmbeddings: Bool
  /// `<arch>.attn_logit_softcapping` (Gemma 2), if present.
  public var attentionSoftcap: Float?
  /// `<arch>.final_logit_softcapping` (Gemma 2/3), if present.
  public var finalLogitSoftcap: Float?
  /// `<arch>.attention.sliding_window` (Gemma 2/3), if present.
  public var slidingWindow: Int?

  // MARK: Mixture of experts (llama.cpp `llama_model::load_hparams`, `LLM_KV_EXPERT_*`)

  /// `<arch>.expert_count` (HF `num_local_experts` / `num_experts`); 0 when absent (a dense model).
  public var expertCount: Int
  /// `<arch>.expert_used_count` (HF `num_experts_per_tok`), if present: experts per token.
  public var expertUsedCount: Int?
  /// `<arch>.expert_feed_forward_length` (HF `moe_intermediate_size`), if present.
  public var expertFeedForwardLength: Int?
  /// `<arch>.expert_shared_count`, if present (shared experts: not implemented).
  public var expertSharedCount: Int?
  /// `<arch>.expert_shared_feed_forward_length`, if present (shared experts: not implemented).
  public var expertSharedFeedForwardLength: Int?
  /// `<arch>.expert_group_count`, if present (group-limited routing: not implemented above 1).
  public var expertGroupCount: Int?
  /// `<arch>.expert_gating_func` (1 softmax, 2 sigmoid, 3 sqrt-softplus), if present.
  public var expertGatingFunction: Int?
  /// `<arch>.expert_weights_norm`: whether the top-k weights are renormalised, if present.
  public var expertWeightsNorm: Bool?

  /// Reads the facts; required keys missing or mistyped are a `ModelFileError`.
  public init(file: GGUFFile) throws(ModelFileError) {
    guard let arch = file.architecture else {
      throw ModelFileError(file.path, "general.architecture is missing; cannot tell which keys hold the "
        + "hyper-parameters")
    }
    func required(_ suffix: String) throws(ModelFileError) -> Int {
      guard let value = file.metadata["\(arch).\(suffix)"]?.int, value > 0 else {
        throw ModelFileError(file.path, "\(arch).\(suffix) is missing or not a positive integer")
      }
      return value
    }
    func optionalInt(_ suffix: String) -> Int? { file.metadata["\(arch).\(suffix)"]?.int }
    func optionalFloat(_ suffix: String) -> Float? { file.metadata["\(arch).\(suffix)"]?.float }

    architecture = arch
    embeddingLength = try required("embedding_length")
    blockCount = try required("block_count")
    feedForwardLength = try required("feed_forward_length")
    headCount = try required("attention.head_count")
    headCountKV = optionalInt("attention.head_count_kv") ?? headCount
    headDim = optionalInt("attention.key_length") ?? embeddingLength / headCount
    rmsNormEpsilon = optionalFloat("attention.layer_norm_rms_epsilon")
    ropeFreqBase = optionalFloat("rope.freq_base") ?? GGUFModelFacts.defaultRopeFreqBase
    contextLength = optionalInt("context_length")
    vocabSize = optionalInt("vocab_size") ?? file.metadata["tokenizer.ggml.tokens"]?.array?.count
    ropeScalingType = file.metadata["\(arch).rope.scaling.type"]?.string
    ropeScalingFactor = optionalFloat("rope.scaling.factor")
    ropeScalingOriginalContextLength = optionalInt("rope.scaling.original_context_length")
    ropeDimensionCount = optionalInt("rope.dimension_count")
    tiedEmbeddings = file.tensor(named: "output.weight") == nil
    attentionSoftcap = optionalFloat("attn_logit_softcapping")
    finalLogitSoftcap = optionalFloat("final_logit_softcapping")
    slidingWindow = optionalInt("attention.sliding_window")

    // llama.cpp reads expert_count with get_key and expert_used_count /
    // expert_feed_forward_length with get_key_or_arr (one value or one per layer).
    func perLayer(_ suffix: String) throws(ModelFileError) -> Int? {
      let key = "\(arch).\(suffix)"
      guard let value = file.metadata[key] else { return nil }
      if let one = value.int { return one }
      guard let values = value.intArray, let first = values.first else {
        throw ModelFileError(file.path, "\(key) is neither an integer nor an array of integers")
      }
      guard values.allSatisfy({ $0 == first }) else {
        let listed = values.map(String.init).joined(separator: ", ")
        throw ModelFileError(file.path, "\(key) differs between layers (\(listed)); per-layer values are "
          + "not implemented")
      }
      return first
    }
    let experts = "\(arch).expert_count"
    if let value = file.metadata[experts] {
      guard let count = value.int, count >= 0 else {
        throw ModelFileError(file.path, "\(experts) is not a non-negative integer")
      }
      expertCount = count
    } else {
      expertCount = 0
    }
    expertUsedCount = try perLayer("expert_used_count")
    expertFeedForwardLength = try perLayer("expert_feed_forward_length")
    expertSharedCount = optionalInt("expert_shared_count")
    expertSharedFeedForwardLength = try perLayer("expert_shared_feed_forward_length")
    expertGroupCount = optionalInt("expert_group_count")
    expertGatingFunction = optionalInt("expert_gating_func")
    expertWeightsNorm = file.metadata["\(arch).expert_weights_norm"]?.bool
  }

  /// llama.cpp's default `rope.freq_base` when the key is absent.
  public static let defaultRopeFreqBase: Float = 10_000
}

/// The tokenizer tables a GGUF file embeds (`tokenizer.ggml.*`, `tokenizer.chat_template`),
/// raw, for the tokenizer module to build from.
public struct GGUFTokenizerFacts: Sendable, Equatable {
  /// `tokenizer.ggml.model`: "gpt2" (byte-level BPE), "llama" (SentencePiece), …
  public var model: String?
  /// `tokenizer.ggml.pre`: the pre-tokenizer name ("smollm", "llama-bpe", "qwen2", …).
  public var pre: String?
  /// `tokenizer.ggml.tokens`, indexed by id.
  public var tokens: [String]
  /// `tokenizer.ggml.scores` (SentencePiece), if present.
  public var scores: [Float]?
  /// `tokenizer.ggml.token_type` (1 normal, 2 unknown, 3 control, 4 user-defined, 5 unused, 6 byte).
  public var tokenTypes: [Int]?
  /// `tokenizer.ggml.merges` ("a b" pairs, BPE), if present.
  public var merges: [String]?
  /// `tokenizer.ggml.bos_token_id`, if present.
  public var bosTokenID: Int?
  /// `tokenizer.ggml.eos_token_id`, if present.
  public var eosTokenID: Int?
  /// `tokenizer.ggml.unknown_token_id`, if present.
  public var unknownTokenID: Int?
  /// `tokenizer.ggml.padding_token_id`, if present.
  public var paddingTokenID: Int?
  /// `tokenizer.ggml.add_bos_token`, if present.
  public var addBOS: Bool?
  /// `tokenizer.ggml.add_eos_token`, if present.
  public var addEOS: Bool?
  /// `tokenizer.chat_template` (Jinja), if present.
  public var chatTemplate: String?

  /// Reads the tables; a file without `tokenizer.ggml.tokens` or with mistyped arrays is an error.
  public init(file: GGUFFile) throws(ModelFileError) {
    let meta = file.metadata
    guard let tokens = meta["tokenizer.ggml.tokens"]?.stringArray else {
      throw ModelFileError(file.path, "tokenizer.ggml.tokens is missing or not a string array; "
        + "this GGUF has no embedded tokenizer")
    }
    func array<T>(_ key: String, _ get: (GGUFValue) -> [T]?) throws(ModelFileError) -> [T]? {
      guard let value = meta[key] else { return nil }
      guard let converted = get(value), converted.count == tokens.count || key.hasSuffix("merges") else {
        throw ModelFileError(file.path, "\(key) is mistyped or its length differs from the \(tokens.count) tokens")
      }
      return converted
    }
    self.tokens = tokens
    model = meta["tokenizer.ggml.model"]?.string
    pre = meta["tokenizer.ggml.pre"]?.string
    scores = try array("tokenizer.ggml.scores") { $0.floatArray }
    tokenTypes = try array("tokenizer.ggml.token_type") { $0.intArray }
    merges = try array("tokenizer.ggml.merges") { $0.stringArray }
    bosTokenID = meta["tokenizer.ggml.bos_token_id"]?.int
    eosTokenID = meta["tokenizer.ggml.eos_token_id"]?.int
    unknownTokenID = meta["tokenizer.ggml.unknown_token_id"]?.int
    paddingTokenID = meta["tokenizer.ggml.padding_token_id"]?.int
    addBOS = meta["tokenizer.ggml.add_bos_token"]?.bool
    addEOS = meta["tokenizer.ggml.add_eos_token"]?.bool
    chatTemplate = meta["tokenizer.chat_template"]?.string
  }
}
