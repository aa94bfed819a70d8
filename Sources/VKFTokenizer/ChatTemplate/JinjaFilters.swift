import Foundation

// MARK: - Filters

extension JinjaBuiltins {
  typealias Args = ([JinjaValue], [(String, JinjaValue)])

  /// Argument `i` by position or by keyword `name`.
  static func arg(_ a: Args, _ i: Int, _ name: String) -> JinjaValue? {
    if i < a.0.count { return a.0[i] }
    return a.1.first { $0.0 == name }?.1
  }

  /// `value | name(args)`.
  static func filter(_ name: String, _ v: JinjaValue, _ a: Args, _ ip: JinjaInterpreter) throws -> JinjaValue {
    if case let .undefined(n) = v, !["default", "d", "length", "count", "string", "list", "trim", "join",
                                    "first", "last", "lower", "upper", "safe", "tojson", "items"].contains(name) {
      throw ip.fail("'\(n)' is undefined (filter '\(name)')")
    }
    switch name {
    case "default", "d":
      let fallback = arg(a, 0, "default_value") ?? .string("")
      let boolean = arg(a, 1, "boolean")?.isTruthy ?? false
      return v.isUndefined || (boolean && !v.isTruthy) ? fallback : v
    case "length", "count": return .int(try length(v, ip))
    case "string": return .string(v.pythonString)
    case "safe": return v
    case "escape", "e":
      return .string(v.pythonString.replacingOccurrences(of: "&", with: "&amp;")
        .replacingOccurrences(of: "<", with: "&lt;").replacingOccurrences(of: ">", with: "&gt;")
        .replacingOccurrences(of: "\"", with: "&#34;").replacingOccurrences(of: "'", with: "&#39;"))
    case "trim":
      return .string(strip(v.pythonString, arg(a, 0, "chars")?.stringValue, left: true, right: true))
    case "upper": return .string(v.pythonString.uppercased())
    case "lower": return .string(v.pythonString.lowercased())
    case "capitalize": return .string(capitalize(v.pythonString))
    case "title": return .string(jinjaTitle(v.pythonString))
    case "replace":
      guard let old = arg(a, 0, "old")?.pythonString, let new = arg(a, 1, "new")?.pythonString else {
        throw ip.fail("replace needs old and new strings")
      }
      return .string(replace(v.pythonString, old, new, count: arg(a, 2, "count")?.integer))
    case "first": return try ip.iterate(v).first ?? .undefined("first")
    case "last": return try ip.iterate(v).last ?? .undefined("last")
    case "list": return .array(try ip.iterate(v))
    case "reverse":
      if case let .string(s) = v { return .string(String(String.UnicodeScalarView(s.unicodeScalars.reversed()))) }
      return .array(try ip.iterate(v).reversed())
    case "join":
      var items = try ip.iterate(v)
      if let attribute = arg(a, 1, "attribute") { items = try items.map { try path($0, attribute, ip) } }
      return .string(items.map(\.pythonString).joined(separator: arg(a, 0, "d")?.pythonString ?? ""))
    case "items":
      guard case let .object(o) = v else { return v.isUndefined ? .array([]) : try failType(name, v, ip) }
      return .array(o.pairs.map { .array([.string($0.0), $0.1]) })
    case "dictsort":
      guard case let .object(o) = v else { return try failType(name, v, ip) }
      return .array(o.keys.sorted { $0.lowercased() < $1.lowercased() }.map { .array([.string($0), o[$0] ?? .none]) })
    case "tojson":
      // Python reads a negative indent as 0 spaces; widths are clamped like `indent`'s (a
      // negative count or indent × depth past 64 bits would trap).
      let indent = arg(a, 0, "indent")?.integer.map { min(max($0, 0), indentLimit) }
      let sortKeys = a.1.first { $0.0 == "sort_keys" }?.1.isTruthy ?? false
      let ascii = a.1.first { $0.0 == "ensure_ascii" }?.1.isTruthy ?? false
      var separators: (String, String)? = nil
      if case let .array(s)? = a.1.first(where: { $0.0 == "separators" })?.1, s.count == 2 {
        separators = (s[0].pythonString, s[1].pythonString)
      }
      return .string(try JinjaJSON.dumps(v, indent: indent, separators: separators, sortKeys: sortKeys,
                                         ensureASCII: ascii, ip))
    case "int":
      let fallback = arg(a, 0, "default") ?? .int(0)
      switch v {
      case let .int(i): return .int(i)
      case let .bool(b): return .int(b ? 1 : 0)
      case let .double(d): return Int(exactly: d.rounded(.towardZero)).map(JinjaValue.int) ?? fallback
      case let .string(s):
        let t = s.trimmingCharacters(in: .whitespaces)
        if let i = Int(t) { return .int(i) }
        if let d = Double(t), let i = Int(exactly: d.rounded(.towardZero)) { return .int(i) }
        return fallback
      default: return fallback
      }
    case "float":
      if let d = v.numeric { return .double(d) }
      if case let .string(s) = v, let d = Double(s.trimmingCharacters(in: .whitespaces)) { return .double(d) }
      return arg(a, 0, "default") ?? .double(0)
    case "abs":
      if case let .int(i) = v { return .int(abs(i)) }
      if let d = v.numeric { return .double(abs(d)) }
      return try failType(name, v, ip)
    case "round":
      guard let d = v.numeric else { return try failType(name, v, ip) }
      let p = Double(arg(a, 0, "precision")?.integer ?? 0), scale = pow(10, p)
      return .double((d * scale).rounded(.toNearestOrAwayFromZero) / scale)
    case "sum":
      var total = arg(a, 2, "start") ?? .int(0)
      for x in try ip.iterate(v) {
        total = try binary("+", total, try arg(a, 0, "attribute").map { try path(x, $0, ip) } ?? x, ip)
      }
      return total
    case "min", "max", "sort", "unique":
      return try ordering(name, try ip.iterate(v), a, ip)
    case "map":
      let items = try ip.iterate(v)
      if let attribute = a.1.first(where: { $0.0 == "attribute" })?.1 {
        let fallback = a.1.first { $0.0 == "default" }?.1
        return .array(try items.map { let r = try path($0, attribute, ip); return r.isUndefined ? (fallback ?? r) : r })
      }
      guard let f = a.0.first?.stringValue else { throw ip.fail("map needs a filter name or attribute=") }
      let rest: Args = (Array(a.0.dropFirst()), a.1)
      return .array(try items.map { try filter(f, $0, rest, ip) })
    case "select", "reject", "selectattr", "rejectattr":
      let byAttribute = name.hasSuffix("attr")
      let keep = name.hasPrefix("select")
      var positional = a.0
      let attribute = byAttribute ? (positional.isEmpty ? nil : positional.removeFirst()) : nil
      let testName = positional.isEmpty ? nil : positional.removeFirst().pythonString
      return .array(try ip.iterate(v).filter { item in
        let subject = try attribute.map { try path(item, $0, ip) } ?? item
        let passed = try testName.map { try test($0, subject, positional, ip) } ?? subject.isTruthy
        return passed == keep
      })
    case "indent":
      return .string(indent(v.pythonString, width: arg(a, 0, "width") ?? .int(4),
                            first: arg(a, 1, "first")?.isTruthy ?? false, blank: arg(a, 2, "blank")?.isTruthy ?? false))
    case "wordcount": return .int(v.pythonString.split(whereSeparator: { $0.isWhitespace }).count)
    case "center":
      let s = v.pythonString
      let width = min(max(arg(a, 0, "width")?.integer ?? 80, 0), JinjaLimits.repeatBytes)
      let pad = max(width - s.unicodeScalars.count, 0), left = pad / 2 + (pad % 2 & width % 2)
      return .string(String(repeating: " ", count: left) + s + String(repeating: " ", count: pad - left))
    case "batch":
      let size = max(arg(a, 0, "linecount")?.integer ?? 1, 1), items = try ip.iterate(v)
      return .array(stride(from: 0, to: items.count, by: size).map { .array(Array(items[$0..<min($0 + size, items.count)])) })
    default:
      throw ip.fail("no filter named '\(name)'")
    }
  }

  private static func failType(_ filter: String, _ v: JinjaValue, _ ip: JinjaInterpreter) throws -> JinjaValue {
    throw ip.fail("filter '\(filter)' cannot take a '\(v.typeName)'")
  }

  /// `len(v)`; Undefined has length 0.
  static func length(_ v: JinjaValue, _ ip: JinjaInterpreter) throws -> Int {
    switch v {
    case let .string(s): return s.unicodeScalars.count
    case let .array(a): return a.count
    case let .object(o): return o.keys.count
    case .undefined: return 0
    default: throw ip.fail("object of type '\(v.typeName)' has no len()")
    }
  }

  /// Dotted attribute/item lookup as `selectattr`/`map(attribute=)` do ("function.name", "0").
  static func path(_ v: JinjaValue, _ attribute: JinjaValue, _ ip: JinjaInterpreter) throws -> JinjaValue {
    if let i = attribute.integer { return try item(v, .int(i), ip) }
    var current = v
    for part in attribute.pythonString.split(separator: ".") {
      if current.isUndefined { return current }
      current = try item(current, Int(part).map(JinjaValue.int) ?? .string(String(part)), ip)
    }
    return current
  }

  private static func ordering(_ name: String, _ items: [JinjaValue], _ a: Args, _ ip: JinjaInterpreter) throws -> JinjaValue {
    let caseSensitive = a.1.first { $0.0 == "case_sensitive" }?.1.isTruthy ?? false
    let attribute = a.1.first { $0.0 == "attribute" }?.1
    func key(_ x: JinjaValue) throws -> JinjaValue {
      let k = try attribute.map { try path(x, $0, ip) } ?? x
      if !caseSensitive, case let .string(s) = k { return .string(s.lowercased()) }
      return k
    }
    let keyed = try items.map { ($0, try key($0)) }
    func less(_ x: (JinjaValue, JinjaValue), _ y: (JinjaValue, JinjaValue)) throws -> Bool {
      try compare("<", x.1, y.1, ip)
    }
    switch name {
    case "min": return try keyed.min(by: less)?.0 ?? .undefined("min")
    case "max": return try keyed.max(by: less)?.0 ?? .undefined("max")
    case "unique":
      var seen: [JinjaValue] = [], out: [JinjaValue] = []
      for (x, k) in keyed where !seen.contains(k) { seen.append(k); out.append(x) }
      return .array(out)
    default:
      let reverse = arg(a, 0, "reverse")?.isTruthy ?? false
      let sorted = try keyed.sorted(by: less).map(\.0)  // Swift's sort is stable, like Python's
      return .array(reverse ? sorted.reversed() : sorted)
    }
  }

  /// The widest `indent` (characters); real templates indent by 2–8.
  static let indentLimit = 4096

  /// jinja2 `do_indent` (3.x), including its "append a newline, then splitlines" quirk.
  static func indent(_ s: String, width: JinjaValue, first: Bool, blank: Bool) -> String {
    let pad: String
    // Widths past `indentLimit` (or below 0) are clamped: a hostile width × many lines
    // would otherwise allocate without bound.
    if case let .string(w) = width { pad = String(w.prefix(indentLimit)) }
    else { pad = String(repeating: " ", count: min(max(width.integer ?? 4, 0), indentLimit)) }
    var lines = (s + "\n").components(separatedBy: "\n")
    lines.removeLast()
    var rv: String
    if blank {
      rv = lines.joined(separator: "\n" + pad)
    } else {
      rv = lines.removeFirst()
      if !lines.isEmpty { rv += "\n" + lines.map { $0.isEmpty ? $0 : pad + $0 }.joined(separator: "\n") }
    }
    return first ? pad + rv : rv
  }
}

// MARK: - Tests

extension JinjaBuiltins {
  /// `value is name(args)`.
  static func test(_ name: String, _ v: JinjaValue, _ args: [JinjaValue], _ ip: JinjaInterpreter) throws -> Bool {
    let other = args.first ?? .undefined("argument")
    switch name {
    case "defined": return !v.isUndefined
    case "undefined": return v.isUndefined
    case "none": return v == .none && !v.isUndefined
    case "boolean": if case .bool = v { return true }; return false
    case "true": return v == .bool(true) && { if case .bool = v { return true }; return false }()
    case "false": return v == .bool(false) && { if case .bool = v { return true }; return false }()
    case "string": return v.isStringLike
    case "mapping": if case .object = v { return true }; return false
    case "iterable":
      switch v { case .string, .array, .object, .undefined: return true; default: return false }
    case "sequence":
      switch v { case .string, .array, .object: return true; default: return false }
    case "number": return v.numeric != nil
    case "integer": if case .int = v { return true }; return false
    case "float": if case .double = v { return true }; return false
    case "callable": if case .function = v { return true }; return false
    case "sameas":
      switch (v, other) {
      case let (.namespace(x), .namespace(y)): return x === y
      case (.none, .none): return true
      case let (.bool(x), .bool(y)): return x == y
      case let (.int(x), .int(y)): return x == y
      default: return false
      }
    case "equalto", "eq", "==": return v == other
    case "ne", "!=": return v != other
    case "lt", "lessthan", "<": return try compare("<", v, other, ip)
    case "le", "<=": return try compare("<=", v, other, ip)
    case "gt", "greaterthan", ">": return try compare(">", v, other, ip)
    case "ge", ">=": return try compare(">=", v, other, ip)
    case "in": return try contains(other, v, ip)
    case "odd", "even", "divisibleby":
      guard let i = v.integer else { throw ip.fail("test '\(name)' needs an integer, got '\(v.typeName)'") }
      if name == "odd" { return i % 2 != 0 }
      if name == "even" { return i % 2 == 0 }
      guard let d = other.integer, d != 0 else { throw ip.fail("divisibleby needs a non-zero integer") }
      return i % d == 0
    case "lower": return v.pythonString == v.pythonString.lowercased()
    case "upper": return v.pythonString == v.pythonString.uppercased()
    default: throw ip.fail("no test named '\(name)'")
    }
  }
}
