import Foundation

/// Built-in behaviour of the template language: operators, attribute and item access,
/// filters, tests, methods and globals. Semantics follow Python/jinja2 where chat
/// templates can observe them.
enum JinjaBuiltins {}

// MARK: - Access

extension JinjaBuiltins {
  /// `obj.name` — jinja2 `Environment.getattr`: a method first, then the item; a missing
  /// one is Undefined, and only reading from Undefined is an error.
  static func attribute(_ v: JinjaValue, _ name: String, _ ip: JinjaInterpreter) throws -> JinjaValue {
    switch v {
    case let .undefined(n):
      throw ip.fail("'\(n)' is undefined (cannot read attribute '\(name)')")
    case let .object(o):
      if let m = method(v, name, ip) { return m }
      return o[name] ?? .undefined(name)
    case let .namespace(ns): return ns[name] ?? .undefined(name)
    default: return method(v, name, ip) ?? .undefined(name)
    }
  }

  /// `obj[key]` — jinja2 `Environment.getitem`: the item first, then the attribute.
  static func item(_ v: JinjaValue, _ key: JinjaValue, _ ip: JinjaInterpreter) throws -> JinjaValue {
    switch (v, key) {
    case let (.undefined(n), _): throw ip.fail("'\(n)' is undefined (cannot subscript it)")
    case let (.object(o), .string(k)): return o[k] ?? method(v, k, ip) ?? .undefined(k)
    case let (.object(o), _): return o[key.pythonString] ?? .undefined(key.pythonString)
    case let (.array(a), _):
      guard let i = key.integer else { return .undefined("item") }
      let j = i < 0 ? a.count + i : i
      return a.indices.contains(j) ? a[j] : .undefined("item \(i)")
    case let (.string(s), _):
      guard let i = key.integer else { return method(v, key.pythonString, ip) ?? .undefined("item") }
      let u = Array(s.unicodeScalars)
      let j = i < 0 ? u.count + i : i
      return u.indices.contains(j) ? .string(String(u[j])) : .undefined("item \(i)")
    case let (.namespace(ns), .string(k)): return ns[k] ?? .undefined(k)
    default: return .undefined("item")
    }
  }

  /// `obj[start:stop:step]` with Python's clamping and negative indices.
  static func slice(_ v: JinjaValue, _ start: JinjaValue?, _ stop: JinjaValue?, _ step: JinjaValue?,
                    _ ip: JinjaInterpreter) throws -> JinjaValue {
    func bound(_ x: JinjaValue?) throws -> Int? {
      guard let x, !(x == .none) else { return nil }
      guard let i = x.integer else { throw ip.fail("slice indices must be integers or None") }
      return i
    }
    let st = try bound(step) ?? 1
    guard st != 0 else { throw ip.fail("slice step cannot be zero") }
    func pick<T>(_ a: [T]) throws -> [T] {
      let n = a.count
      func clamp(_ i: Int?, _ dflt: Int) -> Int {
        guard var i else { return dflt }
        if i < 0 { i += n }
        return st > 0 ? min(max(i, 0), n) : min(max(i, -1), n - 1)
      }
      let lo = clamp(try bound(start), st > 0 ? 0 : n - 1)
      let hi = clamp(try bound(stop), st > 0 ? n : -1)
      var r: [T] = []
      var i = lo
      while st > 0 ? i < hi : i > hi { r.append(a[i]); i += st }
      return r
    }
    switch v {
    case let .array(a): return .array(try pick(a))
    case let .string(s):
      var view = String.UnicodeScalarView(); view.append(contentsOf: try pick(Array(s.unicodeScalars)))
      return .string(String(view))
    case let .undefined(n): throw ip.fail("'\(n)' is undefined (cannot slice it)")
    default: throw ip.fail("'\(v.typeName)' object is not subscriptable")
    }
  }
}

// MARK: - Operators

extension JinjaBuiltins {
  /// Arithmetic and `~`, with Python's int/float rules.
  static func binary(_ op: String, _ a: JinjaValue, _ b: JinjaValue, _ ip: JinjaInterpreter) throws -> JinjaValue {
    if op == "~" { return .string(a.pythonString + b.pythonString) }
    if case let .undefined(n) = a { throw ip.fail("'\(n)' is undefined (used with '\(op)')") }
    if case let .undefined(n) = b { throw ip.fail("'\(n)' is undefined (used with '\(op)')") }
    switch (op, a, b) {
    case let ("+", .string(x), .string(y)): return .string(x + y)
    case let ("+", .array(x), .array(y)): return .array(x + y)
    case let ("*", .string(x), _) where b.integer != nil: return .string(String(repeating: x, count: max(b.integer ?? 0, 0)))
    case let ("*", .array(x), _) where b.integer != nil:
      return .array(Array(repeating: x, count: max(b.integer ?? 0, 0)).flatMap { $0 })
    default: break
    }
    if let x = a.integer, let y = b.integer {
      switch op {
      case "+": return .int(x + y)
      case "-": return .int(x - y)
      case "*": return .int(x * y)
      case "/":
        guard y != 0 else { throw ip.fail("division by zero") }
        return .double(Double(x) / Double(y))
      case "//", "%":
        guard y != 0 else { throw ip.fail("integer division or modulo by zero") }
        let q = Int((Double(x) / Double(y)).rounded(.down))
        return op == "//" ? .int(q) : .int(x - q * y)
      case "**": return y >= 0 ? .int(Int(pow(Double(x), Double(y)))) : .double(pow(Double(x), Double(y)))
      default: break
      }
    }
    if let x = a.numeric, let y = b.numeric {
      switch op {
      case "+": return .double(x + y)
      case "-": return .double(x - y)
      case "*": return .double(x * y)
      case "/":
        guard y != 0 else { throw ip.fail("float division by zero") }
        return .double(x / y)
      case "//": return .double((x / y).rounded(.down))
      case "%": return .double(x - (x / y).rounded(.down) * y)
      case "**": return .double(pow(x, y))
      default: break
      }
    }
    throw ip.fail("unsupported operand type(s) for \(op): '\(a.typeName)' and '\(b.typeName)'")
  }

  /// Comparisons and membership.
  static func compare(_ op: String, _ a: JinjaValue, _ b: JinjaValue, _ ip: JinjaInterpreter) throws -> Bool {
    switch op {
    case "==": return a == b
    case "!=": return a != b
    case "in": return try contains(b, a, ip)
    case "notin": return !(try contains(b, a, ip))
    default: break
    }
    let order: Int
    if let x = a.numeric, let y = b.numeric { order = x < y ? -1 : (x > y ? 1 : 0) }
    else if case let .string(x) = a, case let .string(y) = b {
      let xs = Array(x.unicodeScalars).map(\.value), ys = Array(y.unicodeScalars).map(\.value)
      order = xs.lexicographicallyPrecedes(ys) ? -1 : (xs == ys ? 0 : 1)
    } else {
      throw ip.fail("'\(op)' not supported between instances of '\(a.typeName)' and '\(b.typeName)'")
    }
    switch op {
    case "<": return order < 0
    case "<=": return order <= 0
    case ">": return order > 0
    default: return order >= 0
    }
  }

  /// Python `needle in haystack`.
  static func contains(_ haystack: JinjaValue, _ needle: JinjaValue, _ ip: JinjaInterpreter) throws -> Bool {
    switch haystack {
    case let .string(s):
      guard case let .string(n) = needle else {
        throw ip.fail("'in <string>' requires string as left operand, not \(needle.typeName)")
      }
      return n.isEmpty || s.contains(n)
    case let .array(a): return a.contains(needle)
    case let .object(o): return o[needle.pythonString] != nil && needle.isStringLike
    case .undefined: return false
    case let .namespace(ns): return ns[needle.pythonString] != nil
    default: throw ip.fail("argument of type '\(haystack.typeName)' is not iterable")
    }
  }
}

extension JinjaValue {
  var isStringLike: Bool { if case .string = self { return true }; return false }
  var stringValue: String? { if case let .string(s) = self { return s }; return nil }
}
