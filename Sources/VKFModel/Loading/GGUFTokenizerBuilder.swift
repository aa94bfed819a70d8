import Foundation
import VKFTokenizer

/// Builds a Hugging Face `tokenizer.json` equivalent from a GGUF file's embedded tokenizer
/// (`tokenizer.ggml.*`), for a .gguf with no tokenizer.json beside it.
///
/// `tokenizer.ggml.model` "gpt2" (byte-level BPE) takes its pre-tokenizer from
/// `tokenizer.ggml.pre` as llama.cpp's `llama_vocab::impl::load` / `llm_tokenizer_bpe` does,
/// written as the HF pre-tokenizer with the same splits. "llama" (SentencePiece BPE: Llama 2,
/// Mistral, TinyLlama) is built as transformers' GGUF loader builds it: a byte-fallback BPE
/// whose merges come from the scores (see GGUFSentencePiece.swift).
public enum GGUFTokenizerBuilder {
  /// The `tokenizer.ggml.pre` values this builder knows, and how each splits text.
  public static let supportedPreTokenizers = [
    "default", "gpt2", "gpt-2", "smollm", "starcoder", "refact", "llama-bpe", "llama3", "qwen2",
  ]

  /// GGUF token types (llama.cpp `llama_token_type`) that become HF added tokens.
  static let controlTokenType = 3, userDefinedTokenType = 4

  /// llama.cpp's Llama 3 ("llama-bpe") split regex, identical to Llama 3's tokenizer.json.
  static let llama3Pattern =
    #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#
  /// llama.cpp's Qwen2 split regex (single digits), identical to Qwen2's tokenizer.json.
  static let qwen2Pattern =
    #"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"#

  /// The tokenizer of `facts`; `path` names the file in errors.
  public static func tokenizer(_ facts: GGUFTokenizerFacts, path: String) throws -> Tokenizer {
    // llama.cpp: add_bos_token defaults to true for SentencePiece vocabularies only.
    let data = try tokenizerJSON(model: facts.model, pre: facts.pre, tokens: facts.tokens,
                                 tokenTypes: facts.tokenTypes, merges: facts.merges,
                                 bosTokenID: facts.bosTokenID, addBOS: facts.addBOS ?? (facts.model == "llama"),
                                 path: path, scores: facts.scores, unknownTokenID: facts.unknownTokenID,
                                 eosTokenID: facts.eosTokenID, addEOS: facts.addEOS ?? false)
    let name = { (id: Int?) -> String? in id.flatMap { facts.tokens.indices.contains($0) ? facts.tokens[$0] : nil } }
    return try Tokenizer(json: data, bosToken: name(facts.bosTokenID), eosToken: name(facts.eosTokenID))
  }

  /// tokenizer.json bytes for a byte-level BPE vocabulary given as GGUF stores it.
  ///
  /// - tokens: `tokenizer.ggml.tokens` (already in byte-level form, "Ġthe"), indexed by id.
  /// - tokenTypes: types 3 (control) and 4 (user-defined) become added tokens, control ones
  ///   special (skipped by `decode(skipSpecialTokens:)`), as llama.cpp treats them.
  /// - addBOS: `tokenizer.ggml.add_bos_token`; when true the post-processor prepends BOS.
  /// - scores, unknownTokenID, eosTokenID, addEOS: used for "llama" only
  ///   (`GGUFTokenizerBuilder.sentencePieceJSON`), which needs `scores` unless `merges` exist.
  public static func tokenizerJSON(model: String?, pre: String?, tokens: [String], tokenTypes: [Int]?,
                                   merges: [String]?, bosTokenID: Int?, addBOS: Bool,
                                   path: String, scores: [Float]? = nil, unknownTokenID: Int? = nil,
                                   eosTokenID: Int? = nil, addEOS: Bool = false) throws(ModelFileError) -> Data {
    switch model {
    case "gpt2"?: break
    case "llama"?:
      return try sentencePieceJSON(tokens: tokens, scores: scores, tokenTypes: tokenTypes, merges: merges,
                                   unknownTokenID: unknownTokenID, bosTokenID: bosTokenID,
                                   eosTokenID: eosTokenID, addBOS: addBOS, addEOS: addEOS, path: path)
    default:
      throw ModelFileError(path, "GGUF tokenizer model '\(model ?? "(missing)")' is not supported (only "
        + "'gpt2' byte-level BPE and 'llama' SentencePiece BPE are built from metadata): put the model's "
        + "tokenizer.json beside the .gguf")
    }
    guard let merges else {
      throw ModelFileError(path, "tokenizer.ggml.merges is missing; a 'gpt2' tokenizer needs its merges")
    }
    let preName = pre ?? "default"
    guard let preTokenizer = preTokenizerJSON(preName) else {
      throw ModelFileError(path, "tokenizer.ggml.pre '\(preName)' is not supported (supported: "
        + "\(supportedPreTokenizers.joined(separator: ", "))): put the model's tokenizer.json beside the .gguf")
    }
    var vocab: [String: Int] = [:]
    vocab.reserveCapacity(tokens.count)
    for (id, token) in tokens.enumerated() where vocab[token] == nil { vocab[token] = id }
    var added: [[String: Any]] = []
    for (id, type) in (tokenTypes ?? []).enumerated()
    where type == controlTokenType || type == userDefinedTokenType {
      added.append(["id": id, "content": tokens[id], "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": type == controlTokenType])
    }
    var root: [String: Any] = [
      "version": "1.0",
      "added_tokens": added,
      "pre_tokenizer": preTokenizer,
      "decoder": ["type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true],
      "model": [
        "type": "BPE", "vocab": vocab, "merges": merges, "byte_fallback": false, "fuse_unk": false,
        // Llama 3's tokenizer.json sets ignore_merges (whole-word vocabulary hits win).
        "ignore_merges": preName == "llama-bpe" || preName == "llama3",
      ] as [String: Any],
    ]
    if preName == "qwen2" { root["normalizer"] = ["type": "NFC"] }
    if addBOS, let bos = bosTokenID, tokens.indices.contains(bos) {
      let bosName = tokens[bos]
      root["post_processor"] = [
        "type": "TemplateProcessing",
        "single": [["SpecialToken": ["id": bosName, "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]]],
        "pair": [["SpecialToken": ["id": bosName, "type_id": 0]], ["Sequence": ["id": "A", "type_id": 0]],
                 ["SpecialToken": ["id": bosName, "type_id": 1]], ["Sequence": ["id": "B", "type_id": 1]]],
        "special_tokens": [bosName: ["id": bosName, "ids": [bos], "tokens": [bosName]]],
      ] as [String: Any]
    }
    do {
      return try JSONSerialization.data(withJSONObject: root)
    } catch {
      throw ModelFileError(path, "cannot serialise the tokenizer built from GGUF metadata: \(error)")
    }
  }

  /// The HF pre-tokenizer object that splits as llama.cpp does for `pre`, or nil if unknown.
  public static func preTokenizerJSON(_ pre: String) -> [String: Any]? {
    let byteLevelRegex: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false,
                                         "trim_offsets": true, "use_regex": true]
    let byteLevelOnly: [String: Any] = ["type": "ByteLevel", "add_prefix_space": false,
                                        "trim_offsets": true, "use_regex": false]
    func split(_ pattern: String) -> [String: Any] {
      ["type": "Sequence", "pretokenizers": [
        ["type": "Split", "pattern": ["Regex": pattern], "behavior": "Isolated", "invert": false],
        byteLevelOnly,
      ]]
    }
    switch pre {
    case "default", "gpt2", "gpt-2":
      return byteLevelRegex
    case "smollm", "starcoder", "refact":
      // llama.cpp: "\p{N}" first (every digit its own piece), then the GPT-2 regex.
      return ["type": "Sequence", "pretokenizers": [
        ["type": "Digits", "individual_digits": true], byteLevelRegex,
      ]]
    case "llama-bpe", "llama3":
      return split(llama3Pattern)
    case "qwen2":
      return split(qwen2Pattern)
    default:
      return nil
    }
  }
}
