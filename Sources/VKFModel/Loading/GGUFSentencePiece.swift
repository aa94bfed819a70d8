import Foundation

// SentencePiece BPE ("llama") tokenizers from GGUF metadata, as transformers builds them.
//
// Matches transformers `integrations/ggml.py`: `GGUFTokenizerSkeleton` (merges derived from
// tokens + scores when `tokenizer.ggml.merges` is absent) and `GGUFLlamaConverter` (BPE with
// byte fallback and fused unknowns, the legacy `LlamaConverter` normalizer, no
// pre-tokenizer), which is also the shape of Llama 2's own tokenizer.json.

extension GGUFTokenizerBuilder {
  /// GGUF token type (llama.cpp `LLAMA_TOKEN_TYPE_UNKNOWN`) of `<unk>`; llama.cpp parses it
  /// as a special token, and Llama 2's tokenizer.json lists it as a special added token.
  static let unknownTokenType = 2

  /// tokenizer.json bytes for a SentencePiece BPE vocabulary given as GGUF stores it.
  ///
  /// - tokens: `tokenizer.ggml.tokens` ("▁the", "<0x0A>"), indexed by id; byte tokens stay
  ///   in the vocabulary for byte fallback.
  /// - scores: `tokenizer.ggml.scores`; merges are derived from them when `merges` is nil.
  /// - tokenTypes: 2 (unknown) and 3 (control) become special added tokens, 4 (user-defined)
  ///   plain added tokens, as llama.cpp parses them out of text before BPE.
  /// - addBOS / addEOS: `tokenizer.ggml.add_bos_token` / `add_eos_token` (llama.cpp defaults
  ///   true / false for "llama"); the post-processor adds the token each names.
  static func sentencePieceJSON(tokens: [String], scores: [Float]?, tokenTypes: [Int]?, merges: [String]?,
                                unknownTokenID: Int?, bosTokenID: Int?, eosTokenID: Int?,
                                addBOS: Bool, addEOS: Bool, path: String) throws(ModelFileError) -> Data {
    let pairs: [[String]]
    if let merges {
      // transformers splits stored merges on " " (`tuple(merge.split(" "))`).
      pairs = merges.map { $0.split(separator: " ", omittingEmptySubsequences: false).map(String.init) }
      if let bad = pairs.firstIndex(where: { $0.count != 2 }) {
        throw ModelFileError(path, "tokenizer.ggml.merges[\(bad)] '\(merges[bad])' is not two tokens "
          + "separated by a space")
      }
    } else if let scores {
      guard scores.count == tokens.count else {
        throw ModelFileError(path, "tokenizer.ggml.scores has \(scores.count) entries for \(tokens.count) tokens")
      }
      pairs = sentencePieceMerges(tokens: tokens, scores: scores).map { [$0.left, $0.right] }
    } else {
      throw ModelFileError(path, "tokenizer.ggml.scores is missing; a 'llama' (SentencePiece) tokenizer needs "
        + "its scores or merges: put the model's tokenizer.json beside the .gguf")
    }
    let name = { (id: Int?) -> String? in id.flatMap { tokens.indices.contains($0) ? tokens[$0] : nil } }
    // transformers: `{word: i for i, word in enumerate(tokens)}`, a later duplicate wins.
    var vocab: [String: Int] = [:]
    vocab.reserveCapacity(tokens.count)
    for (id, token) in tokens.enumerated() { vocab[token] = id }

    var added: [[String: Any]] = []
    for (id, type) in (tokenTypes ?? []).enumerated() where tokens.indices.contains(id)
    && (type == unknownTokenType || type == controlTokenType || type == userDefinedTokenType) {
      added.append(["id": id, "content": tokens[id], "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": type != userDefinedTokenType])
    }
    var model: [String: Any] = [
      "type": "BPE", "vocab": vocab, "merges": pairs, "byte_fallback": true, "fuse_unk": true,
      "ignore_merges": false,
    ]
    if let unk = name(unknownTokenID) { model["unk_token"] = unk }
    var root: [String: Any] = [
      "version": "1.0",
      "added_tokens": added,
      // LlamaConverter.normalizer with legacy + add_prefix_space (the GGUF skeleton sets
      // neither, so both default true): no pre-tokenizer, the whole text is one piece.
      "normalizer": ["type": "Sequence", "normalizers": [
        ["type": "Prepend", "prepend": "\u{2581}"],
        ["type": "Replace", "pattern": ["String": " "], "content": "\u{2581}"],
      ]] as [String: Any],
      "decoder": ["type": "Sequence", "decoders": [
        ["type": "Replace", "pattern": ["String": "\u{2581}"], "content": " "],
        ["type": "ByteFallback"], ["type": "Fuse"],
        ["type": "Strip", "content": " ", "start": 1, "stop": 0],
      ]] as [String: Any],
      "model": model,
    ]
    if let processor = sentencePiecePostProcessor(bos: addBOS ? bosTokenID : nil,
                                                  eos: addEOS ? eosTokenID : nil, tokens: tokens) {
      root["post_processor"] = processor
    }
    do {
      return try JSONSerialization.data(withJSONObject: root)
    } catch {
      throw ModelFileError(path, "cannot serialise the tokenizer built from GGUF metadata: \(error)")
    }
  }

  /// One merge derived from the vocabulary: `left + right` is a token scoring `score`.
  struct DerivedMerge: Equatable {
    /// The left piece.
    var left: String
    /// The right piece.
    var right: String
    /// The score of the merged token.
    var score: Float
  }

  /// Merges in rank order, derived from SentencePiece tokens and scores.
  ///
  /// Matches transformers `GGUFTokenizerSkeleton.__init__`: every split of every token
  /// (at Unicode scalar boundaries, as Python slices `str`) into two pieces that are both
  /// tokens is a merge; within one token its splits sort by (left score, right score)
  /// descending, then all merges sort stably by the merged token's score descending.
  static func sentencePieceMerges(tokens: [String], scores: [Float]) -> [DerivedMerge] {
    // Python `{t: scores[i] for i, t in enumerate(tokens)}`: first occurrence fixes the
    // iteration order, the last occurrence's score wins.
    var score: [String: Float] = [:]
    score.reserveCapacity(tokens.count)
    var order: [String] = []
    order.reserveCapacity(tokens.count)
    for (id, token) in tokens.enumerated() {
      if score.updateValue(scores[id], forKey: token) == nil { order.append(token) }
    }
    var merges: [DerivedMerge] = []
    for token in order {
      guard let pieceScore = score[token] else { continue }
      let scalars = Array(token.unicodeScalars)
      guard scalars.count > 1 else { continue }
      var local: [(merge: DerivedMerge, leftScore: Float, rightScore: Float)] = []
      for cut in 1..<scalars.count {
        var left = String.UnicodeScalarView(), right = String.UnicodeScalarView()
        left.append(contentsOf: scalars[..<cut])
        right.append(contentsOf: scalars[cut...])
        let l = String(left), r = String(right)
        guard let ls = score[l], let rs = score[r] else { continue }
        local.append((DerivedMerge(left: l, right: r, score: pieceScore), ls, rs))
      }
      // Python's sort(reverse=True) is stable: equal keys keep their cut order.
      let sorted = local.enumerated().sorted { a, b in
        if a.element.leftScore != b.element.leftScore { return a.element.leftScore > b.element.leftScore }
        if a.element.rightScore != b.element.rightScore { return a.element.rightScore > b.element.rightScore }
        return a.offset < b.offset
      }
      merges.append(contentsOf: sorted.map(\.element.merge))
    }
    return merges.enumerated().sorted { a, b in
      a.element.score != b.element.score ? a.element.score > b.element.score : a.offset < b.offset
    }.map(\.element)
  }

  /// TemplateProcessing adding `bos` before and `eos` after each sequence, as
  /// `LlamaTokenizerFast.update_post_processor` writes it; nil when neither is added.
  static func sentencePiecePostProcessor(bos: Int?, eos: Int?, tokens: [String]) -> [String: Any]? {
    let bosName = bos.flatMap { tokens.indices.contains($0) ? tokens[$0] : nil }
    let eosName = eos.flatMap { tokens.indices.contains($0) ? tokens[$0] : nil }
    guard bosName != nil || eosName != nil else { return nil }
    func sequence(_ id: String, _ typeID: Int) -> [[String: Any]] {
      var items: [[String: Any]] = []
      if let bosName { items.append(["SpecialToken": ["id": bosName, "type_id": typeID]]) }
      items.append(["Sequence": ["id": id, "type_id": typeID]])
      if let eosName { items.append(["SpecialToken": ["id": eosName, "type_id": typeID]]) }
      return items
    }
    var special: [String: Any] = [:]
    for (name, id) in [(bosName, bos), (eosName, eos)] {
      if let name, let id { special[name] = ["id": name, "ids": [id], "tokens": [name]] }
    }
    return ["type": "TemplateProcessing", "single": sequence("A", 0),
            "pair": sequence("A", 0) + sequence("B", 1), "special_tokens": special]
  }
}
