// tokenizer.json decoders: ByteLevel, Metaspace, ByteFallback, Fuse, Strip, Replace, BPE, Sequence.

/// Turns token strings back into text (HF `Decoder::decode_chain`, then joined).
indirect enum TokenDecoder: Sendable {
  case byteLevel
  case metaspace(replacement: Unicode.Scalar, prependScheme: PreTokenizer.PrependScheme)
  case byteFallback
  case fuse
  case strip(content: Unicode.Scalar, start: Int, stop: Int)
  case replace(pattern: ReplacePattern, content: String)
  case bpe(suffix: String)
  /// WordPiece: pieces after the first lose the prefix ("##") or get a leading space; with
  /// `cleanup`, BERT's spacing fixes (" ." → ".", " n't" → "n't", …) per token.
  case wordPiece(prefix: String, cleanup: Bool)
  case sequence([TokenDecoder])

  /// Parses a `decoder` object.
  init(json: JSONObject) throws {
    let type = try json.type()
    switch type {
    case "ByteLevel": self = .byteLevel
    case "Metaspace":
      let r = try json.string("replacement")
      guard let c = r.unicodeScalars.first, r.unicodeScalars.count == 1 else {
        throw json.missing("replacement", "a single character")
      }
      self = .metaspace(replacement: c, prependScheme: try PreTokenizer.PrependScheme(json: json))
    case "ByteFallback": self = .byteFallback
    case "Fuse": self = .fuse
    case "Strip":
      let c = try json.string("content")
      guard let s = c.unicodeScalars.first, c.unicodeScalars.count == 1 else {
        throw json.missing("content", "a single character")
      }
      self = .strip(content: s, start: try json.int("start", default: 0), stop: try json.int("stop", default: 0))
    case "Replace":
      self = .replace(pattern: try ReplacePattern(PatternSpec(json, key: "pattern")),
                      content: try json.string("content"))
    case "BPEDecoder": self = .bpe(suffix: try json.optionalString("suffix") ?? "</w>")
    case "WordPiece":
      self = .wordPiece(prefix: try json.optionalString("prefix") ?? "##", cleanup: try json.bool("cleanup", default: true))
    case "Sequence":
      self = .sequence(try json.objects("decoders").map(TokenDecoder.init(json:)))
    default:
      throw TokenizerError.unsupported(component: "decoder", type: type)
    }
  }

  /// HF `decode_chain`: token strings in, token strings out.
  func chain(_ tokens: [String]) -> [String] {
    switch self {
    case .byteLevel:
      var bytes: [UInt8] = []
      for t in tokens { bytes.append(contentsOf: ByteLevel.decodeBytes(t) ?? Array(t.utf8)) }
      return [String(decoding: bytes, as: UTF8.self)]
    case let .metaspace(replacement, scheme):
      return tokens.enumerated().map { i, t in
        var out = String.UnicodeScalarView()
        for c in t.unicodeScalars {
          if c == replacement {
            if !(i == 0 && scheme != .never) { out.append(" ") }
          } else {
            out.append(c)
          }
        }
        return String(out)
      }
    case .byteFallback:
      return Self.byteFallback(tokens)
    case .fuse:
      return [tokens.joined()]
    case let .strip(content, start, stop):
      return tokens.map { t in
        let cs = Array(t.unicodeScalars)
        var startCut = 0
        for i in 0..<min(start, cs.count) {
          guard cs[i] == content else { break }
          startCut = i + 1
        }
        var stopCut = cs.count
        for i in 0..<min(stop, cs.count) {
          let index = cs.count - i - 1
          guard cs[index] == content else { break }
          stopCut = index
        }
        return startCut < stopCut ? String(String.UnicodeScalarView(cs[startCut..<stopCut])) : ""
      }
    case let .replace(pattern, content):
      return tokens.map { pattern.replaceAll(in: $0, with: content) }
    case .bpe(let suffix):
      let p = try? ReplacePattern(.string(suffix))
      return tokens.enumerated().map { i, t in
        p?.replaceAll(in: t, with: i == tokens.count - 1 ? "" : " ") ?? t
      }
    case let .wordPiece(prefix, cleanup):
      return tokens.enumerated().map { i, t in
        var token = t
        if i != 0 {
          if token.unicodeScalars.starts(with: prefix.unicodeScalars) {
            token = String(String.UnicodeScalarView(token.unicodeScalars.dropFirst(prefix.unicodeScalars.count)))
          } else {
            token = " " + token
          }
        }
        return cleanup ? Self.wordPieceCleanup(token) : token
      }
    case .sequence(let list):
      return list.reduce(tokens) { $1.chain($0) }
    }
  }

  /// BERT's decode cleanup, replacements applied in HF's order.
  static func wordPieceCleanup(_ s: String) -> String {
    let pairs = [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
                 (" do not", " don't"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")]
    var out = s
    for (from, to) in pairs {
      guard let p = try? ReplacePattern(.string(from)) else { continue }
      out = p.replaceAll(in: out, with: to)
    }
    return out
  }

  /// Decodes tokens to the final string.
  func decode(_ tokens: [String]) -> String { chain(tokens).joined() }

  /// `<0xXX>` runs become their UTF-8 text, or one U+FFFD per byte when invalid.
  private static func byteFallback(_ tokens: [String]) -> [String] {
    var out: [String] = []
    var pending: [UInt8] = []
    func flush() {
      guard !pending.isEmpty else { return }
      if let s = String(validating: pending, as: UTF8.self) {
        out.append(s)
      } else {
        out.append(contentsOf: repeatElement("\u{FFFD}", count: pending.count))
      }
      pending.removeAll()
    }
    for t in tokens {
      let u = Array(t.utf8)
      if u.count == 6, u.starts(with: Array("<0x".utf8)), u[5] == UInt8(ascii: ">"),
         let b = UInt8(String(decoding: u[3..<5], as: UTF8.self), radix: 16) {
        pending.append(b)
      } else {
        flush()
        out.append(t)
      }
    }
    flush()
    return out
  }
}
