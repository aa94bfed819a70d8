import Foundation

/// JSON in and out of `JinjaValue`, matching Python's `json` module byte for byte where
/// chat templates can see it.
enum JinjaJSON {
  /// `json.dumps(v, ensure_ascii=…, indent=…, separators=…, sort_keys=…)`, which is what
  /// transformers installs as the `tojson` filter (ensure_ascii defaults to False there,
  /// unlike jinja2's own HTML-escaping `tojson`).
  static func dumps(_ v: JinjaValue, indent: Int? = nil, separators: (String, String)? = nil,
                    sortKeys: Bool = false, ensureASCII: Bool = false, _ ip: JinjaInterpreter) throws -> String {
    // Python: item separator is ", " without indent, "," with one.
    let (itemSep, keySep) = separators ?? (indent == nil ? ", " : ",", ": ")
    var out = ""
    func write(_ v: JinjaValue, _ depth: Int) throws {
      let newline = indent.map { "\n" + String(repeating: " ", count: $0 * (depth + 1)) }
      let closing = indent.map { "\n" + String(repeating: " ", count: $0 * depth) } ?? ""
      switch v {
      case .none: out += "null"
      case let .bool(b): out += b ? "true" : "false"
      case let .int(i): out += String(i)
      case let .double(d):
        out += d.isNaN ? "NaN" : d.isInfinite ? (d < 0 ? "-Infinity" : "Infinity") : JinjaValue.pythonFloat(d)
      case let .string(s): out += quote(s, ascii: ensureASCII)
      case let .array(a):
        guard !a.isEmpty else { out += "[]"; return }
        out += "["
        for (i, x) in a.enumerated() {
          if i > 0 { out += itemSep }
          out += newline ?? ""
          try write(x, depth + 1)
        }
        out += closing + "]"
      case let .object(o):
        guard !o.keys.isEmpty else { out += "{}"; return }
        out += "{"
        for (i, k) in (sortKeys ? o.keys.sorted() : o.keys).enumerated() {
          if i > 0 { out += itemSep }
          out += (newline ?? "") + quote(k, ascii: ensureASCII) + keySep
          try write(o[k] ?? .none, depth + 1)
        }
        out += closing + "}"
      case let .namespace(ns): try write(.object(JinjaObject(ns.values)), depth)
      case let .undefined(n): throw ip.fail("'\(n)' is undefined (cannot convert it to JSON)")
      case .function: throw ip.fail("Object of type function is not JSON serializable")
      }
    }
    try write(v, 0)
    return out
  }

  /// A JSON string literal as Python's encoder writes it.
  static func quote(_ s: String, ascii: Bool) -> String { JSONLiteral.string(s, asciiOnly: ascii) }
}

// MARK: - Parsing

extension JinjaValue {
  /// Parses JSON text keeping object key order and the int/float distinction, as Python's
  /// `json.loads` does (Foundation's `JSONSerialization` keeps neither).
  public init(json text: String) throws {
    var p = JSONScanner(Array(text.unicodeScalars))
    self = try p.value()
    p.skipSpace()
    guard p.i == p.s.count else { throw p.error("trailing characters") }
  }
}

private struct JSONScanner {
  let s: [Unicode.Scalar]
  var i = 0
  init(_ s: [Unicode.Scalar]) { self.s = s }

  func error(_ m: String) -> ChatTemplateError { .notFound("invalid JSON at offset \(i): \(m)") }
  mutating func skipSpace() { while i < s.count, " \t\n\r".unicodeScalars.contains(s[i]) { i += 1 } }

  mutating func value() throws -> JinjaValue {
    skipSpace()
    guard i < s.count else { throw error("unexpected end") }
    switch s[i] {
    case "{":
      i += 1; var o = JinjaObject(); skipSpace()
      if i < s.count, s[i] == "}" { i += 1; return .object(o) }
      while true {
        skipSpace()
        guard case let .string(k) = try value() else { throw error("object key must be a string") }
        skipSpace()
        guard i < s.count, s[i] == ":" else { throw error("expected ':'") }
        i += 1
        o[k] = try value()
        skipSpace()
        guard i < s.count else { throw error("unterminated object") }
        if s[i] == "," { i += 1; continue }
        if s[i] == "}" { i += 1; return .object(o) }
        throw error("expected ',' or '}'")
      }
    case "[":
      i += 1; var a: [JinjaValue] = []; skipSpace()
      if i < s.count, s[i] == "]" { i += 1; return .array(a) }
      while true {
        a.append(try value()); skipSpace()
        guard i < s.count else { throw error("unterminated array") }
        if s[i] == "," { i += 1; continue }
        if s[i] == "]" { i += 1; return .array(a) }
        throw error("expected ',' or ']'")
      }
    case "\"": return .string(try string())
    default:
      for (word, v) in [("true", JinjaValue.bool(true)), ("false", .bool(false)), ("null", .none)] {
        let w = Array(word.unicodeScalars)
        if i + w.count <= s.count, Array(s[i..<(i + w.count)]) == w { i += w.count; return v }
      }
      let start = i
      while i < s.count, "+-0123456789.eE".unicodeScalars.contains(s[i]) { i += 1 }
      let text = String(String.UnicodeScalarView(s[start..<i]))
      if let n = Int(text) { return .int(n) }
      if let d = Double(text), !text.isEmpty { return .double(d) }
      throw error("unexpected character")
    }
  }

  mutating func string() throws -> String {
    i += 1
    var out = String.UnicodeScalarView()
    while i < s.count {
      let c = s[i]; i += 1
      if c == "\"" { return String(out) }
      guard c == "\\" else { out.append(c); continue }
      guard i < s.count else { break }
      let e = s[i]; i += 1
      switch e {
      case "n": out.append("\n")
      case "t": out.append("\t")
      case "r": out.append("\r")
      case "b": out.append("\u{08}")
      case "f": out.append("\u{0C}")
      case "u":
        var code = try hex4()
        if (0xD800..<0xDC00).contains(code), i + 1 < s.count, s[i] == "\\", s[i + 1] == "u" {
          i += 2
          let low = try hex4()
          code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)
        }
        out.append(Unicode.Scalar(code) ?? "\u{FFFD}")
      default: out.append(e)
      }
    }
    throw error("unterminated string")
  }

  mutating func hex4() throws -> UInt32 {
    guard i + 4 <= s.count, let v = UInt32(String(String.UnicodeScalarView(s[i..<(i + 4)])), radix: 16) else {
      throw error("bad \\u escape")
    }
    i += 4
    return v
  }
}
