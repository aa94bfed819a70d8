// Regex and character patterns, and the five Split delimiter behaviours of HF `tokenizers`.
import Foundation

/// A compiled regex. ICU (NSRegularExpression) stands in for HF's Oniguruma: both match
/// code points, support \p{L}/\p{N}, lookahead and `(?i:…)`, and agree on the patterns used
/// by GPT-2, Llama 3 and Qwen2 (checked against HF on the fixture corpus).
struct TokenRegex: @unchecked Sendable {
  // NSRegularExpression is immutable after init and documented thread-safe.
  let regex: NSRegularExpression

  /// Compiles `pattern`, throwing `TokenizerError.badPattern`.
  init(_ pattern: String) throws {
    do {
      regex = try NSRegularExpression(pattern: pattern, options: [])
    } catch {
      throw TokenizerError.badPattern(pattern: pattern, reason: "\(error)")
    }
  }

  /// Non-overlapping matches, left to right, as ranges of `s`.
  ///
  /// Offsets are walked in the UTF-16 view: `Range(_:in:)` rounds to Character boundaries and
  /// so would lose matches inside a grapheme cluster ("\r\n", ZWJ emoji, "e\u{301}").
  func matches(in s: String) -> [Range<String.Index>] {
    let u = s.utf16
    let found = regex.matches(in: s, options: [], range: NSRange(location: 0, length: u.count))
    var out: [Range<String.Index>] = []
    out.reserveCapacity(found.count)
    var index = u.startIndex
    var offset = 0
    for m in found {
      let lower = u.index(index, offsetBy: m.range.location - offset)
      let upper = u.index(lower, offsetBy: m.range.length)
      out.append(lower..<upper)
      (index, offset) = (upper, m.range.location + m.range.length)
    }
    return out
  }
}

/// What a pre-tokenizer splits on: a regex or a per-scalar predicate.
enum SplitMatcher: Sendable {
  case regex(TokenRegex)
  case scalar(@Sendable (Unicode.Scalar) -> Bool)

  /// HF `Pattern::find_matches`: ranges covering all of `s`, each flagged match / not match.
  /// A scalar predicate makes every matching scalar its own match.
  func findMatches(in s: String) -> [(range: Range<String.Index>, isMatch: Bool)] {
    if s.isEmpty { return [(s.startIndex..<s.endIndex, false)] }
    var out: [(range: Range<String.Index>, isMatch: Bool)] = []
    var prev = s.startIndex
    switch self {
    case .regex(let re):
      for m in re.matches(in: s) {
        if prev != m.lowerBound { out.append((prev..<m.lowerBound, false)) }
        out.append((m, true))
        prev = m.upperBound
      }
    case .scalar(let predicate):
      let scalars = s.unicodeScalars
      var i = scalars.startIndex
      while i < scalars.endIndex {
        let next = scalars.index(after: i)
        if predicate(scalars[i]) {
          if prev < i { out.append((prev..<i, false)) }
          out.append((i..<next, true))
          prev = next
        }
        i = next
      }
    }
    if prev != s.endIndex { out.append((prev..<s.endIndex, false)) }
    return out
  }
}

/// HF `SplitDelimiterBehavior`: what happens to the delimiter when splitting.
enum SplitBehavior: Sendable {
  case removed, isolated, mergedWithPrevious, mergedWithNext, contiguous

  /// Parses the tokenizer.json spelling (`"Isolated"`; lower-case accepted too).
  init(json: String) throws {
    switch json.lowercased() {
    case "removed": self = .removed
    case "isolated": self = .isolated
    case "mergedwithprevious", "merged_with_previous": self = .mergedWithPrevious
    case "mergedwithnext", "merged_with_next": self = .mergedWithNext
    case "contiguous": self = .contiguous
    default: throw TokenizerError.unsupported(component: "Split behavior", type: json)
    }
  }
}

/// Splits `s` like HF `NormalizedString::split`; empty pieces are dropped.
func split(_ s: String, on matcher: SplitMatcher, behavior: SplitBehavior, invert: Bool = false) -> [String] {
  splitRanges(s, on: matcher, behavior: behavior, invert: invert).map { String(s[$0]) }
}

/// The non-empty ranges of `s` that `split` returns.
func splitRanges(_ s: String, on matcher: SplitMatcher, behavior: SplitBehavior,
                 invert: Bool = false) -> [Range<String.Index>] {
  var matches = matcher.findMatches(in: s)
  if invert { matches = matches.map { ($0.range, !$0.isMatch) } }
  var pieces: [Range<String.Index>] = []
  switch behavior {
  case .isolated:
    pieces = matches.map(\.range)
  case .removed:
    pieces = matches.filter { !$0.isMatch }.map(\.range)
  case .contiguous:
    var previous = false
    for (r, isMatch) in matches {
      if isMatch == previous, let last = pieces.last {
        pieces[pieces.count - 1] = last.lowerBound..<r.upperBound
      } else {
        pieces.append(r)
      }
      previous = isMatch
    }
  case .mergedWithPrevious:
    var previous = false
    for (r, isMatch) in matches {
      if isMatch && !previous, let last = pieces.last {
        pieces[pieces.count - 1] = last.lowerBound..<r.upperBound
      } else {
        pieces.append(r)
      }
      previous = isMatch
    }
  case .mergedWithNext:
    var previous = false
    for (r, isMatch) in matches.reversed() {
      if isMatch && !previous, let last = pieces.last {
        pieces[pieces.count - 1] = r.lowerBound..<last.upperBound
      } else {
        pieces.append(r)
      }
      previous = isMatch
    }
    pieces.reverse()
  }
  return pieces.filter { !$0.isEmpty }
}

// MARK: - Scalar classes (Rust `char` methods HF calls)

/// Rust `char::is_whitespace`: the Unicode White_Space property.
@Sendable func isWhitespace(_ c: Unicode.Scalar) -> Bool { c.properties.isWhitespace }

/// Rust `char::is_numeric`: general categories Nd, Nl, No.
@Sendable func isNumeric(_ c: Unicode.Scalar) -> Bool {
  switch c.properties.generalCategory {
  case .decimalNumber, .letterNumber, .otherNumber: return true
  default: return false
  }
}

/// HF `is_punc`: ASCII punctuation or any Unicode P* category.
@Sendable func isPunctuation(_ c: Unicode.Scalar) -> Bool {
  if c.isASCII, let b = UInt8(exactly: c.value) {
    return (0x21...0x2F).contains(b) || (0x3A...0x40).contains(b) || (0x5B...0x60).contains(b)
      || (0x7B...0x7E).contains(b)
  }
  switch c.properties.generalCategory {
  case .connectorPunctuation, .dashPunctuation, .openPunctuation, .closePunctuation,
       .initialPunctuation, .finalPunctuation, .otherPunctuation:
    return true
  default: return false
  }
}

/// Rust regex `\w`: alphabetic, marks, decimal digits, connector punctuation, join controls.
func isWordScalar(_ c: Unicode.Scalar) -> Bool {
  let p = c.properties
  if p.isAlphabetic || p.isJoinControl { return true }
  switch p.generalCategory {
  case .nonspacingMark, .spacingMark, .enclosingMark, .decimalNumber, .connectorPunctuation: return true
  default: return false
  }
}
