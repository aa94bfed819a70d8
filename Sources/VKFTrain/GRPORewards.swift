// Reward functions for GRPO: the built-ins a recipe declares by type, and a reward model.
import Foundation

/// What a reward function sees of one completion.
public struct RewardInput: Sendable {
  /// The prompt's text as rendered for the model.
  public var prompt: String
  /// The completion's text (special tokens left out).
  public var completion: String
  /// The completion's kept tokens (the EOS counted).
  public var completionTokens: Int
  /// The prompt record's other fields as text (reference answers and the like).
  public var fields: [String: String]

  public init(prompt: String, completion: String, completionTokens: Int, fields: [String: String]) {
    self.prompt = prompt; self.completion = completion; self.completionTokens = completionTokens; self.fields = fields
  }
}

/// Why a reward function's configuration is refused, naming the recipe key.
public struct RewardConfigError: Error, CustomStringConvertible, Equatable {
  public var description: String
  public init(_ d: String) { description = d }
}

/// One reward function: a score per completion, or nil where it does not apply (TRL's None,
/// counted as NaN: left out of its mean, 0 in the weighted sum).
public protocol RewardFunction: Sendable {
  /// The metric name (`rewards/<name>/mean`).
  var name: String { get }
  /// The record fields it reads (checked against every record before training).
  var requiredFields: [String] { get }
  func reward(_ input: RewardInput) -> Double?
}

/// The built-in reward functions, declared in a recipe as
/// `reward_functions: [{type: numeric_match, column: answer}, {type: regex, pattern: …}]`.
public enum BuiltinRewards {
  /// Every `type` and the options it takes.
  public static let types: [String: [String]] = [
    "exact_match": ["column", "pattern", "ignore_case", "name"],
    "numeric_match": ["column", "pattern", "tolerance", "name"],
    "regex": ["pattern", "full_match", "name"],
    "think_format": ["name"],
    "length_penalty": ["max_length", "cache", "name"],
    "valid_json": ["require_object", "name"],
  ]

  /// The function of one `reward_functions` entry (`key`, e.g. "reward_functions[1]", names
  /// it in errors). `maxCompletionLength`: length_penalty's default `max_length`.
  public static func make(_ key: String, _ options: [String: String], maxCompletionLength: Int) throws -> RewardFunction {
    guard let type = options["type"] else {
      throw RewardConfigError("\(key).type: missing (one of \(types.keys.sorted().joined(separator: ", ")))")
    }
    guard let allowed = types[type] else {
      throw RewardConfigError("\(key).type: unknown reward function \"\(type)\" (known: \(types.keys.sorted().joined(separator: ", ")))")
    }
    for k in options.keys where k != "type" && !allowed.contains(k) {
      throw RewardConfigError("\(key).\(k): not an option of \(type) (it takes \(allowed.joined(separator: ", ")))")
    }
    func required(_ k: String) throws -> String {
      guard let v = options[k], !v.isEmpty else { throw RewardConfigError("\(key).\(k): \(type) needs it") }
      return v
    }
    func regex(_ k: String) throws -> NSRegularExpression? {
      guard let p = options[k] else { return nil }
      do { return try NSRegularExpression(pattern: p, options: [.dotMatchesLineSeparators]) } catch {
        throw RewardConfigError("\(key).\(k): invalid regular expression \(p.debugDescription)")
      }
    }
    func bool(_ k: String, _ d: Bool) throws -> Bool {
      guard let v = options[k] else { return d }
      switch v.lowercased() {
      case "true", "yes", "1": return true
      case "false", "no", "0": return false
      default: throw RewardConfigError("\(key).\(k): must be true or false, got \(v)")
      }
    }
    func number(_ k: String, _ d: Double) throws -> Double {
      guard let v = options[k] else { return d }
      guard let x = Double(v), x.isFinite, x >= 0 else { throw RewardConfigError("\(key).\(k): must be a number ≥ 0, got \(v)") }
      return x
    }
    let name = options["name"] ?? type
    switch type {
    case "exact_match":
      return ExactMatchReward(name: name, column: try required("column"), extract: try regex("pattern"),
                              ignoreCase: try bool("ignore_case", false))
    case "numeric_match":
      return NumericMatchReward(name: name, column: try required("column"), extract: try regex("pattern"),
                                tolerance: try number("tolerance", 1e-6))
    case "regex":
      return RegexReward(name: name, pattern: try regex("pattern") ?? { throw RewardConfigError("\(key).pattern: regex needs it") }(),
                         fullMatch: try bool("full_match", false))
    case "think_format":
      // TRL's think_format_reward: ^<think>(?!.*<think>)(.*?)</think>.*$ over the whole text.
      return RegexReward(name: name, pattern: try NSRegularExpression(pattern: "^<think>(?!.*<think>)(.*?)</think>.*$",
                                                                     options: [.dotMatchesLineSeparators]),
                         fullMatch: true)
    case "length_penalty":
      let maxLength = Int(try number("max_length", Double(maxCompletionLength)))
      let cache = Int(try number("cache", 0))
      guard maxLength >= 1, cache <= maxLength else {
        throw RewardConfigError("\(key): max_length \(maxLength) must be ≥ 1 and ≥ cache \(cache)")
      }
      return OverlongPenaltyReward(name: name, maxLength: maxLength, cache: cache)
    default:  // valid_json
      return ValidJSONReward(name: name, requireObject: try bool("require_object", false))
    }
  }

  /// The text `pattern` extracts: its first capture group (or whole match) at the first
  /// match; the whole trimmed text without a pattern; nil when the pattern does not match.
  static func extract(_ text: String, _ pattern: NSRegularExpression?) -> String? {
    guard let pattern else { return text.trimmingCharacters(in: .whitespacesAndNewlines) }
    let range = NSRange(text.startIndex..., in: text)
    guard let m = pattern.firstMatch(in: text, range: range) else { return nil }
    let r = m.numberOfRanges > 1 && m.range(at: 1).location != NSNotFound ? m.range(at: 1) : m.range
    return Range(r, in: text).map { String(text[$0]).trimmingCharacters(in: .whitespacesAndNewlines) }
  }
}

/// 1 when the extracted answer equals the record's `column` (trimmed), else 0.
struct ExactMatchReward: RewardFunction {
  let name: String, column: String
  let extract: NSRegularExpression?
  let ignoreCase: Bool
  var requiredFields: [String] { [column] }
  func reward(_ x: RewardInput) -> Double? {
    guard let want = x.fields[column]?.trimmingCharacters(in: .whitespacesAndNewlines) else { return nil }
    guard let got = BuiltinRewards.extract(x.completion, extract) else { return 0 }
    return (ignoreCase ? got.lowercased() == want.lowercased() : got == want) ? 1 : 0
  }
}

/// 1 when the number in the completion (the pattern's capture, else the last number in the
/// text) is within `tolerance` (absolute) of the record's `column`, else 0.
struct NumericMatchReward: RewardFunction {
  let name: String, column: String
  let extract: NSRegularExpression?
  let tolerance: Double
  var requiredFields: [String] { [column] }
  static let number = try! NSRegularExpression(pattern: "-?\\d[\\d,]*(?:\\.\\d+)?|-?\\.\\d+")

  static func lastNumber(_ s: String) -> Double? {
    let ms = number.matches(in: s, range: NSRange(s.startIndex..., in: s))
    guard let m = ms.last, let r = Range(m.range, in: s) else { return nil }
    return Double(s[r].replacingOccurrences(of: ",", with: ""))
  }

  func reward(_ x: RewardInput) -> Double? {
    guard let want = x.fields[column].flatMap({ Self.lastNumber($0) }) else { return nil }
    guard let text = BuiltinRewards.extract(x.completion, extract), let got = Self.lastNumber(text) else { return 0 }
    return abs(got - want) <= tolerance ? 1 : 0
  }
}

/// 1 when the pattern matches the completion (anywhere, or the whole text with full_match).
struct RegexReward: RewardFunction {
  let name: String
  let pattern: NSRegularExpression
  let fullMatch: Bool
  var requiredFields: [String] { [] }
  func reward(_ x: RewardInput) -> Double? {
    let range = NSRange(x.completion.startIndex..., in: x.completion)
    guard let m = pattern.firstMatch(in: x.completion, range: range) else { return 0 }
    return !fullMatch || m.range == range ? 1 : 0
  }
}

/// DAPO's soft overlong punishment (TRL `get_soft_overlong_punishment`): 0 up to
/// max_length − cache tokens, then falling linearly to −1 at max_length, −1 beyond.
struct OverlongPenaltyReward: RewardFunction {
  let name: String, maxLength: Int, cache: Int
  var requiredFields: [String] { [] }
  func reward(_ x: RewardInput) -> Double? {
    let n = x.completionTokens
    if n <= maxLength - cache { return 0 }
    if n <= maxLength { return Double(maxLength - cache - n) / Double(cache) }
    return -1
  }
}

/// 1 when the completion (or the body of its first ``` fence) parses as JSON, else 0.
struct ValidJSONReward: RewardFunction {
  let name: String
  let requireObject: Bool
  var requiredFields: [String] { [] }
  static let fence = try! NSRegularExpression(pattern: "```(?:json)?\\s*(.*?)```", options: [.dotMatchesLineSeparators])
  func reward(_ x: RewardInput) -> Double? {
    let body = BuiltinRewards.extract(x.completion, x.completion.contains("```") ? Self.fence : nil) ?? x.completion
    guard let object = try? JSONSerialization.jsonObject(with: Data(body.utf8), options: [.fragmentsAllowed]) else { return 0 }
    return !requireObject || object is [String: Any] ? 1 : 0
  }
}

/// A reward model's score of prompt + completion (`train --objective reward`'s output).
public struct ModelReward: RewardFunction {
  public let name: String
  public var requiredFields: [String] { [] }
  /// Scores prompt ids + completion ids rows; called once per batch by `GRPORewardSet`.
  public let score: @Sendable ([[Int]]) throws -> [Double]
  public init(name: String = "reward_model", score: @escaping @Sendable ([[Int]]) throws -> [Double]) {
    self.name = name; self.score = score
  }
  public func reward(_ x: RewardInput) -> Double? { nil }  // scored in batches instead
}

/// A GRPO run's reward functions and their weights (TRL `reward_weights`; default all 1).
public struct GRPORewardSet: Sendable {
  public let functions: [RewardFunction]
  public let weights: [Double]

  public init(functions: [RewardFunction], weights: [Double]? = nil) throws {
    guard !functions.isEmpty else {
      throw RewardConfigError("reward_functions: GRPO needs at least one reward function or a reward_model")
    }
    if let weights, weights.count != functions.count {
      throw RewardConfigError("reward_weights: \(weights.count) weights for \(functions.count) reward functions")
    }
    if let w = weights?.first(where: { !$0.isFinite }) { throw RewardConfigError("reward_weights: \(w) is not finite") }
    // Metric names must differ: a repeated name gets its position appended.
    var seen: [String: Int] = [:]
    self.functions = functions.enumerated().map { i, f in
      seen[f.name, default: 0] += 1
      return seen[f.name]! > 1 || functions.filter({ $0.name == f.name }).count > 1 ? Renamed(f, "\(f.name)_\(i)") : f
    }
    self.weights = weights ?? [Double](repeating: 1, count: functions.count)
  }

  public var names: [String] { functions.map(\.name) }

  /// Refuses records missing a field a function reads, naming the function's key and the record.
  public func check(records: [[String: String]], source: String) throws {
    for (k, f) in functions.enumerated() {
      for field in f.requiredFields {
        if let r = records.firstIndex(where: { $0[field] == nil }) {
          throw RewardConfigError("reward_functions[\(k)] (\(f.name)) reads the column \"\(field)\": "
            + "record \(r + 1) of \(source) has no such field")
        }
      }
    }
  }

  /// rewards (rows × functions; NaN where a function does not apply). `sequences`: each
  /// row's prompt + completion ids, for a reward model.
  public func score(_ inputs: [RewardInput], sequences: [[Int]]) throws -> [[Double]] {
    var out = [[Double]](repeating: [Double](repeating: .nan, count: functions.count), count: inputs.count)
    for (k, f) in functions.enumerated() {
      if let m = (f as? Renamed)?.base as? ModelReward ?? f as? ModelReward {
        let s = try m.score(sequences)
        for r in inputs.indices { out[r][k] = s[r] }
      } else {
        for (r, x) in inputs.enumerated() { out[r][k] = f.reward(x) ?? .nan }
      }
    }
    return out
  }
}

/// A reward function under another metric name.
struct Renamed: RewardFunction {
  let base: RewardFunction
  let name: String
  init(_ base: RewardFunction, _ name: String) { self.base = base; self.name = name }
  var requiredFields: [String] { base.requiredFields }
  func reward(_ input: RewardInput) -> Double? { base.reward(input) }
}
