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
    if op == "~" {
      let joined = a.pythonString + b.pythonString
      try ip.checkSize(joined)
      return .string(joined)
    }
    if case let .undefined(n) = a { throw ip.fail("'\(n)' is undefined (used with '\(op)')") }
    if case let .undefined(n) = b { throw ip.fail("'\(n)' is undefined (used with '\(op)')") }
    switch (op, a, b) {
    case let ("+", .string(x), .string(y)):
      try ip.checkSize(x + y)
      return .string(x + y)
    case let ("+", .array(x), .array(y)):
      guard x.count + y.count <= JinjaLimits.steps else { throw ip.fail("a list past \(JinjaLimits.steps) items") }
      return .array(x + y)
    case let ("*", .string(x), _) where b.integer != nil:
      let n = max(b.integer ?? 0, 0)
      // '' * 10**8 is '' at once (repeating it 10⁸ times took over a second: the fuzzer).
      if x.isEmpty { return .string("") }
      guard n <= JinjaLimits.repeatBytes / x.utf8.count else {
        throw ip.fail("'\(x.prefix(20))' * \(n) would pass \(JinjaLimits.repeatBytes >> 20) MiB")
      }
      return .string(String(repeating: x, count: n))
    case let ("*", .array(x), _) where b.integer != nil:
      let n = max(b.integer ?? 0, 0)
      if x.isEmpty { return .array([]) }
      guard n <= JinjaLimits.steps / x.count else {
        throw ip.fail("a list of \(x.count) * \(n) would pass \(JinjaLimits.steps) items")
      }
      return .array(Array(repeating: x, count: n).flatMap { $0 })
    default: break
    }
    if let x = a.integer, let y = b.integer {
      // Python's ints are unbounded; past 64 bits the template is refused (never a trap).
      func checked(_ r: (partialValue: Int, overflow: Bool)) throws -> JinjaValue {
        guard !r.overflow else { throw ip.fail("integer overflow in \(x) \(op) \(y)") }
        return .int(r.partialValue)
      }
      switch op {
      case "+": return try checked(x.addingReportingOverflow(y))
      case "-": return try checked(x.subtractingReportingOverflow(y))
      case "*": return try checked(x.multipliedReportingOverflow(by: y))
      case "/":
        guard y != 0 else { throw ip.fail("division by zero") }
        return .double(Double(x) / Double(y))
      case "//", "%":
        guard y != 0 else { throw ip.fail("integer division or modulo by zero") }
        guard !(x == .min && y == -1) else { throw ip.fail("integer overflow in \(x) \(op) \(y)") }
        // Python floors (toward −∞); Swift truncates toward zero.
        var q = x / y
        if (x % y != 0) && ((x < 0) != (y < 0)) { q -= 1 }
        return op == "//" ? .int(q) : .int(x - q * y)
      case "**":
        let p = pow(Double(x), Double(y))
        guard y >= 0 else { return .double(p) }
        guard let i = Int(exactly: p.rounded()), abs(p) < 9.0e15 else {
          throw ip.fail("integer overflow in \(x) ** \(y)")
        }
        return .int(i)
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
