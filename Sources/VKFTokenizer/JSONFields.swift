// Typed accessors over JSONSerialization output, with errors that name the field.
import Foundation

/// A JSON object from tokenizer.json with typed, error-reporting accessors.
struct JSONObject {
  /// The raw dictionary.
  let raw: [String: Any]
  /// Dotted path of this object inside the file, for error messages (`"model"`, `"normalizer"`).
  let path: String

  /// The value of `key`, or nil when absent or JSON null.
  func value(_ key: String) -> Any? {
    guard let v = raw[key], !(v is NSNull) else { return nil }
    return v
  }

  /// The component's `type` string.
  func type() throws -> String { try string("type") }

  /// A required string field.
  func string(_ key: String) throws -> String {
    guard let s = value(key) as? String else { throw missing(key, "a string") }
    return s
  }

  /// An optional string field (absent or null → nil).
  func optionalString(_ key: String) throws -> String? {
    guard let v = value(key) else { return nil }
    guard let s = v as? String else { throw missing(key, "a string") }
    return s
  }

  /// A boolean field with a default when absent.
  func bool(_ key: String, default fallback: Bool) throws -> Bool {
    guard let v = value(key) else { return fallback }
    if let b = v as? Bool { return b }
    if let n = v as? NSNumber { return n.boolValue }
    throw missing(key, "a boolean")
  }

  /// An integer field with a default when absent.
  func int(_ key: String, default fallback: Int) throws -> Int {
    guard let v = value(key) else { return fallback }
    guard let n = v as? NSNumber else { throw missing(key, "an integer") }
    return n.intValue
  }

  /// A required nested object.
  func object(_ key: String) throws -> JSONObject {
    guard let o = try optionalObject(key) else { throw missing(key, "an object") }
    return o
  }

  /// An optional nested object (absent or null → nil).
  func optionalObject(_ key: String) throws -> JSONObject? {
    guard let v = value(key) else { return nil }
    guard let d = v as? [String: Any] else { throw missing(key, "an object") }
    return JSONObject(raw: d, path: path.isEmpty ? key : "\(path).\(key)")
  }

  /// A required array of objects.
  func objects(_ key: String) throws -> [JSONObject] {
    guard let a = value(key) as? [Any] else { throw missing(key, "an array") }
    return try a.enumerated().map { i, v in
      guard let d = v as? [String: Any] else { throw missing("\(key)[\(i)]", "an object") }
      return JSONObject(raw: d, path: "\(path).\(key)[\(i)]")
    }
  }

  /// The error for a field of the wrong type.
  func missing(_ key: String, _ expected: String) -> TokenizerError {
    .malformed(field: path.isEmpty ? key : "\(path).\(key)", reason: "expected \(expected)")
  }
}

/// A `{"String": "…"}` or `{"Regex": "…"}` pattern, as Split and Replace store it.
enum PatternSpec {
  case string(String)
  case regex(String)

  /// Reads the pattern stored under `key`.
  init(_ obj: JSONObject, key: String) throws {
    let p = try obj.object(key)
    if let s = try p.optionalString("String") {
      self = .string(s)
    } else if let r = try p.optionalString("Regex") {
      self = .regex(r)
    } else {
      throw p.missing("String|Regex", "a pattern")
    }
  }

  /// Compiles the pattern; a string pattern matches literally.
  func compile() throws -> TokenRegex {
    switch self {
    case .string(let s): return try TokenRegex(NSRegularExpression.escapedPattern(for: s))
    case .regex(let r): return try TokenRegex(r)
    }
  }
}
