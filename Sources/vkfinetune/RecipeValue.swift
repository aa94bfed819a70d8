import Foundation

/// One setting as written in a recipe file or given by a flag, before it is typed.
indirect enum RecipeValue: Equatable {
  /// A scalar's text (numbers stay text until the key's type is known: YAML 1.1 reads `2e-4` as a string).
  case scalar(String)
  /// A YAML sequence.
  case list([RecipeValue])
  /// A YAML mapping, in file order.
  case map([(String, RecipeValue)])
  /// `~`, `null` or an empty value: the key keeps its default.
  case null

  static func == (a: RecipeValue, b: RecipeValue) -> Bool {
    switch (a, b) {
    case let (.scalar(x), .scalar(y)): return x == y
    case let (.list(x), .list(y)): return x == y
    case let (.map(x), .map(y)): return x.map(\.0) == y.map(\.0) && x.map(\.1) == y.map(\.1)
    case (.null, .null): return true
    default: return false
    }
  }
}

/// A setting with the key as written and where it came from, for error messages.
struct RecipeEntry {
  /// The key as the user wrote it (an alias or the canonical name).
  var key: String
  var value: RecipeValue
  /// `recipe.yaml:12` or `--lora-r`.
  var origin: String

  private func fail(_ expected: String) -> RecipeError {
    RecipeError("\(origin): \(key) must be \(expected), got \(value.shortText)")
  }

  /// The scalar text, or an error naming the key.
  func text() throws -> String {
    guard case let .scalar(s) = value else { throw fail("a single value") }
    return s
  }

  func int() throws -> Int {
    let s = try text().replacingOccurrences(of: "_", with: "")
    if let v = Int(s) { return v }
    // `1e3` or `10.0` as an integer count.
    if let d = Double(s), d.isFinite, d == d.rounded(), abs(d) < 1e15 { return Int(d) }
    throw fail("an integer")
  }

  func double() throws -> Double {
    let s = try text().replacingOccurrences(of: "_", with: "")
    guard let v = Double(s), v.isFinite else { throw fail("a number") }
    return v
  }

  func bool() throws -> Bool {
    switch try text().lowercased() {
    case "true", "yes", "on", "1": return true
    case "false", "no", "off", "0": return false
    default: throw fail("true or false")
    }
  }

  /// A list of names: a YAML list, a comma-separated string, or one name.
  func names() throws -> [String] {
    switch value {
    case let .scalar(s):
      return s.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
    case let .list(items):
      return try items.map { item in
        guard case let .scalar(s) = item else { throw fail("a list of names") }
        return s.trimmingCharacters(in: .whitespaces)
      }
    default:
      throw fail("a list of names")
    }
  }

  /// One of `choices` (case-insensitive), as spelled in `choices`.
  func choice(_ choices: [String]) throws -> String {
    let s = try text()
    guard let hit = choices.first(where: { $0.lowercased() == s.lowercased() }) else {
      throw RecipeError("\(origin): \(key) must be one of \(choices.joined(separator: ", ")), got \(value.shortText)")
    }
    return hit
  }

  /// A byte count: an integer, or a number with a unit (B, KB, MB, GB, KiB, MiB, GiB, TiB).
  func bytes() throws -> Int {
    let s = try text().trimmingCharacters(in: .whitespaces)
    guard let n = ByteCount.parse(s) else { throw fail("a size such as 6GiB, 512MiB or a byte count") }
    return n
  }
}

extension RecipeValue {
  /// A short quoted rendering for messages.
  var shortText: String {
    switch self {
    case let .scalar(s): return "\"\(s.count > 40 ? String(s.prefix(40)) + "…" : s)\""
    case .list: return "a list"
    case .map: return "a mapping"
    case .null: return "null"
    }
  }

  /// The value as a JSON-compatible object; scalars become numbers or booleans when they read as one.
  var jsonObject: Any {
    switch self {
    case let .scalar(s):
      if let i = Int(s) { return i }
      if let d = Double(s), d.isFinite { return d }
      switch s.lowercased() {
      case "true": return true
      case "false": return false
      default: return s
      }
    case let .list(items): return items.map(\.jsonObject)
    case let .map(pairs): return Dictionary(pairs.map { ($0.0, $0.1.jsonObject) }, uniquingKeysWith: { _, b in b })
    case .null: return NSNull()
    }
  }
}

/// Human byte sizes: "6GiB", "6 GB", "512MiB", "1048576".
enum ByteCount {
  private static let units: [(String, Double)] = [
    ("tib", 1_099_511_627_776), ("gib", 1_073_741_824), ("mib", 1_048_576), ("kib", 1024),
    ("tb", 1e12), ("gb", 1e9), ("mb", 1e6), ("kb", 1e3), ("t", 1_099_511_627_776), ("g", 1_073_741_824),
    ("m", 1_048_576), ("k", 1024), ("b", 1),
  ]

  /// The byte count `text` names, or nil; must be positive.
  static func parse(_ text: String) -> Int? {
    let lower = text.lowercased().replacingOccurrences(of: " ", with: "")
    var number = lower, factor = 1.0
    for (unit, f) in units where lower.hasSuffix(unit) {
      number = String(lower.dropLast(unit.count)); factor = f
      break
    }
    guard let v = Double(number), v.isFinite, v > 0, v * factor < 9e18 else { return nil }
    return Int(v * factor)
  }
}
