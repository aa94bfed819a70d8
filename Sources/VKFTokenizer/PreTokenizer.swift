// tokenizer.json pre-tokenizers: ByteLevel, Split, Digits, Metaspace, Whitespace,
// WhitespaceSplit, Punctuation, Bert, Sequence.

/// A piece of input text on its way to the model.
struct TextPiece: Sendable {
  /// The (normalized, possibly byte-mapped) text.
  var text: String
  /// True when the piece begins at offset 0 of the original input
  /// (HF `offsets_original().0 == 0`, which Metaspace's `prepend_scheme: first` tests).
  var atStart: Bool
}

/// A pre-tokenizer: cuts normalized text into the words BPE sees.
indirect enum PreTokenizer: Sendable {
  case byteLevel(addPrefixSpace: Bool, useRegex: Bool)
  case split(SplitMatcher, SplitBehavior, invert: Bool)
  case metaspace(replacement: Unicode.Scalar, prepend: PrependScheme, split: Bool)
  case sequence([PreTokenizer])

  /// When Metaspace adds a leading replacement character.
  enum PrependScheme: Sendable {
    case always, first, never

    /// Parses `prepend_scheme`, or the legacy `add_prefix_space` flag.
    init(json: JSONObject) throws {
      if let s = try json.optionalString("prepend_scheme") {
        switch s.lowercased() {
        case "always": self = .always
        case "first": self = .first
        case "never": self = .never
        default: throw TokenizerError.unsupported(component: "Metaspace prepend_scheme", type: s)
        }
      } else {
        self = try json.bool("add_prefix_space", default: true) ? .always : .never
      }
    }
  }

  /// GPT-2's pre-tokenization regex, as HF's ByteLevel compiles it.
  static let gpt2Pattern =
    #"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"#

  /// Parses a `pre_tokenizer` object.
  init(json: JSONObject) throws {
    let type = try json.type()
    switch type {
    case "ByteLevel":
      self = .byteLevel(addPrefixSpace: try json.bool("add_prefix_space", default: true),
                        useRegex: try json.bool("use_regex", default: true))
    case "Split":
      let pattern = try PatternSpec(json, key: "pattern")
      self = .split(.regex(try pattern.compile()), try SplitBehavior(json: json.string("behavior")),
                    invert: try json.bool("invert", default: false))
    case "Digits":
      let individual = try json.bool("individual_digits", default: false)
      self = .split(.scalar(isNumeric), individual ? .isolated : .contiguous, invert: false)
    case "Punctuation":
      let behavior = try json.optionalString("behavior").map(SplitBehavior.init(json:)) ?? .isolated
      self = .split(.scalar(isPunctuation), behavior, invert: false)
    case "WhitespaceSplit":
      self = .split(.scalar(isWhitespace), .removed, invert: false)
    case "Whitespace":
      // HF: split on Invert(\w+|[^\w\s]+) with Removed, i.e. keep the matches.
      self = .split(.regex(try TokenRegex(#"\w+|[^\w\s]+"#)), .removed, invert: true)
    case "BertPreTokenizer":
      self = .sequence([.split(.scalar(isWhitespace), .removed, invert: false),
                        .split(.scalar(isPunctuation), .isolated, invert: false)])
    case "CharDelimiterSplit":
      let d = try json.string("delimiter")
      guard let c = d.unicodeScalars.first, d.unicodeScalars.count == 1 else {
        throw json.missing("delimiter", "a single character")
      }
      self = .split(.scalar({ $0 == c }), .removed, invert: false)
    case "Metaspace":
      let r = try json.string("replacement")
      guard let c = r.unicodeScalars.first, r.unicodeScalars.count == 1 else {
        throw json.missing("replacement", "a single character")
      }
      self = .metaspace(replacement: c, prepend: try PrependScheme(json: json),
                        split: try json.bool("split", default: true))
    case "Sequence":
      self = .sequence(try json.objects("pretokenizers").map(PreTokenizer.init(json:)))
    default:
      throw TokenizerError.unsupported(component: "pre_tokenizer", type: type)
    }
  }

  /// Splits every piece; pieces that come out empty are dropped, as HF does.
  func apply(_ pieces: [TextPiece]) -> [TextPiece] {
    switch self {
    case .sequence(let list):
      return list.reduce(pieces) { $1.apply($0) }
    default:
      var out: [TextPiece] = []
      out.reserveCapacity(pieces.count)
      for p in pieces { apply(to: p, into: &out) }
      return out
    }
  }

  private func apply(to piece: TextPiece, into out: inout [TextPiece]) {
    switch self {
    case let .byteLevel(addPrefixSpace, useRegex):
      var text = piece.text
      if addPrefixSpace && text.unicodeScalars.first != " " { text = " " + text }
      if useRegex {
        for r in splitRanges(text, on: .regex(Self.gpt2Regex), behavior: .isolated) {
          out.append(TextPiece(text: ByteLevel.encode(String(text[r])),
                               atStart: piece.atStart && r.lowerBound == text.startIndex))
        }
      } else if !text.isEmpty {
        out.append(TextPiece(text: ByteLevel.encode(text), atStart: piece.atStart))
      }
    case let .split(matcher, behavior, invert):
      appendSplit(piece, piece.text, matcher, behavior, invert, into: &out)
    case let .metaspace(replacement, prepend, split):
      var text = String(String.UnicodeScalarView(
        piece.text.unicodeScalars.map { $0 == " " ? replacement : $0 }))
      let startsWithReplacement = text.unicodeScalars.first == replacement
      if !startsWithReplacement && (prepend == .always || (prepend == .first && piece.atStart)) {
        text = String(Character(replacement)) + text
      }
      if split {
        appendSplit(piece, text, .scalar({ $0 == replacement }), .mergedWithNext, false, into: &out)
      } else if !text.isEmpty {
        out.append(TextPiece(text: text, atStart: piece.atStart))
      }
    case .sequence(let list):
      out.append(contentsOf: PreTokenizer.sequence(list).apply([piece]))
    }
  }

  private func appendSplit(_ piece: TextPiece, _ text: String, _ matcher: SplitMatcher,
                           _ behavior: SplitBehavior, _ invert: Bool, into out: inout [TextPiece]) {
    for r in splitRanges(text, on: matcher, behavior: behavior, invert: invert) {
      out.append(TextPiece(text: String(text[r]), atStart: piece.atStart && r.lowerBound == text.startIndex))
    }
  }

  /// The compiled GPT-2 regex; the pattern is a constant, so compiling cannot fail.
  private static let gpt2Regex: TokenRegex = {
    do { return try TokenRegex(gpt2Pattern) } catch { fatalError("GPT-2 pattern: \(error)") }
  }()
}
