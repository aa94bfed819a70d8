// The record shapes users bring, detected from keys and normalised to one type.
import Foundation

/// A record format; `auto` detects it from each record's keys.
public enum DatasetFormat: String, Codable, Sendable, CaseIterable {
  /// Detect per record (the default).
  case auto
  /// `{instruction, input, output[, system]}`.
  case alpaca
  /// `{prompt, response[, reasoning_content]}`.
  case promptResponse = "prompt_response"
  /// `{prompt, completion}`.
  case promptCompletion = "prompt_completion"
  /// OpenAI `{messages: [{role, content[, reasoning_content]}]}`.
  case messages
  /// ShareGPT `{conversations: [{from: human|gpt|system, value}]}`.
  case shareGPT = "sharegpt"
  /// Raw `{text}` for continued pre-training (every token trained).
  case text

  /// The format a record's keys indicate, or nil when none fits.
  public static func detect(keys: Set<String>) -> DatasetFormat? {
    if keys.contains("messages") { return .messages }
    if keys.contains("conversations") { return .shareGPT }
    if keys.contains("instruction") && keys.contains("output") { return .alpaca }
    if keys.contains("prompt") && keys.contains("response") { return .promptResponse }
    if keys.contains("prompt") && keys.contains("completion") { return .promptCompletion }
    if keys.contains("text") { return .text }
    return nil
  }
}

/// One turn of a conversation (roles: "user", "assistant", "tool", …; system lives apart).
public struct Turn: Sendable, Equatable {
  /// "user" or "assistant" (other roles pass through to the template).
  public var role: String
  /// The visible text.
  public var content: String
  /// Chain-of-thought text shown before the answer, if the data has it.
  public var reasoningContent: String?

  /// Makes a turn.
  public init(role: String, content: String, reasoningContent: String? = nil) {
    self.role = role
    self.content = content
    self.reasoningContent = reasoningContent
  }
}

/// A normalised chat example: an optional system prompt and the turns in order.
public struct Conversation: Sendable, Equatable {
  /// The system prompt, if the record had one.
  public var system: String?
  /// The turns, system excluded.
  public var turns: [Turn]

  /// Makes a conversation.
  public init(system: String? = nil, turns: [Turn]) {
    self.system = system
    self.turns = turns
  }
}

/// What every record format becomes: a conversation to template, or raw text.
public enum Example: Sendable, Equatable {
  /// A chat / instruction example (assistant turns are trained).
  case conversation(Conversation)
  /// Raw text (every token trained).
  case text(String)
}

// MARK: - Normalisation

extension DatasetFormat {
  /// Normalises `record` (index `index` of `file`) under `format` (`.auto` detects it).
  public static func normalise(_ record: DatasetRecord, format: DatasetFormat = .auto,
                               file: String = "", index: Int = 0) throws -> Example {
    let resolved = format == .auto ? detect(keys: Set(record.keys)) : format
    guard let resolved else {
      throw DatasetError.unknownShape(file: file, record: index, keys: Array(record.keys))
    }
    let fields = Fields(record: record, file: file, index: index)
    switch resolved {
    case .auto:
      throw DatasetError.unknownShape(file: file, record: index, keys: Array(record.keys))
    case .alpaca:
      let instruction = try fields.string("instruction")
      let input = try fields.optionalString("input") ?? ""
      let user = input.isEmpty ? instruction : instruction + "\n\n" + input
      return .conversation(Conversation(system: try fields.optionalString("system"), turns: [
        Turn(role: "user", content: user), Turn(role: "assistant", content: try fields.string("output")),
      ]))
    case .promptResponse:
      return .conversation(Conversation(system: try fields.optionalString("system"), turns: [
        Turn(role: "user", content: try fields.string("prompt")),
        Turn(role: "assistant", content: try fields.string("response"),
             reasoningContent: try fields.optionalString("reasoning_content")),
      ]))
    case .promptCompletion:
      return .conversation(Conversation(system: try fields.optionalString("system"), turns: [
        Turn(role: "user", content: try fields.string("prompt")),
        Turn(role: "assistant", content: try fields.string("completion")),
      ]))
    case .messages:
      return .conversation(try fields.turns("messages", roleKey: "role", contentKey: "content", roleMap: [:]))
    case .shareGPT:
      let roles = ["human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"]
      return .conversation(try fields.turns("conversations", roleKey: "from", contentKey: "value", roleMap: roles))
    case .text:
      return .text(try fields.string("text"))
    }
  }
}

/// Typed access to a record's fields with errors that name the record.
private struct Fields {
  let record: DatasetRecord
  let file: String
  let index: Int

  func fail(_ problem: String) -> DatasetError {
    DatasetError.invalidRecord(file: file, record: index, problem: problem)
  }

  func string(_ key: String) throws -> String {
    guard let value = record[key] else { throw fail("missing \"\(key)\" (keys: \(record.keys.sorted()))") }
    guard let s = value as? String else { throw fail("\"\(key)\" must be a string") }
    return s
  }

  func optionalString(_ key: String) throws -> String? {
    guard let value = record[key], !(value is NSNull) else { return nil }
    guard let s = value as? String else { throw fail("\"\(key)\" must be a string") }
    return s
  }

  /// Reads a message list; a leading system message becomes `Conversation.system`.
  func turns(_ key: String, roleKey: String, contentKey: String, roleMap: [String: String]) throws -> Conversation {
    guard let list = record[key] as? [Any] else { throw fail("\"\(key)\" must be a list of messages") }
    var system: String?
    var turns: [Turn] = []
    for (i, item) in list.enumerated() {
      guard let message = item as? [String: Any], let rawRole = message[roleKey] as? String else {
        throw fail("\(key)[\(i)] must be an object with a string \"\(roleKey)\"")
      }
      let role: String
      if roleMap.isEmpty {
        role = rawRole
      } else if let mapped = roleMap[rawRole] {
        role = mapped
      } else {
        throw fail("\(key)[\(i)] has \(roleKey) \"\(rawRole)\"; expected one of \(roleMap.keys.sorted())")
      }
      let content = message[contentKey] as? String ?? ""
      if role == "system" && turns.isEmpty && system == nil {
        system = content
        continue
      }
      turns.append(Turn(role: role, content: content, reasoningContent: message["reasoning_content"] as? String))
    }
    guard turns.contains(where: { $0.role == "assistant" }) else {
      throw fail("\"\(key)\" has no assistant turn, so there is nothing to train on")
    }
    return Conversation(system: system, turns: turns)
  }
}
