// tokenizer.json normalizers: Unicode forms, Lowercase, Replace, Prepend, Strip, Bert, Sequence.
import Foundation

/// A text normalizer, applied to each piece of input that is not an added token.
///
/// All string work is on Unicode scalars: Swift `String` comparison uses canonical
/// equivalence, HF compares code points, and the two disagree on "é" vs "e\u{301}".
indirect enum Normalizer: Sendable {
  case nfc, nfd, nfkc, nfkd
  case lowercase
  case stripAccents
  case strip(left: Bool, right: Bool)
  case prepend(String)
  case replace(pattern: ReplacePattern, content: String)
  case byteLevel
  /// BertNormalizer: clean text (drop NUL, U+FFFD and control characters, every whitespace a
  /// space), space out CJK ideographs, strip accents (NFD then drop Mn; default: as
  /// lowercase), lowercase — in that order.
  case bert(cleanText: Bool, chineseChars: Bool, stripAccents: Bool, lowercase: Bool)
  case sequence([Normalizer])

  /// Parses a `normalizer` object.
  init(json: JSONObject) throws {
    let type = try json.type()
    switch type {
    case "NFC": self = .nfc
    case "NFD": self = .nfd
    case "NFKC": self = .nfkc
    case "NFKD": self = .nfkd
    case "Lowercase": self = .lowercase
    case "StripAccents": self = .stripAccents
    case "Strip":
      self = .strip(left: try json.bool("strip_left", default: true),
                    right: try json.bool("strip_right", default: true))
    case "Prepend": self = .prepend(try json.string("prepend"))
    case "Replace":
      self = .replace(pattern: try ReplacePattern(PatternSpec(json, key: "pattern")),
                      content: try json.string("content"))
    case "ByteLevel": self = .byteLevel
    case "BertNormalizer":
      let lowercase = try json.bool("lowercase", default: true)
      let strip = json.value("strip_accents") as? Bool  // null: follow lowercase
      self = .bert(cleanText: try json.bool("clean_text", default: true),
                   chineseChars: try json.bool("handle_chinese_chars", default: true),
                   stripAccents: strip ?? lowercase, lowercase: lowercase)
    case "Sequence":
      self = .sequence(try json.objects("normalizers").map(Normalizer.init(json:)))
    default:
      throw TokenizerError.unsupported(component: "normalizer", type: type)
    }
  }

  /// Returns the normalized form of `s`.
  func apply(_ s: String) -> String {
    switch self {
    case .nfc: return s.precomposedStringWithCanonicalMapping
    case .nfd: return s.decomposedStringWithCanonicalMapping
    case .nfkc: return s.precomposedStringWithCompatibilityMapping
    case .nfkd: return s.decomposedStringWithCompatibilityMapping
    case .lowercase:
      // Rust `char::to_lowercase`, scalar by scalar (no final-sigma context rule).
      var out = String.UnicodeScalarView()
      for c in s.unicodeScalars {
        if c.isASCII {
          out.append(c.properties.isUppercase ? Unicode.Scalar(c.value + 32) ?? c : c)
        } else {
          out.append(contentsOf: c.properties.lowercaseMapping.unicodeScalars)
        }
      }
      return String(out)
    case .stripAccents:
      // HF StripAccents drops every combining mark (Mn, Mc, Me), not only accents.
      return String(String.UnicodeScalarView(s.unicodeScalars.filter {
        switch $0.properties.generalCategory {
        case .nonspacingMark, .spacingMark, .enclosingMark: return false
        default: return true
        }
      }))
    case let .strip(left, right):
      var scalars = Substring(s).unicodeScalars[...]
      if left { while let f = scalars.first, isWhitespace(f) { scalars.removeFirst() } }
      if right { while let l = scalars.last, isWhitespace(l) { scalars.removeLast() } }
      return String(String.UnicodeScalarView(scalars))
    case .prepend(let p):
      return s.isEmpty ? s : p + s
    case let .replace(pattern, content):
      return pattern.replaceAll(in: s, with: content)
    case .byteLevel:
      return ByteLevel.encode(s)
    case let .bert(cleanText, chineseChars, stripAccents, lowercase):
      var out = String.UnicodeScalarView()
      for c in s.unicodeScalars {
        if cleanText {
          if c.value == 0 || c.value == 0xFFFD || Self.isBertControl(c) { continue }
          if c == "\t" || c == "\n" || c == "\r" || c.properties.isWhitespace { out.append(" "); continue }
        }
        if chineseChars, Self.isCJKIdeograph(c) {
          out.append(" "); out.append(c); out.append(" ")
        } else {
          out.append(c)
        }
      }
      var text = String(out)
      if stripAccents {
        text = String(String.UnicodeScalarView(text.decomposedStringWithCanonicalMapping.unicodeScalars.filter {
          $0.properties.generalCategory != .nonspacingMark
        }))
      }
      return lowercase ? Normalizer.lowercase.apply(text) : text
    case .sequence(let list):
      return list.reduce(s) { $1.apply($0) }
    }
  }

  /// BERT's control characters: general category Cc, Cf, Cn or Co, but tab, newline and
  /// carriage return (whitespace there).
  static func isBertControl(_ c: Unicode.Scalar) -> Bool {
    if c == "\t" || c == "\n" || c == "\r" { return false }
    switch c.properties.generalCategory {
    case .control, .format, .unassigned, .privateUse, .surrogate: return true
    default: return false
    }
  }

  /// The CJK ideograph blocks BERT spaces out (not Hangul, kana or CJK punctuation).
  static func isCJKIdeograph(_ c: Unicode.Scalar) -> Bool {
    switch c.value {
    case 0x4E00...0x9FFF, 0x3400...0x4DBF, 0x20000...0x2A6DF, 0x2A700...0x2B73F, 0x2B740...0x2B81F,
         0x2B920...0x2CEAF, 0xF900...0xFAFF, 0x2F800...0x2FA1F: return true
    default: return false
    }
  }
}

/// The pattern of a Replace normalizer or decoder.
struct ReplacePattern: Sendable {
  /// Set for a literal pattern: matched scalar by scalar.
  let literal: [Unicode.Scalar]?
  /// Set for a regex pattern.
  let regex: TokenRegex?

  /// Compiles a `{"String"}` or `{"Regex"}` pattern.
  init(_ spec: PatternSpec) throws {
    switch spec {
    case .string(let s):
      literal = Array(s.unicodeScalars)
      regex = nil
    case .regex(let r):
      literal = nil
      regex = try TokenRegex(r)
    }
  }

  /// Replaces every non-overlapping occurrence, left to right.
  func replaceAll(in s: String, with content: String) -> String {
    if let lit = literal {
      guard let first = lit.first else { return s }
      let scalars = Array(s.unicodeScalars)
      var out = String.UnicodeScalarView()
      var i = 0
      while i < scalars.count {
        if scalars[i] == first, i + lit.count <= scalars.count,
           scalars[i..<(i + lit.count)].elementsEqual(lit) {
          out.append(contentsOf: content.unicodeScalars)
          i += lit.count
        } else {
          out.append(scalars[i])
          i += 1
        }
      }
      return String(out)
    }
    guard let re = regex else { return s }
    var out = ""
    var prev = s.startIndex
    for m in re.matches(in: s) {
      out.unicodeScalars.append(contentsOf: s.unicodeScalars[prev..<m.lowerBound])
      out.unicodeScalars.append(contentsOf: content.unicodeScalars)
      prev = m.upperBound
    }
    out.unicodeScalars.append(contentsOf: s.unicodeScalars[prev...])
    return out
  }
}
