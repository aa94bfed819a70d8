import Foundation

/// One token inside `{{ }}` or `{% %}`.
struct JinjaToken: Equatable {
  enum Kind: Equatable {
    case name(String), string(String), int(Int), float(Double), op(String)
  }
  var kind: Kind
  var line: Int
}

/// A top-level piece of a template after whitespace control has been applied.
enum JinjaChunk {
  case text(String)
  case output([JinjaToken], line: Int)
  case statement([JinjaToken], line: Int)
}

/// Splits template source into text, `{{ }}` and `{% %}` chunks, dropping `{# #}`, with
/// the whitespace rules of the jinja2 environment transformers builds:
/// `trim_blocks=True` (the newline after a block or comment tag goes), `lstrip_blocks=True`
/// (spaces/tabs before a block or comment tag at line start go), `{%-`/`-%}` strip all
/// whitespace on that side, `{%+`/`+%}` disable lstrip/trim, and
/// `keep_trailing_newline=False` (one final newline of the source goes).
struct JinjaLexer {
  private let s: [Unicode.Scalar]
  private var lineStarts: [Int] = [0]
  var trimBlocks = true
  var lstripBlocks = true

  init(_ source: String) {
    // jinja2 normalizes \r\n and \r to \n, then drops one trailing newline.
    var text = source.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\r", with: "\n")
    if text.hasSuffix("\n") { text.removeLast() }
    s = Array(text.unicodeScalars)
    for (i, c) in s.enumerated() where c == "\n" { lineStarts.append(i + 1) }
  }

  /// 1-based line of scalar offset `pos`.
  func line(at pos: Int) -> Int {
    var lo = 0, hi = lineStarts.count - 1
    while lo < hi {
      let mid = (lo + hi + 1) / 2
      if lineStarts[mid] <= pos { lo = mid } else { hi = mid - 1 }
    }
    return lo + 1
  }

  private func at(_ i: Int) -> Unicode.Scalar? { i < s.count ? s[i] : nil }
  private func string(_ r: Range<Int>) -> String {
    var v = String.UnicodeScalarView(); v.append(contentsOf: s[r]); return String(v)
  }
  private static func isSpace(_ c: Unicode.Scalar) -> Bool { c.properties.isWhitespace }

  /// The chunks of the whole template.
  func chunks() throws -> [JinjaChunk] {
    var out: [JinjaChunk] = []
    var pos = 0
    var lineStarting = true
    while pos < s.count {
      var i = pos
      while i + 1 < s.count, !(s[i] == "{" && (s[i + 1] == "{" || s[i + 1] == "%" || s[i + 1] == "#")) { i += 1 }
      if i + 1 >= s.count { out.append(.text(string(pos..<s.count))); break }
      let kind = s[i + 1]
      let sign: Unicode.Scalar? = (at(i + 2) == "-" || at(i + 2) == "+") ? at(i + 2) : nil
      var text = Array(s[pos..<i])
      if sign == "-" {
        while let last = text.last, Self.isSpace(last) { text.removeLast() }
      } else if sign != "+", lstripBlocks, kind != "{" {
        let lpos = (text.lastIndex(of: "\n").map { $0 + 1 }) ?? 0
        if lpos > 0 || lineStarting, text[lpos...].allSatisfy({ $0 == " " || $0 == "\t" }) {
          text.removeSubrange(lpos...)
        }
      }
      if !text.isEmpty { var v = String.UnicodeScalarView(); v.append(contentsOf: text); out.append(.text(String(v))) }
      let startLine = line(at: i)
      var p = i + 2 + (sign == nil ? 0 : 1)
      var end: Int
      var rightStrip: Unicode.Scalar? = nil
      if kind == "#" {
        guard let close = find("#}", from: p) else {
          throw ChatTemplateError.syntax("missing end of comment tag '#}'", line: startLine)
        }
        if close > p, s[close - 1] == "-" || s[close - 1] == "+" { rightStrip = s[close - 1] }
        end = close + 2
      } else {
        let closer: Unicode.Scalar = kind == "{" ? "}" : "%"
        var tokens: [JinjaToken] = []
        while true {
          while let c = at(p), Self.isSpace(c) { p += 1 }
          guard p < s.count else {
            throw ChatTemplateError.syntax("unexpected end of template, expected '\(closer)}'", line: startLine)
          }
          if (s[p] == "-" || s[p] == "+"), at(p + 1) == closer, at(p + 2) == "}" {
            rightStrip = s[p]; end = p + 3; break
          }
          if s[p] == closer, at(p + 1) == "}" { end = p + 2; break }
          tokens.append(try token(&p))
        }
        out.append(kind == "{" ? .output(tokens, line: startLine) : .statement(tokens, line: startLine))
      }
      if rightStrip == "-" {
        while let c = at(end), Self.isSpace(c) { end += 1 }
      } else if rightStrip != "+", trimBlocks, kind != "{", at(end) == "\n" {
        end += 1
      }
      lineStarting = end > 0 && s[end - 1] == "\n"
      pos = end
    }
    return out
  }

  private func find(_ needle: String, from: Int) -> Int? {
    let n = Array(needle.unicodeScalars)
    var i = from
    while i + n.count <= s.count {
      if Array(s[i..<(i + n.count)]) == n { return i }
      i += 1
    }
    return nil
  }

  private static let operators = ["//", "**", "==", "!=", ">=", "<=", "+", "-", "*", "/", "%", "~", "[", "]",
                                  "(", ")", "{", "}", ">", "<", "=", ".", ":", "|", ",", ";"]

  /// One token at `p` (whitespace already skipped).
  private func token(_ p: inout Int) throws -> JinjaToken {
    let line = line(at: p)
    let c = s[p]
    if c == "'" || c == "\"" { return JinjaToken(kind: .string(try stringLiteral(&p)), line: line) }
    if c.properties.numericType != nil, ("0"..."9").contains(c) {
      let start = p
      while let d = at(p), ("0"..."9").contains(d) || d == "_" { p += 1 }
      var isFloat = false
      if at(p) == ".", let d = at(p + 1), ("0"..."9").contains(d) {
        isFloat = true; p += 1
        while let d = at(p), ("0"..."9").contains(d) || d == "_" { p += 1 }
      }
      if at(p) == "e" || at(p) == "E" {
        var q = p + 1
        if at(q) == "+" || at(q) == "-" { q += 1 }
        if let d = at(q), ("0"..."9").contains(d) {
          isFloat = true; p = q
          while let d = at(p), ("0"..."9").contains(d) { p += 1 }
        }
      }
      let text = string(start..<p).replacingOccurrences(of: "_", with: "")
      if isFloat, let v = Double(text) { return JinjaToken(kind: .float(v), line: line) }
      if let v = Int(text) { return JinjaToken(kind: .int(v), line: line) }
      throw ChatTemplateError.syntax("bad number literal '\(text)'", line: line)
    }
    if c == "_" || c.properties.isAlphabetic {
      let start = p
      while let d = at(p), d == "_" || d.properties.isAlphabetic || ("0"..."9").contains(d) { p += 1 }
      return JinjaToken(kind: .name(string(start..<p)), line: line)
    }
    for op in Self.operators {
      let scalars = Array(op.unicodeScalars)
      if p + scalars.count <= s.count, Array(s[p..<(p + scalars.count)]) == scalars {
        p += scalars.count
        return JinjaToken(kind: .op(op), line: line)
      }
    }
    throw ChatTemplateError.syntax("unexpected character '\(Character(c))'", line: line)
  }

  /// A quoted literal with Python `unicode-escape` semantics (how jinja2 decodes them);
  /// unknown escapes keep their backslash.
  private func stringLiteral(_ p: inout Int) throws -> String {
    let quote = s[p], line = line(at: p)
    p += 1
    var out = String.UnicodeScalarView()
    while true {
      guard let c = at(p) else { throw ChatTemplateError.syntax("unterminated string literal", line: line) }
      p += 1
      if c == quote { return String(out) }
      guard c == "\\", let e = at(p) else { out.append(c); continue }
      p += 1
      switch e {
      case "n": out.append("\n")
      case "t": out.append("\t")
      case "r": out.append("\r")
      case "\\": out.append("\\")
      case "'": out.append("'")
      case "\"": out.append("\"")
      case "a": out.append("\u{07}")
      case "b": out.append("\u{08}")
      case "f": out.append("\u{0C}")
      case "v": out.append("\u{0B}")
      case "0": out.append("\u{00}")
      case "\n": break
      case "x", "u", "U":
        let width = e == "x" ? 2 : e == "u" ? 4 : 8
        guard p + width <= s.count, let v = UInt32(string(p..<(p + width)), radix: 16),
              let u = Unicode.Scalar(v) else {
          throw ChatTemplateError.syntax("bad \\\(e) escape in string literal", line: line)
        }
        out.append(u); p += width
      default: out.append("\\"); out.append(e)
      }
    }
  }
}
