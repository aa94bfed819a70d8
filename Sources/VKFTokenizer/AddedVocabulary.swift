// Added and special tokens: found in the raw text before normalization and pre-tokenization.

/// One entry of tokenizer.json `added_tokens`.
public struct AddedToken: Sendable, Equatable {
  /// The token id.
  public let id: Int
  /// The literal text.
  public let content: String
  /// Matches only when not inside a word.
  public let singleWord: Bool
  /// Swallows whitespace on its left.
  public let lstrip: Bool
  /// Swallows whitespace on its right.
  public let rstrip: Bool
  /// Matched against normalized text (true) or raw text (false).
  public let normalized: Bool
  /// A control token (`<|im_end|>`), removed by `decode(skipSpecialTokens: true)`.
  public let special: Bool

  init(json: JSONObject) throws {
    id = try json.int("id", default: -1)
    guard id >= 0 else { throw json.missing("id", "an id ≥ 0") }
    content = try json.string("content")
    singleWord = try json.bool("single_word", default: false)
    lstrip = try json.bool("lstrip", default: false)
    rstrip = try json.bool("rstrip", default: false)
    special = try json.bool("special", default: false)
    normalized = try json.bool("normalized", default: !special)
  }
}

/// HF `AddedVocabulary`: splits text on added tokens, leftmost-longest, honouring the flags.
struct AddedVocabulary: Sendable {
  /// A pattern to find: the token's (possibly normalized) scalars.
  private struct Pattern: Sendable {
    let scalars: [Unicode.Scalar]
    let token: AddedToken
  }

  /// The tokens, in file order.
  let tokens: [AddedToken]
  /// Raw-text patterns by first scalar, longest first.
  private let raw: [Unicode.Scalar: [Pattern]]
  /// Normalized-text patterns by first scalar, longest first.
  private let normalizedPatterns: [Unicode.Scalar: [Pattern]]

  /// Indexes `tokens`; normalized tokens are matched in their normalized form.
  init(tokens: [AddedToken], normalizer: Normalizer?) {
    self.tokens = tokens
    var raw: [Unicode.Scalar: [Pattern]] = [:]
    var norm: [Unicode.Scalar: [Pattern]] = [:]
    for t in tokens {
      let text = t.normalized ? (normalizer?.apply(t.content) ?? t.content) : t.content
      let scalars = Array(text.unicodeScalars)
      guard let first = scalars.first else { continue }
      if t.normalized {
        norm[first, default: []].append(Pattern(scalars: scalars, token: t))
      } else {
        raw[first, default: []].append(Pattern(scalars: scalars, token: t))
      }
    }
    // Longest first; among equal lengths the later file entry wins, as in HF's trie build.
    self.raw = raw.mapValues { $0.reversed().sorted { $0.scalars.count > $1.scalars.count } }
    normalizedPatterns = norm.mapValues { $0.reversed().sorted { $0.scalars.count > $1.scalars.count } }
  }

  /// Whether any pattern must be searched in normalized text.
  var hasNormalizedTokens: Bool { !normalizedPatterns.isEmpty }

  /// Whether any pattern must be searched in raw text.
  var hasRawTokens: Bool { !raw.isEmpty }

  /// HF `find_matches`: the text cut into (added-token id or nil, scalar range) pieces.
  func split(_ text: String, normalizedSet: Bool) -> [(id: Int?, text: String, start: Int)] {
    let table = normalizedSet ? normalizedPatterns : raw
    let s = Array(text.unicodeScalars)
    if s.isEmpty || table.isEmpty { return [(nil, text, 0)] }
    var out: [(id: Int?, text: String, start: Int)] = []
    func piece(_ a: Int, _ b: Int, _ id: Int?) {
      out.append((id, String(String.UnicodeScalarView(s[a..<b])), a))
    }
    var startOffset = 0
    var i = 0
    while i < s.count {
      guard let candidates = table[s[i]],
            let p = candidates.first(where: { i + $0.scalars.count <= s.count
              && s[i..<(i + $0.scalars.count)].elementsEqual($0.scalars) }) else {
        i += 1
        continue
      }
      var start = i
      var stop = i + p.scalars.count
      i = stop  // the automaton resumes after the match, whatever rstrip does
      let t = p.token
      if t.singleWord {
        let startSpace = start == 0 || !isWordScalar(s[start - 1])
        let stopSpace = stop == s.count || !isWordScalar(s[stop])
        if !startSpace || !stopSpace { continue }
      }
      if t.lstrip {
        var newStart = start
        while newStart > 0 && isWhitespace(s[newStart - 1]) { newStart -= 1 }
        start = max(newStart, startOffset)
      }
      if t.rstrip {
        while stop < s.count && isWhitespace(s[stop]) { stop += 1 }
      }
      if startOffset < start { piece(startOffset, start, nil) }
      piece(start, stop, t.id)
      startOffset = stop
    }
    if startOffset != s.count { piece(startOffset, s.count, nil) }
    return out
  }
}
