import Foundation

/// A value inside the chat-template interpreter: Python's object model, reduced to what
/// Hugging Face chat templates use. Dicts keep insertion order, as Python's do, because
/// `tojson` output depends on it.
public enum JinjaValue: @unchecked Sendable {
  /// jinja2's default `Undefined`: falsy, renders as "", errors on attribute access.
  case undefined(String)
  /// Python `None`.
  case none
  /// Python `bool`.
  case bool(Bool)
  /// Python `int`.
  case int(Int)
  /// Python `float`.
  case double(Double)
  /// Python `str`; indexed by Unicode scalar like Python's code points.
  case string(String)
  /// Python `list` (tuples are lists here).
  case array([JinjaValue])
  /// Python `dict` with string keys, in insertion order.
  case object(JinjaObject)
  /// jinja2 `namespace()`: the one mutable object a template can write to.
  case namespace(JinjaNamespace)
  /// A callable: global function, macro, or bound method.
  case function(JinjaFunction)

  /// Converts Swift/Foundation values (`String`, `Int`, `Double`, `Bool`, arrays,
  /// dictionaries, `NSNull`, `nil`, `JinjaValue`). `[String: Any]` has no order, so its
  /// keys are sorted to keep output deterministic; pass a `JinjaValue` (e.g. from
  /// `JinjaValue(json:)`) where key order matters.
  public init(_ any: Any?) {
    guard let any else { self = .none; return }
    switch any {
    case let v as JinjaValue: self = v
    case let v as String: self = .string(v)
    case let v as Bool where type(of: any) == Bool.self: self = .bool(v)
    case let v as Int where type(of: any) == Int.self: self = .int(v)
    case let v as Double where type(of: any) == Double.self: self = .double(v)
    case let v as Float: self = .double(Double(v))
    case let v as NSNumber: self = JinjaValue.fromNumber(v)
    case let v as [Any?]: self = .array(v.map(JinjaValue.init))
    case let v as [String: Any?]:
      self = .object(JinjaObject(v.keys.sorted().map { ($0, JinjaValue(v[$0] ?? nil)) }))
    case is NSNull: self = .none
    case let v as Int64: self = .int(Int(v))
    case let v as Int32: self = .int(Int(v))
    default: self = .string("\(any)")
    }
  }

  private static func fromNumber(_ n: NSNumber) -> JinjaValue {
    let type = String(cString: n.objCType)
    if type == "c" || type == "B" { return .bool(n.boolValue) }
    if type == "d" || type == "f" { return .double(n.doubleValue) }
    return .int(n.intValue)
  }

  /// Python truthiness.
  public var isTruthy: Bool {
    switch self {
    case .undefined, .none: return false
    case let .bool(b): return b
    case let .int(i): return i != 0
    case let .double(d): return d != 0
    case let .string(s): return !s.isEmpty
    case let .array(a): return !a.isEmpty
    case let .object(o): return !o.keys.isEmpty
    case .namespace, .function: return true
    }
  }

  /// Whether this is jinja2's `Undefined`.
  public var isUndefined: Bool { if case .undefined = self { return true }; return false }

  /// Python `str(value)` (jinja2 renders `{{ value }}` this way; Undefined renders as "").
  public var pythonString: String {
    switch self {
    case .undefined: return ""
    case let .string(s): return s
    default: return pythonRepr
    }
  }

  /// Python `repr(value)`.
  public var pythonRepr: String {
    switch self {
    case .undefined: return ""
    case .none: return "None"
    case let .bool(b): return b ? "True" : "False"
    case let .int(i): return String(i)
    case let .double(d): return JinjaValue.pythonFloat(d)
    case let .string(s): return JinjaValue.pythonQuote(s)
    case let .array(a): return "[" + a.map(\.pythonRepr).joined(separator: ", ") + "]"
    case let .object(o):
      return "{" + o.keys.map { JinjaValue.pythonQuote($0) + ": " + (o[$0]?.pythonRepr ?? "") }
        .joined(separator: ", ") + "}"
    case let .namespace(n):
      return "<Namespace " + JinjaValue.object(JinjaObject(n.values)).pythonRepr + ">"
    case let .function(f): return "<function \(f.name)>"
    }
  }

  /// Python's `float.__repr__`: shortest round-trip digits, `1.0` not `1`, and plain
  /// notation below 1e16.
  static func pythonFloat(_ d: Double) -> String {
    if d.isNaN { return "nan" }
    if d.isInfinite { return d < 0 ? "-inf" : "inf" }
    if d == d.rounded(), abs(d) < 1e16 { return String(format: "%.1f", d) }
    var s = "\(d)"
    // Swift writes 1e-05 like Python; make sure an exponent always has a sign and 2 digits.
    if let e = s.firstIndex(of: "e") {
      let mantissa = s[..<e]
      var exponent = String(s[s.index(after: e)...])
      var sign = "+"
      if exponent.hasPrefix("-") { sign = "-"; exponent.removeFirst() } else if exponent.hasPrefix("+") { exponent.removeFirst() }
      if exponent.count < 2 { exponent = "0" + exponent }
      s = mantissa + "e" + sign + exponent
    }
    return s
  }

  /// Python `repr(str)`: single quotes unless the text has ' and no ".
  static func pythonQuote(_ s: String) -> String {
    let quote: Character = s.contains("'") && !s.contains("\"") ? "\"" : "'"
    var out = String(quote)
    for u in s.unicodeScalars {
      switch u {
      case "\\": out += "\\\\"
      case "\n": out += "\\n"
      case "\r": out += "\\r"
      case "\t": out += "\\t"
      default:
        if Character(u) == quote { out += "\\" + String(quote) }
        else if u.value < 0x20 || u.value == 0x7f { out += String(format: "\\x%02x", u.value) }
        else { out.unicodeScalars.append(u) }
      }
    }
    return out + String(quote)
  }

  /// jinja2's type name for error messages ("str", "dict", …).
  var typeName: String {
    switch self {
    case .undefined: return "Undefined"
    case .none: return "NoneType"
    case .bool: return "bool"
    case .int: return "int"
    case .double: return "float"
    case .string: return "str"
    case .array: return "list"
    case .object: return "dict"
    case .namespace: return "Namespace"
    case .function: return "function"
    }
  }
}

// MARK: - Equality (Python ==)

extension JinjaValue: Equatable {
  /// Python `==`: numbers compare across int/float/bool, containers deeply, dicts
  /// regardless of key order, Undefined equals only Undefined.
  public static func == (a: JinjaValue, b: JinjaValue) -> Bool {
    switch (a, b) {
    case (.undefined, .undefined), (.none, .none): return true
    case let (.string(x), .string(y)): return x.unicodeScalars.elementsEqual(y.unicodeScalars)
    case let (.array(x), .array(y)): return x == y
    case let (.object(x), .object(y)):
      return x.keys.count == y.keys.count && x.keys.allSatisfy { k in y[k].map { $0 == x[k] } ?? false }
    case let (.namespace(x), .namespace(y)): return x === y
    case let (.function(x), .function(y)): return x === y
    default:
      if let x = a.numeric, let y = b.numeric { return x == y }
      return false
    }
  }

  /// The value as a Double when it is a Python number (bool included).
  var numeric: Double? {
    switch self {
    case let .int(i): return Double(i)
    case let .double(d): return d
    case let .bool(b): return b ? 1 : 0
    default: return nil
    }
  }

  /// The value as an Int when it is a Python int or bool.
  var integer: Int? {
    switch self {
    case let .int(i): return i
    case let .bool(b): return b ? 1 : 0
    default: return nil
    }
  }
}

// MARK: - Containers

/// An insertion-ordered string-keyed dictionary (Python `dict`).
public struct JinjaObject: Sendable {
  /// Keys in insertion order.
  public private(set) var keys: [String] = []
  private var storage: [String: JinjaValue] = [:]

  /// Builds from ordered pairs; a repeated key keeps its first position and last value.
  public init(_ pairs: [(String, JinjaValue)] = []) {
    for (k, v) in pairs { self[k] = v }
  }

  /// Reads or writes a key; writing a new key appends it.
  public subscript(key: String) -> JinjaValue? {
    get { storage[key] }
    set {
      if storage[key] == nil, newValue != nil { keys.append(key) }
      if newValue == nil { keys.removeAll { $0 == key } }
      storage[key] = newValue
    }
  }

  /// Key/value pairs in order.
  public var pairs: [(String, JinjaValue)] { keys.map { ($0, storage[$0] ?? .none) } }
}

/// The object `namespace(...)` returns; `{% set ns.x = … %}` writes through it from any scope.
public final class JinjaNamespace: @unchecked Sendable {
  /// Attributes in insertion order.
  var values: [(String, JinjaValue)]
  init(_ values: [(String, JinjaValue)]) { self.values = values }
  subscript(name: String) -> JinjaValue? {
    get { values.first { $0.0 == name }?.1 }
    set {
      if let i = values.firstIndex(where: { $0.0 == name }) { values[i].1 = newValue ?? .none }
      else { values.append((name, newValue ?? .none)) }
    }
  }
}

/// A callable value: positional arguments plus keyword arguments in call order.
public final class JinjaFunction: @unchecked Sendable {
  /// Name for error messages.
  let name: String
  let body: ([JinjaValue], [(String, JinjaValue)]) throws -> JinjaValue
  init(_ name: String, _ body: @escaping ([JinjaValue], [(String, JinjaValue)]) throws -> JinjaValue) {
    self.name = name; self.body = body
  }
}
